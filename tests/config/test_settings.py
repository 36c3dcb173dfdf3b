"""The practices file: validation with errors that name the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from ringback.config.practices_file import ConfigError, load_practices, parse_practices
from ringback.domain.phones import to_e164
from tests.conftest import REPO

EXAMPLE = yaml.safe_load((REPO / "examples" / "practices.yaml").read_text())


def test_example_file_is_valid_and_normalises_numbers():
    practices = load_practices(REPO / "examples" / "practices.yaml").practices
    maple = practices[0]
    assert maple.phone_numbers == ["+13125550100", "+13125550101"]
    assert maple.windows.first_response_hold == 45
    assert maple.windows.urgent_ack == 300  # default kept where the file is silent


@pytest.mark.parametrize(
    "mutate, path, reason",
    [
        (lambda d: d["practices"][0].update(time_zone="Mars/Olympus"), "practices.0.time_zone", "unknown time zone"),
        (lambda d: d["practices"][0].update(phone_numbers=["12"]), "practices.0.phone_numbers", "phone number"),
        (lambda d: d["practices"][1].pop("messaging_service_sid"), "practices.1", "sms_from"),
        (lambda d: d["practices"][0].update(booking_link="ftp://x"), "practices.0.booking_link", "pattern"),
        (
            lambda d: d["practices"][0]["windows"].update(first_response_hold=-1),
            "practices.0.windows.first_response_hold",
            "greater than or equal",
        ),
        (lambda d: d["practices"][0].update(colour="blue"), "practices.0.colour", "Extra inputs"),
        (lambda d: d["practices"][1].update(id="maple-family"), "practices", "duplicate practice id"),
        (lambda d: d["practices"][1].update(phone_numbers=["+13125550100"]), "practices", "already belongs"),
    ],
)
def test_bad_file_is_rejected_with_field_path(mutate, path, reason):
    data = copy.deepcopy(EXAMPLE)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_practices(data)
    assert path in str(err.value)
    assert reason in str(err.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("practices: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_practices(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_practices(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "raw, e164",
    [("(312) 555-0100", "+13125550100"), ("+44 20 7946 0958", "+442079460958"), ("1-312-555-0100", "+13125550100")],
)
def test_to_e164(raw, e164):
    assert to_e164(raw) == e164


@pytest.mark.parametrize("raw", ["", "hello", "12"])
def test_to_e164_rejects(raw):
    with pytest.raises(ValueError):
        to_e164(raw)
