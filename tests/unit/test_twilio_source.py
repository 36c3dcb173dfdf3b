"""Twilio voice status callbacks → canonical call events (pure mapping + signatures)."""

from __future__ import annotations

import json

import pytest

from connectors.sources import twilio
from tests.conftest import REPO

VECTORS = json.loads((REPO.parent / "shared" / "vendor" / "twilio" /
                      "twilio_request_validator_test_vectors.json").read_text())


def base(**over: str) -> dict[str, str]:
    params = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "2" * 32, "From": "+14155550123",
              "To": "(312) 555-0100", "CallStatus": "no-answer", "Direction": "inbound",
              "Timestamp": "Tue, 24 Nov 2026 15:04:05 +0000"}
    params.update(over)
    return params


@pytest.mark.parametrize("status, duration, recording, outcome", [
    ("no-answer", None, False, "MISSED"), ("busy", None, False, "MISSED"),
    ("failed", None, False, "MISSED"), ("canceled", None, False, "MISSED"),
    ("completed", "42", True, "VOICEMAIL"), ("completed", "3", False, "MISSED"),
    ("completed", "120", False, "ANSWERED"), ("ringing", None, False, "OTHER"),
    ("in-progress", None, False, "OTHER"),
])
def test_outcome(status, duration, recording, outcome):
    over = {"CallStatus": status}
    if duration:
        over["CallDuration"] = duration
    if recording:
        over["RecordingSid"] = "RE" + "3" * 32
    assert twilio.voice_status_event(base(**over), "maple", 1)["outcome"] == outcome


def test_event_fields():
    event = twilio.voice_status_event(base(), "maple", 1_700_000_000_000)
    assert event["event_id"] == "twilio:CA" + "1" * 32 + ":no-answer"
    assert event["called"] == "+13125550100"
    assert event["caller"] == "+14155550123"
    assert event["occurred_at"] == 1_795_532_645_000
    assert event["direction"] == "INBOUND"


@pytest.mark.parametrize("over, msg", [
    ({"CallSid": ""}, "CallSid"), ({"From": "anonymous"}, "From"),
    ({"Timestamp": "yesterday"}, "RFC 2822"), ({"CallStatus": "completed", "CallDuration": "x"}, "CallDuration"),
])
def test_malformed(over, msg):
    with pytest.raises(twilio.PayloadError, match=msg):
        twilio.voice_status_event(base(**over), "maple", 1)


def test_signature_vectors():
    from multidict import MultiDict

    token = VECTORS["auth_token"]
    for case in VECTORS["cases"]:
        if "params" in case:
            params = case["params"]
        elif "params_multi" in case:
            params = MultiDict(case["params_multi"])
        else:
            params = case["raw_body"]  # JSON body signed through bodySHA256 in the URL
        sig = case["expected_signature"]
        assert twilio.signature_valid(token, case["url"], params, sig), case["name"]
        assert not twilio.signature_valid(token + "x", case["url"], params, sig), case["name"]
        assert not twilio.signature_valid(token, case["url"] + "&evil=1", params, sig), case["name"]
    assert len(VECTORS["cases"]) >= 6
    assert twilio.signature_valid(token, "https://x", {}, None) is False
