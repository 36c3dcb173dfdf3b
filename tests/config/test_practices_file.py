"""The practices file's patient SMS texts, as `config apply` checks them (config/practices_file.py):
message names, placeholders per message, the default language, the FCC profile in every language."""

from __future__ import annotations

import copy

import pytest
import yaml

from ringback.config.practices_file import ConfigError, parse_practices
from ringback.domain.practice import Practice
from tests.conftest import REPO

EXAMPLE = yaml.safe_load((REPO / "examples" / "practices.yaml").read_text())


def with_first(**fields) -> dict:
    data = copy.deepcopy(EXAMPLE)
    data["practices"][0].update(fields)
    return data


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_practices(data)
    return str(err.value)


def test_the_example_file_is_valid_and_a_file_without_languages_keeps_its_meaning():
    parsed = parse_practices(copy.deepcopy(EXAMPLE)).practices
    assert {p.default_language for p in parsed} <= {"en", "es"}
    old_style = with_first(templates={"new_patient_first": "{practice_name}: book at {booking_link}. Reply STOP"})
    old_style["practices"][0].pop("templates_by_language", None)
    old_style["practices"][0].pop("default_language", None)
    p = parse_practices(old_style).practices[0]
    assert p.default_language == "en" and p.templates["new_patient_first"].startswith("{practice_name}: book")


def test_spanish_texts_and_a_spanish_default_are_accepted():
    data = with_first(
        default_language="es",
        templates={"urgent_ack": "{practice_name}: recibimos su llamada; le llamaremos pronto. Responda STOP"},
        templates_by_language={"en": {"urgent_ack": "{practice_name}: we got your call. Reply STOP to opt out."}},
    )
    p = parse_practices(data).practices[0]
    assert p.default_language == "es" and set(p.templates_by_language) == {"en"}


@pytest.mark.parametrize(
    "fields, path, says",
    [
        (
            {"templates": {"new_patient_frist": "{practice_name}"}},
            "practices.0.templates.new_patient_frist",
            "no such message",
        ),
        (
            {"templates_by_language": {"es": {"reminder": "{practice_name}"}}},
            "practices.0.templates_by_language.es.reminder",
            "no such message",
        ),
        (
            {"templates_by_language": {"es": {"new_patient_first": "{practice_name}: {urgent_minutes} min"}}},
            "practices.0.templates_by_language.es.new_patient_first",
            "placeholder {urgent_minutes} is not allowed here",
        ),
        (
            {"templates_by_language": {"es": {"urgent_ack": "Hola {patient_name}"}}},
            "practices.0.templates_by_language.es.urgent_ack",
            "placeholder {patient_name} is not allowed",
        ),
        ({"default_language": "fr"}, "practices.0.default_language", "no text in 'fr' for new_patient_second"),
        ({"default_language": "Spanish"}, "practices.0.default_language", "String should match pattern"),
        ({"templates_by_language": {"es-MX": {}}}, "practices.0.templates_by_language.es-MX", "should match pattern"),
        (
            {
                "templates": {"urgent_ack": "{practice_name}: ok. Reply STOP"},
                "templates_by_language": {"en": {"urgent_ack": "{practice_name}: fine. Reply STOP"}},
            },
            "practices.0.templates_by_language.en.urgent_ack",
            "also set in templates",
        ),
    ],
)
def test_a_bad_text_or_language_is_refused_with_its_field_path(fields, path, says):
    message = problems(with_first(**fields))
    line = next((ln for ln in message.splitlines() if ln.strip().startswith(path)), "")
    assert says in line, message


def test_a_language_of_its_own_needs_a_text_for_every_message_only_as_the_default():
    every = {n: "{practice_name}: texte. Répondez STOP" for n in ("new_patient_first", "new_patient_second")}
    every |= {"urgent_ack": "{practice_name}: {urgent_minutes} min. STOP", "reschedule_link": "{reschedule_link} STOP"}
    every |= {"optout_confirmation": "{practice_name}: START"}
    assert parse_practices(with_first(default_language="fr", templates=every)).practices[0].default_language == "fr"
    # As another language, one text is enough: the rest falls back to the default language
    assert parse_practices(with_first(templates_by_language={"fr": {"urgent_ack": every["urgent_ack"]}}))


FCC = {"sms_caps": {"fcc_healthcare_exemption": True}}


def test_the_fcc_profile_is_checked_for_the_shipped_texts_in_every_language_with_the_practices_values():
    assert parse_practices(with_first(**FCC))  # Maple's name and links fit every shipped text
    long_name = "Maple Family Practice and Women's Health Center of Chicago"  # 58 characters
    message = problems(with_first(name=long_name, **FCC))
    assert "practices.0.templates_by_language.es.new_patient_first: FCC profile: " in message
    assert "(the shipped 'es' text, with this practice's values); set a text that fits here" in message
    assert "practices.0.templates_by_language.en.reschedule_link: FCC profile: " in message
    assert "optout_confirmation" not in message  # the answer to an opt-out is not a profile message


def test_the_fcc_profile_is_checked_for_the_practices_own_texts():
    long = "{practice_name}: " + "x" * 150 + " Reply STOP"
    message = problems(with_first(templates={"urgent_ack": long}, **FCC))
    assert "practices.0.templates.urgent_ack: FCC profile: " in message and "shipped" not in message
    unnamed = problems(with_first(templates_by_language={"es": {"urgent_ack": "Le llamaremos. Responda STOP"}}, **FCC))
    assert "practices.0.templates_by_language.es.urgent_ack: FCC profile: the message does not name" in unnamed
    no_stop = problems(
        with_first(templates_by_language={"es": {"urgent_ack": "{practice_name}: le llamaremos."}}, **FCC)
    )
    assert "practices.0.templates_by_language.es.urgent_ack: FCC profile: the message has no opt-out" in no_stop


def test_a_stored_configuration_with_an_unknown_message_name_still_loads():
    # Config records published before these checks existed must keep loading in every process
    # (kafka/practice_directory.py validates the model only).
    entry = copy.deepcopy(EXAMPLE["practices"][0]) | {"templates": {"old_name": "{practice_name} STOP"}}
    assert Practice.model_validate(entry).templates == {"old_name": "{practice_name} STOP"}
