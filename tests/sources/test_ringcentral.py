"""RingCentral telephony-session notifications → canonical call events (pure mapping + token).

RingCentral publishes no redistributable samples: the notifications are built from the
format described in RingCentral's documentation (tests/support/webhooks.py)."""

from __future__ import annotations

import copy

import pytest

from ringback.sources import ringcentral
from ringback.sources.canonical import PayloadError
from tests.support.webhooks import ringcentral_session

CALLER, DID = "+14155550123", "+16175550142"
SESSION = "s-a0d17e3c2f5b4e1b9c8d7e6f5a4b3c2d1"


def events(notification, numbers=(DID,)):
    return ringcentral.events(notification, "lakeside", numbers, 1_800_000_000_000)


@pytest.mark.parametrize(
    "code, reason, missed, outcome",
    [
        ("Disconnected", "NoAnswer", False, "MISSED"),
        ("Disconnected", "TargetBusy", False, "MISSED"),
        ("Disconnected", "Timeout", False, "MISSED"),
        ("Disconnected", "Rejected", False, "MISSED"),
        ("Disconnected", "Cancelled", False, None),  # another ring-group member answered
        ("Disconnected", "Cancelled", True, "MISSED"),  # the caller hung up while it rang
        ("Disconnected", None, True, "MISSED"),
        ("Disconnected", "AgentAnswered", True, None),  # handed on: someone else has the call
        ("Disconnected", "BlindTransfer", False, None),
        ("Disconnected", "Pickup", True, None),
        ("Gone", None, True, "MISSED"),
        ("VoiceMail", None, False, "VOICEMAIL"),
        ("VoiceMail", None, True, "VOICEMAIL"),
        ("Answered", None, False, "ANSWERED"),
        ("Disconnected", "CallerInputRedirect", False, None),
        ("Disconnected", None, False, None),
        ("Setup", None, False, None),
        ("Proceeding", None, False, None),
        ("Hold", None, False, None),
        ("Parked", None, False, None),
        ("FaxReceive", None, False, None),
        ("VoiceMailScreening", None, False, None),
    ],
)
def test_outcome(code, reason, missed, outcome):
    produced = events(ringcentral_session(SESSION, CALLER, DID, code, reason, missed))
    assert [e["outcome"] for e in produced] == ([outcome] if outcome else [])


def test_event_fields():
    [event] = events(ringcentral_session(SESSION, "(415) 555-0123", DID, "Disconnected", "NoAnswer"))
    assert event == {
        "event_id": f"ringcentral:{SESSION}:missed",
        "provider": "ringcentral",
        "event_type": "CALL",
        "outcome": "MISSED",
        "provider_status": "Disconnected/NoAnswer",
        "practice_id": "lakeside",
        "caller": CALLER,
        "called": DID,
        "direction": "INBOUND",
        "provider_call_id": SESSION,
        "occurred_at": 1_795_532_645_123,
        "received_at": 1_800_000_000_000,
        "duration_s": None,
        "recording_url": None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
        "leg_id": f"p-{SESSION}-1",
        "signal": "leg",
    }


def test_the_notifications_of_one_missed_call_share_one_event_id():
    first = events(ringcentral_session(SESSION, CALLER, DID, "Gone", missed=True))
    second = events(ringcentral_session(SESSION, CALLER, DID, "Disconnected", "NoAnswer"))
    again = events(ringcentral_session(SESSION, CALLER, DID, "Disconnected", "NoAnswer"))
    assert first[0]["event_id"] == second[0]["event_id"] == again[0]["event_id"]
    assert second == again  # a redelivery is the same record


def test_practice_numbers_and_parties_of_other_practices():
    note = ringcentral_session(SESSION, CALLER, DID, "Disconnected", "NoAnswer")
    other = copy.deepcopy(note["body"]["parties"][0])
    other["to"]["phoneNumber"] = "+13125550100"
    note["body"]["parties"].insert(0, other)
    assert ringcentral.practice_numbers(note) == ["+13125550100", DID, CALLER]
    produced = events(note)  # only the party on this practice's number
    assert [e["called"] for e in produced] == [DID]
    assert ringcentral.practice_numbers({"body": {"parties": "x"}}) == []
    assert ringcentral.practice_numbers([1, 2]) == []


def test_an_extensions_outbound_party_is_answered_when_ringcentral_routes_the_call_not_when_the_patient_answers():
    note = ringcentral_session(SESSION, CALLER, DID, "Answered", direction="Outbound")
    assert ringcentral.practice_numbers(note) == [DID, CALLER]
    assert events(note) == []


def test_internal_extension_call_is_skipped():
    note = ringcentral_session(SESSION, CALLER, DID, "Disconnected", "NoAnswer")
    note["body"]["parties"][0]["from"] = {"extensionId": "400112233009", "name": "Room 2"}
    assert events(note) == []


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda n: n.pop("body"), "body"),
        (lambda n: n["body"].pop("telephonySessionId"), "telephonySessionId"),
        (lambda n: n["body"].update(eventTime="yesterday"), "eventTime"),
        (lambda n: n["body"]["parties"][0]["from"].update(phoneNumber="anonymous"), "from.phoneNumber"),
    ],
)
def test_malformed(mutate, msg):
    note = ringcentral_session(SESSION, CALLER, DID, "Disconnected", "NoAnswer")
    mutate(note)
    with pytest.raises(PayloadError, match=msg):
        events(note)


def test_verification_token_and_handshake():
    assert ringcentral.token_valid("s3cret-token", "s3cret-token")
    assert not ringcentral.token_valid("s3cret-token", "s3cret-tokem")
    assert not ringcentral.token_valid("s3cret-token", None)
    assert not ringcentral.token_valid("s3cret-token", "")
    assert not ringcentral.token_valid("", "")
    assert not ringcentral.token_valid("s3cret-token", "s3cret-token\udcff")
    assert (
        ringcentral.validation_token("0b8c1a5e-3c7d-4c1e-9a0f-6b2e4d8f1a3c") == "0b8c1a5e-3c7d-4c1e-9a0f-6b2e4d8f1a3c"
    )
    assert ringcentral.validation_token("a\r\nSet-Cookie: x=1") is None
    assert ringcentral.validation_token("x" * 513) is None
    assert ringcentral.validation_token(None) is None
