"""Twilio voice status callbacks → canonical call events (pure mapping + signatures)."""

from __future__ import annotations

import json

import pytest

from ringback.sources import twilio
from tests.conftest import REPO

VECTORS = json.loads((REPO / "tests" / "vendor" / "twilio" / "twilio_request_validator_test_vectors.json").read_text())


def base(**over: str) -> dict[str, str]:
    params = {
        "CallSid": "CA" + "1" * 32,
        "AccountSid": "AC" + "2" * 32,
        "From": "+14155550123",
        "To": "(312) 555-0100",
        "CallStatus": "no-answer",
        "Direction": "inbound",
        "Timestamp": "Tue, 24 Nov 2026 15:04:05 +0000",
    }
    params.update(over)
    return params


@pytest.mark.parametrize(
    "status, duration, recording, outcome",
    [
        ("no-answer", None, False, "MISSED"),
        ("busy", None, False, "MISSED"),
        ("failed", None, False, "MISSED"),
        ("canceled", None, False, "MISSED"),
        ("completed", "42", True, "VOICEMAIL"),
        ("completed", "3", False, "MISSED"),
        ("completed", "120", False, "ANSWERED"),
        ("ringing", None, False, "OTHER"),
        ("in-progress", None, False, "OTHER"),
    ],
)
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


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"CallSid": ""}, "CallSid"),
        ({"From": "anonymous"}, "From"),
        ({"Timestamp": "yesterday"}, "RFC 2822"),
        ({"CallStatus": "completed", "CallDuration": "x"}, "CallDuration"),
    ],
)
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


# ---------------------------------------------------------------- every CallStatus of Twilio's API spec
def _spec_enum(name: str) -> list[str]:
    spec = json.loads((REPO / "tests" / "vendor" / "twilio" / "twilio_api_v2010.json").read_text())
    return spec["components"]["schemas"][name]["enum"]


def test_every_call_status_of_the_spec_has_an_outcome():
    statuses = _spec_enum("call_enum_status")
    assert set(twilio.MISSED_STATUSES) <= set(statuses)
    outcomes = {
        s: twilio.voice_status_event(base(CallStatus=s, CallDuration="60"), "maple", 1)["outcome"] for s in statuses
    }
    assert outcomes == {
        "queued": "OTHER",
        "ringing": "OTHER",
        "in-progress": "OTHER",
        "completed": "ANSWERED",
        "busy": "MISSED",
        "failed": "MISSED",
        "no-answer": "MISSED",
        "canceled": "MISSED",
    }


def test_outbound_call_puts_the_patient_in_caller_and_the_practice_in_called():
    params = base(
        Direction="outbound-api", From="+13125550100", To="+14155550123", CallStatus="completed", CallDuration="95"
    )
    assert twilio.practice_number(params) == "+13125550100"
    event = twilio.voice_status_event(params, "maple", 1)
    assert (event["direction"], event["caller"], event["called"], event["outcome"]) == (
        "OUTBOUND",
        "+14155550123",
        "+13125550100",
        "ANSWERED",
    )
    assert twilio.practice_number(base()) == "+13125550100"  # inbound: the To


def test_redelivery_gives_the_same_event_id_and_record():
    assert twilio.voice_status_event(base(), "maple", 5) == twilio.voice_status_event(base(), "maple", 5)
    assert (
        twilio.voice_status_event(base(), "maple", 5)["event_id"]
        == twilio.voice_status_event(base(), "maple", 9)["event_id"]
    )


# ---------------------------------------------------------------- transcription callback
def transcription(**over: str) -> dict[str, str]:
    params = base(
        CallStatus="completed",
        TranscriptionSid="TR" + "4" * 32,
        TranscriptionStatus="completed",
        TranscriptionText="Hi, it's about my appointment tomorrow.",
        RecordingSid="RE" + "3" * 32,
        RecordingUrl="https://api.twilio.com/2010-04-01/Recordings/RE1",
    )
    params.pop("Timestamp")
    params.update(over)
    return params


def test_transcription_event():
    event = twilio.transcription_event(transcription(), "maple", 1_700_000_000_000)
    assert event["event_id"] == "twilio:CA" + "1" * 32 + ":transcription"
    assert event["event_type"] == "TRANSCRIPTION" and event["outcome"] == "VOICEMAIL"
    assert event["transcript"] == "Hi, it's about my appointment tomorrow."
    assert event["recording_url"].endswith("/RE1")
    assert (event["caller"], event["called"], event["practice_id"]) == ("+14155550123", "+13125550100", "maple")
    assert event["occurred_at"] == event["received_at"] == 1_700_000_000_000


def test_failed_transcription_still_reports_the_voicemail_without_text():
    params = transcription(TranscriptionStatus="failed")
    params.pop("TranscriptionText")
    event = twilio.transcription_event(params, "maple", 1)
    assert event["transcript"] is None and event["provider_status"] == "failed"
    with pytest.raises(twilio.PayloadError, match="TranscriptionText"):
        params = transcription()
        params.pop("TranscriptionText")
        twilio.transcription_event(params, "maple", 1)


# ---------------------------------------------------------------- incoming SMS
def sms(**over: str) -> dict[str, str]:
    params = {
        "MessageSid": "SM" + "5" * 32,
        "SmsSid": "SM" + "5" * 32,
        "AccountSid": "AC" + "2" * 32,
        "From": "+14155550123",
        "To": "+13125550100",
        "Body": "STOP",
        "NumMedia": "0",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    params.update(over)
    return params


def test_sms_event():
    event = twilio.sms_event(sms(), "maple", 7)
    assert event["event_id"] == "twilio:SM" + "5" * 32 + ":sms"
    assert (event["event_type"], event["outcome"], event["direction"]) == ("SMS", None, "INBOUND")
    assert (event["sms_body"], event["sms_id"], event["caller"], event["called"]) == (
        "STOP",
        "SM" + "5" * 32,
        "+14155550123",
        "+13125550100",
    )
    assert twilio.practice_number(sms()) == "+13125550100"
    assert twilio.sms_event(sms(Body=""), "maple", 7)["sms_body"] == ""  # an MMS without text


@pytest.mark.parametrize("over, msg", [({"MessageSid": ""}, "MessageSid"), ({"From": "12"}, "From")])
def test_sms_malformed(over, msg):
    with pytest.raises(twilio.PayloadError, match=msg):
        twilio.sms_event(sms(**over), "maple", 1)


# ---------------------------------------------------------------- SMS status callback
def test_message_status_record_for_every_status_of_the_spec():
    for status in _spec_enum("message_enum_status"):
        params = {
            "MessageSid": "SM" + "6" * 32,
            "MessageStatus": status,
            "To": "(415) 555-0123",
            "From": "+13125550100",
            "AccountSid": "AC" + "2" * 32,
        }
        record = twilio.message_status_record(params, "maple", "case-1:sms1", 3)
        assert record == {
            "message_sid": "SM" + "6" * 32,
            "status": status,
            "error_code": None,
            "practice_id": "maple",
            "recipient": "+14155550123",
            "action_id": "case-1:sms1",
            "received_at": 3,
        }
    failed = twilio.message_status_record(
        {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003", "To": "+14155550123"},
        "maple",
        None,
        3,
    )
    assert failed["error_code"] == "30003" and failed["action_id"] is None
    with pytest.raises(twilio.PayloadError, match="MessageStatus"):
        twilio.message_status_record({"MessageSid": "SM1", "To": "+14155550123"}, "maple", None, 3)
