"""Patient SMS texts: the shipped ones per language, the placeholders each may use, and
the choice of the language a patient is written to in (docs/product.md, "Templates").

Pure: mappings in, text out. A practice's own texts (domain/practice.py: `templates`,
`templates_by_language`) come first; the shipped English and Spanish texts fill the
rest. A language with no text for a message falls back to the practice's default.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

import langcodes

NEW_PATIENT_FIRST = "new_patient_first"
NEW_PATIENT_SECOND = "new_patient_second"
URGENT_ACK = "urgent_ack"
RESCHEDULE_LINK = "reschedule_link"
OPTOUT_CONFIRMATION = "optout_confirmation"

# Every patient SMS may name only these: nothing clinical, nothing about the patient.
COMMON_PLACEHOLDERS = frozenset({"practice_name", "booking_link", "reschedule_link", "callback_number"})
# Per message: the common ones, and what only that message knows.
PLACEHOLDERS = {
    NEW_PATIENT_FIRST: COMMON_PLACEHOLDERS,
    NEW_PATIENT_SECOND: COMMON_PLACEHOLDERS,
    URGENT_ACK: COMMON_PLACEHOLDERS | {"urgent_minutes"},
    RESCHEDULE_LINK: COMMON_PLACEHOLDERS,
    OPTOUT_CONFIRMATION: COMMON_PLACEHOLDERS,
}
ANY_PLACEHOLDER = frozenset().union(*PLACEHOLDERS.values())
# The answer to the patient's own opt-out: the FCC profile (and "Reply STOP") does not apply to it.
PROFILE_EXEMPT = frozenset({OPTOUT_CONFIRMATION})

DEFAULT_LANGUAGE = "en"

SHIPPED: dict[str, dict[str, str]] = {
    "en": {
        NEW_PATIENT_FIRST: (
            "Hi, this is {practice_name}. Sorry we missed your call! "
            "Reply to book, or book here: {booking_link} Reply STOP to opt out."
        ),
        NEW_PATIENT_SECOND: (
            "{practice_name}: we'd still love to help you. Reply to this text or book here: "
            "{booking_link} Reply STOP to opt out."
        ),
        URGENT_ACK: (
            "{practice_name}: your call is flagged for our clinical team; a staff member will reach "
            "you within {urgent_minutes} minutes. Reply STOP to opt out."
        ),
        RESCHEDULE_LINK: (
            "{practice_name}: sorry we missed your call. To reschedule, use {reschedule_link} "
            "or reply here. Reply STOP to opt out."
        ),
        OPTOUT_CONFIRMATION: (
            "{practice_name}: you will not get more texts from us. Reply START to receive texts again."
        ),
    },
    # Formal "usted", as a practice writes to patients; STOP and START stay in English: they
    # are the keywords carriers act on. Worded within the GSM-7 alphabet (é, ñ, ü are in it;
    # á, í, ó, ú are not): one 160-character segment, not three of 67 in UCS-2.
    "es": {
        NEW_PATIENT_FIRST: (
            "{practice_name}: disculpe la llamada perdida. Responda o pida cita en {booking_link} "
            "Responda STOP para darse de baja."
        ),
        NEW_PATIENT_SECOND: (
            "{practice_name}: con gusto le ayudamos. Responda o pida cita en {booking_link} "
            "Responda STOP para darse de baja."
        ),
        URGENT_ACK: (
            "{practice_name}: nuestro equipo médico le va a llamar en menos de {urgent_minutes} minutos. "
            "Responda STOP para darse de baja."
        ),
        RESCHEDULE_LINK: (
            "{practice_name}: para cambiar su cita, use {reschedule_link} o conteste este mensaje. "
            "Responda STOP para darse de baja."
        ),
        OPTOUT_CONFIRMATION: (
            "{practice_name}: ya no le enviaremos mensajes. Responda START para volver a recibirlos."
        ),
    },
}
TEMPLATE_NAMES = frozenset(PLACEHOLDERS)

LANGUAGE_PATTERN = r"^[a-z]{2,3}$"  # how the practices file writes a language: a primary tag


def primary_tag(code: str | None) -> str | None:
    """A language code as an EHR writes it (ISO 639-1 "es", ISO 639-2 "spa"/"SPA", a BCP 47
    tag "es-MX", "en_US") as a lower-case primary tag ("es"); None for nothing, or what is not
    a language (a local code such as "E", "und")."""
    if not code or not code.strip():
        return None
    try:
        tag = langcodes.standardize_tag(code.strip())
    except (ValueError, LookupError):  # LanguageTagError is a ValueError
        return None
    if not langcodes.tag_is_valid(tag):
        return None
    language = langcodes.Language.get(tag).language
    return language.lower() if language and language not in ("und", "zxx", "mul", "mis") else None


def placeholders(text: str) -> list[str]:
    """The {placeholders} of a template, in order; ValueError when it is not a valid template
    or a placeholder carries a format spec, a conversion, an index or an attribute."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
    names = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name[:40]}}} may not carry a format spec or conversion")
        names.append(name)
    return names


def check_placeholders(text: str, allowed: frozenset[str]) -> str:
    """The template itself when it names only `allowed` placeholders, else ValueError saying which."""
    shown_allowed = ", ".join("{" + p + "}" for p in sorted(allowed))
    for name in placeholders(text):
        if name not in allowed:
            shown = "{" + name[:40] + "}" if name else "{}"
            raise ValueError(
                f"placeholder {shown} is not allowed here (only {shown_allowed}: "
                "a patient SMS carries no clinical or personal fields)"
            )
    return text


def texts_for(
    language: str,
    default_language: str,
    templates: Mapping[str, str],
    templates_by_language: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Every text a practice has in `language`: the shipped ones, overridden by the practice's
    own (`templates` are in its default language)."""
    texts = dict(SHIPPED.get(language, {}))
    texts.update(templates_by_language.get(language, {}))
    if language == default_language:
        texts.update(templates)
    return texts


def choose(
    template: str,
    language: str | None,
    default_language: str,
    templates: Mapping[str, str],
    templates_by_language: Mapping[str, Mapping[str, str]],
) -> tuple[str, str]:
    """(language, text) of one patient SMS: in the patient's language (`language`, any form
    `primary_tag` reads) when there is a text for it, else in the practice's default language,
    else (a practices file that `config apply` would refuse) the shipped English text."""
    wanted = primary_tag(language)
    for lang in (wanted, default_language):
        if lang:
            text = texts_for(lang, default_language, templates, templates_by_language).get(template)
            if text:
                return lang, text
    return DEFAULT_LANGUAGE, SHIPPED[DEFAULT_LANGUAGE][template]
