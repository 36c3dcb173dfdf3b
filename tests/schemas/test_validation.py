"""Validation on encode: every bad field named, no PHI in the message."""

from __future__ import annotations

from datetime import datetime

import pytest

from ringback.schemas import codec
from ringback.schemas.codec import SchemaValidationError
from tests.schemas.samples import RECORDS


@pytest.mark.parametrize(
    "change,message",
    [
        ({"caller": None}, "call_event.caller: expected string, got None"),
        ({"caller": 14155550123}, "call_event.caller: expected string, got an int of 11 digits"),
        ({"caller": 5}, "call_event.caller: expected string, got 5 (int)"),
        (
            {"event_type": "VOICE"},
            "call_event.event_type: expected enum CallEventType {CALL, TRANSCRIPTION, SMS}, got 'VOICE'",
        ),
        ({"outcome": "missed"}, "call_event.outcome: expected null | enum CallOutcome"),
        ({"duration_s": "38"}, "call_event.duration_s: expected null | int, got a str of 2 chars"),
        ({"duration_s": 2**40}, "call_event.duration_s: expected null | int"),
        ({"duration_s": True}, "call_event.duration_s: expected null | int, got True (bool)"),
        ({"occurred_at": 1.7e12}, "call_event.occurred_at: expected timestamp-millis"),
        ({"occurred_at": "2024-11-26T16:53:20Z"}, "call_event.occurred_at: expected timestamp-millis"),
        ({"occurred_at": datetime(2024, 11, 26, 16, 53)}, "call_event.occurred_at: naive datetime"),
    ],
)
def test_invalid_record_is_rejected_naming_the_field(change, message):
    rec = dict(RECORDS["call_event"][0], **change)
    with pytest.raises(SchemaValidationError) as exc:
        codec.encode("call_event", rec)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_error_messages_do_not_echo_phone_numbers_or_text():
    rec = dict(
        RECORDS["call_event"][1],
        duration_s="+14155550123",
        transcript=["call me back"],
        direction="Maria Lopez calling",
    )
    with pytest.raises(SchemaValidationError) as exc:
        codec.encode("call_event", rec)
    msg = str(exc.value)
    assert "call_event.duration_s" in msg and "call_event.transcript" in msg and "call_event.direction" in msg
    assert "+14155550123" not in msg and "call me" not in msg and "Maria" not in msg


def test_missing_required_field_is_named():
    rec = {k: v for k, v in RECORDS["call_event"][0].items() if k != "practice_id"}
    with pytest.raises(SchemaValidationError, match=r"call_event\.practice_id: missing required field"):
        codec.encode("call_event", rec)


def test_bad_map_value_and_array_item_are_located():
    rec = dict(RECORDS["action_command"][0], params={"booking_link": "https://x", "attempt": 2})
    with pytest.raises(
        SchemaValidationError, match=r"action_command\.params\['attempt'\]: expected string, got 2 \(int\)"
    ):
        codec.encode("action_command", rec)
    rec = dict(RECORDS["practice_config"][0], phone_numbers=["+14155550100", None])
    with pytest.raises(SchemaValidationError, match=r"practice_config\.phone_numbers\[1\]: expected string, got None"):
        codec.encode("practice_config", rec)
    rec = dict(RECORDS["practice_config"][0], windows={"first_sms_hold": "45s"})
    with pytest.raises(
        SchemaValidationError,
        match=r"practice_config\.windows\['first_sms_hold'\]: expected long, got a str of 3 chars",
    ):
        codec.encode("practice_config", rec)


def test_several_problems_are_all_reported():
    rec = dict(RECORDS["patient"][0], phone=None, deceased="no")
    with pytest.raises(SchemaValidationError) as exc:
        codec.encode("patient", rec)
    assert "patient.phone" in str(exc.value) and "patient.deceased" in str(exc.value)


def test_not_a_mapping():
    with pytest.raises(SchemaValidationError, match="patient: expected a record"):
        codec.encode("patient", ["+14155550123"])


def test_validate_function():
    codec.validate("outcome", RECORDS["outcome"][0])
    with pytest.raises(SchemaValidationError, match="outcome.state"):
        codec.validate("outcome", dict(RECORDS["outcome"][0], state="DONE"))
