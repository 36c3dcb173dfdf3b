"""Patient SMS texts per language (domain/templates.py, recipes.render): the choice of the
language, the fallback to the practice default, and the shipped texts in every language."""

from __future__ import annotations

import string

import pytest

from ringback.domain import consent, recipes, templates
from ringback.domain.practice import Practice


def practice(**overrides) -> Practice:
    base = {
        "id": "maple-family",
        "name": "Maple Family Practice",
        "time_zone": "America/Chicago",
        "phone_numbers": ["+13125550100"],
        "sms_from": "+13125550100",
        "booking_link": "https://book.example.org/maple",
        "reschedule_link": "https://book.example.org/maple/reschedule",
    }
    return Practice.model_validate({**base, **overrides})


@pytest.mark.parametrize(
    "code, tag",
    [
        ("es", "es"),
        ("es-MX", "es"),
        ("spa", "es"),  # ISO 639-2, as some EHRs write Patient.communication
        ("SPA", "es"),
        ("en-US", "en"),
        ("EN_us", "en"),
        (" es ", "es"),
        ("zh-Hant-TW", "zh"),
        ("", None),
        (None, None),
        ("Spanish (Mexico)", None),
        ("e", None),
        ("12", None),
    ],
)
def test_a_language_code_is_read_as_its_lower_case_primary_tag(code, tag):
    assert templates.primary_tag(code) == tag


def test_the_patients_language_chooses_the_text_and_none_gives_the_practice_default():
    p = practice()
    assert recipes.choose_text(p, "urgent_ack", "es-MX") == ("es", templates.SHIPPED["es"]["urgent_ack"])
    assert recipes.choose_text(p, "urgent_ack", None) == ("en", templates.SHIPPED["en"]["urgent_ack"])
    body = recipes.render(p, "reschedule_link", "es")
    assert body.startswith("Maple Family Practice: para cambiar su cita")
    assert "https://book.example.org/maple/reschedule" in body


def test_a_language_without_a_text_falls_back_to_the_practice_default():
    assert recipes.choose_text(practice(), "urgent_ack", "fr")[0] == "en"
    spanish_practice = practice(default_language="es")
    assert recipes.choose_text(spanish_practice, "urgent_ack", "fr")[0] == "es"
    assert recipes.choose_text(spanish_practice, "urgent_ack", None)[0] == "es"
    assert recipes.choose_text(spanish_practice, "urgent_ack", "en")[0] == "en"


def test_practice_texts_come_first_and_fill_in_a_language_message_by_message():
    p = practice(
        templates={"urgent_ack": "{practice_name}: we got your call. Reply STOP to opt out."},
        templates_by_language={"fr": {"urgent_ack": "{practice_name} : appel reçu. Répondez STOP pour arrêter."}},
    )
    assert recipes.render(p, "urgent_ack", "en") == "Maple Family Practice: we got your call. Reply STOP to opt out."
    assert recipes.render(p, "urgent_ack", None).startswith("Maple Family Practice: we got your call")
    assert recipes.render(p, "urgent_ack", "fr").startswith("Maple Family Practice : appel reçu")
    # French has no reschedule text: the default language's (shipped English) one goes
    assert recipes.choose_text(p, "reschedule_link", "fr") == ("en", templates.SHIPPED["en"]["reschedule_link"])
    # The English override is the default language's: a Spanish patient still gets the Spanish text
    assert recipes.choose_text(p, "urgent_ack", "es")[0] == "es"


def test_the_sms_action_says_which_language_its_body_is_in():
    p = practice()
    case = {"case_id": "maple-family:c1", "practice_id": p.id, "scenario": "URGENT_EXISTING", "caller": "+14155550188"}
    case |= {"missed_at": 1, "call_reported_at": 2}
    action = recipes.sms(p, case, recipes.ACK_SMS, "urgent_ack", "ack", 10, 10, language="es-US")
    assert action["params"]["language"] == "es" and action["body"] == recipes.render(p, "urgent_ack", "es")
    fallback = recipes.sms(p, case, recipes.ACK_SMS, "urgent_ack", "ack", 10, 10, language="de")
    assert fallback["params"]["language"] == "en" and "Reply STOP" in fallback["body"]


# ------------------------------------------------------------------ the shipped texts
def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_language_ships_every_message_with_the_placeholders_english_has():
    for lang, texts in templates.SHIPPED.items():
        assert set(texts) == templates.TEMPLATE_NAMES, lang
        for name, text in texts.items():
            assert _fields(text) == _fields(templates.SHIPPED["en"][name]), (lang, name)
            templates.check_placeholders(text, templates.PLACEHOLDERS[name])


# The room the shipped texts leave in the 160 characters: a practice name of up to 42
# characters, and the name and a link together up to 67 (docs/product.md, "Patient SMS texts").
LONG_NAME = "Riverside Family & Women's Health"  # 33
LONG_LINKS = {
    "booking_link": "https://book.example-health.org/rf",  # 34: with the name, 67
    "reschedule_link": "https://book.example-health.org/rf",
}


@pytest.mark.parametrize("lang", sorted(templates.SHIPPED))
def test_shipped_texts_keep_the_fcc_healthcare_profile_in_every_language(lang):
    p = practice(name=LONG_NAME, windows={"urgent_window": 7200}, **LONG_LINKS)
    longest_name = practice(name="Riverside Family Medicine & Women's Clinic", windows={"urgent_window": 7200})
    for name in sorted(templates.TEMPLATE_NAMES - templates.PROFILE_EXEMPT):
        body = recipes.render(p, name, lang)
        assert "{" not in body
        assert consent.fcc_profile_violation(body, p.name) is None, (lang, name, len(body))
        urgent = recipes.render(longest_name, "urgent_ack", lang)  # 42 characters of name, 120 minutes
        assert consent.fcc_profile_violation(urgent, longest_name.name) is None, (lang, len(urgent))
    confirmation = recipes.render(p, "optout_confirmation", lang)
    assert len(confirmation) <= consent.FCC_HEALTHCARE_EXEMPTION["max_chars"]
    assert "START" in confirmation


# The GSM 03.38 default alphabet (3GPP TS 23.038), without its extension table.
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)


@pytest.mark.parametrize("lang", sorted(templates.SHIPPED))
def test_shipped_texts_are_gsm7_so_each_is_one_segment(lang):
    # One character outside GSM-7 (a Spanish á, í, ó, ú) sends the whole text as UCS-2:
    # 70 characters a segment, so a 140-character text would be billed as three.
    p = practice()
    for name in templates.TEMPLATE_NAMES:
        body = recipes.render(p, name, lang)
        assert set(body) <= GSM7 and len(body) <= 160, (lang, name, set(body) - GSM7)


def test_the_spanish_texts_are_spanish_and_keep_the_carrier_keywords():
    es = templates.SHIPPED["es"]
    assert "equipo médico" in es["urgent_ack"] and "{urgent_minutes} minutos" in es["urgent_ack"]
    assert all("Responda STOP" in es[n] for n in templates.TEMPLATE_NAMES - templates.PROFILE_EXEMPT)
    assert "START" in es["optout_confirmation"]
