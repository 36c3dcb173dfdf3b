"""Vonage Voice API event webhooks → canonical call events: the statuses and fields of
Vonage's webhook reference (tests/vendor/vonage/voice-webhook-reference.md), the
signed-webhook JWT (HS256 + payload_hash), forgeries and redelivery."""

from __future__ import annotations

import hashlib
import json
import re

import jwt
import pytest

from ringback.schemas import codec
from ringback.sources import vonage
from ringback.sources.canonical import PayloadError, SignatureError
from tests.support.webhooks import VENDOR, vonage_event
from tests.support.webhooks import vonage as signed

pytestmark = pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
SECRET = "vonage-signature-secret-0123456789abcdef"
NOW = 1_767_000_100
CALLER, DID = "+14155550123", "+442079460000"
UUID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
REFERENCE = (VENDOR / "vonage" / "voice-webhook-reference.md").read_text()


def reference_statuses() -> set[str]:
    """The event statuses listed in the reference's event-webhook index."""
    section = REFERENCE.split("## Event webhook", 1)[1].split("### Started", 1)[0]
    names = set(re.findall(r"\[`([a-z/]+)`\]", section))
    return {s for n in names for s in n.split("/")}


def test_reference_example_payload_of_each_status():
    """Each status section's example, as the reference tabulates it (numbers without `+`)."""
    outcomes = {}
    for status in sorted(reference_statuses()):
        payload = vonage_event(UUID, status, "442079460000", "447700900000")
        outcomes[status] = [e["outcome"] for e in vonage.events(payload, "harbor", 1)]
    assert outcomes == {
        "started": [],
        "ringing": [],
        "answered": ["ANSWERED"],
        "busy": ["MISSED"],
        "cancelled": ["MISSED"],
        "unanswered": ["MISSED"],
        "disconnected": [],
        "rejected": ["MISSED"],
        "failed": ["MISSED"],
        "human": [],
        "machine": ["VOICEMAIL"],
        "timeout": ["MISSED"],
        "completed": ["ANSWERED"],
        "record": [],
        "input": [],
        "transfer": [],
    }


def test_event_fields():
    [event] = vonage.events(vonage_event(UUID, "unanswered", CALLER, DID, detail="unavailable"), "harbor", 7)
    assert event == {
        "event_id": f"vonage:{UUID}:missed",
        "provider": "vonage",
        "event_type": "CALL",
        "outcome": "MISSED",
        "provider_status": "unanswered/unavailable",
        "practice_id": "harbor",
        "caller": CALLER,
        "called": DID,
        "direction": "INBOUND",
        "provider_call_id": UUID,
        "occurred_at": 1_795_532_645_000,
        "received_at": 7,
        "duration_s": None,
        "recording_url": None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
        "leg_id": None,
        "signal": None,
    }
    assert vonage.practice_number(vonage_event(UUID, "unanswered", CALLER, DID)) == DID


@pytest.mark.parametrize(
    "duration, outcome", [("2", "MISSED"), ("4", "MISSED"), ("5", "ANSWERED"), ("120", "ANSWERED"), (None, "ANSWERED")]
)
def test_completed_short_is_missed(duration, outcome):
    payload = vonage_event(UUID, "completed", CALLER, DID, duration=duration)
    assert vonage.events(payload, "harbor", 1)[0]["outcome"] == outcome


def test_answered_then_completed_collapse_and_redelivery_is_identical():
    ids = [
        vonage.events(vonage_event(UUID, s, CALLER, DID), "harbor", 1)[0]["event_id"] for s in ("answered", "completed")
    ]
    assert ids == [f"vonage:{UUID}:answered"] * 2
    short = vonage.events(vonage_event(UUID, "completed", CALLER, DID, duration="0"), "harbor", 1)
    missed = vonage.events(vonage_event(UUID, "unanswered", CALLER, DID), "harbor", 1)
    assert short[0]["event_id"] == missed[0]["event_id"]
    assert vonage.events(vonage_event(UUID, "busy", CALLER, DID), "harbor", 3) == vonage.events(
        vonage_event(UUID, "busy", CALLER, DID), "harbor", 3
    )


def test_machine_detection_event_uses_call_uuid():
    [event] = vonage.events(vonage_event(UUID, "machine", CALLER, DID), "harbor", 1)
    assert event["event_id"] == f"vonage:{UUID}:voicemail" and event["outcome"] == "VOICEMAIL"


def test_outbound_practice_is_the_from():
    payload = vonage_event(UUID, "answered", DID, CALLER, direction="outbound")
    assert vonage.practice_number(payload) == DID
    [event] = vonage.events(payload, "harbor", 1)
    assert (event["direction"], event["caller"], event["called"]) == ("OUTBOUND", CALLER, DID)


# ---------------------------------------------------------------- signatures
def token_of(hook) -> str:
    return vonage.bearer_token(hook.headers["Authorization"])


def test_signed_webhook_verifies():
    hook = signed(vonage_event(UUID, "busy", CALLER, DID), SECRET)
    claims = vonage.verify(token_of(hook), SECRET, hook.body, NOW)
    assert claims["payload_hash"] == hashlib.sha256(hook.body).hexdigest()
    # Vonage hashes the compact JSON: a body sent with other whitespace still matches.
    spaced = json.dumps(json.loads(hook.body), indent=2).encode()
    assert vonage.verify(token_of(hook), SECRET, spaced, NOW)


def test_forgeries_are_refused():
    payload = vonage_event(UUID, "busy", CALLER, DID)
    hook = signed(payload, SECRET)
    with pytest.raises(SignatureError):
        vonage.verify(token_of(hook), "another-secret-another-secret-1234", hook.body, NOW)
    other_body = json.dumps({**payload, "from": "14155550000"}, separators=(",", ":")).encode()
    with pytest.raises(SignatureError, match="payload_hash"):  # a captured token on another body
        vonage.verify(token_of(hook), SECRET, other_body, NOW)
    no_hash = jwt.encode({"iat": NOW, "iss": "Vonage"}, SECRET, algorithm="HS256")
    with pytest.raises(SignatureError, match="payload_hash"):
        vonage.verify(no_hash, SECRET, hook.body, NOW)
    expired = jwt.encode(
        {"exp": NOW - 3600, "payload_hash": hashlib.sha256(hook.body).hexdigest()}, SECRET, algorithm="HS256"
    )
    with pytest.raises(SignatureError, match="exp"):
        vonage.verify(expired, SECRET, hook.body, NOW)
    unsigned = jwt.encode({"payload_hash": hashlib.sha256(hook.body).hexdigest()}, None, algorithm="none")
    assert unsigned.endswith(".") and vonage.bearer_token("Bearer " + unsigned) is None  # alg none: no signature
    with pytest.raises(SignatureError):
        vonage.verify(unsigned, SECRET, hook.body, NOW)
    with pytest.raises(SignatureError):  # HS256 only, even with the right secret
        vonage.verify(
            jwt.encode({"payload_hash": hashlib.sha256(hook.body).hexdigest()}, SECRET, algorithm="HS384"),
            SECRET,
            hook.body,
            NOW,
        )


def test_bearer_token():
    hook = signed(vonage_event(UUID, "busy", CALLER, DID), SECRET)
    assert vonage.bearer_token(hook.headers["Authorization"]) == hook.headers["Authorization"][7:]
    assert vonage.bearer_token("bearer " + hook.headers["Authorization"][7:])
    assert vonage.bearer_token("Basic dXNlcjpwYXNz") is None
    assert vonage.bearer_token("Bearer not-a-jwt") is None
    assert vonage.bearer_token(None) is None


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"status": None}, "status"),
        ({"uuid": None}, "call_uuid"),
        ({"from": "Unknown"}, "from"),
        ({"timestamp": "noon"}, "timestamp"),
        ({"status": "completed", "duration": "-3"}, "duration"),
    ],
)
def test_malformed(over, msg):
    with pytest.raises(PayloadError, match=msg):
        vonage.events({**vonage_event(UUID, "busy", CALLER, DID), **over}, "harbor", 1)


def test_an_escaped_lone_surrogate_verifies_and_then_cannot_be_encoded():
    """`\\ud800` in the JSON is valid JSON with no UTF-8 form: the hash of the body as received still
    verifies (no UnicodeEncodeError), and the event it makes is refused by the codec, so the
    gateway dead-letters it (tests/sources/test_gateway_fuzz.py) instead of answering 500."""
    body = json.dumps(vonage_event(UUID, "busy", CALLER, DID, detail="\ud800")).encode()
    assert b"\\ud800" in body
    token = jwt.encode({"iat": NOW, "payload_hash": hashlib.sha256(body).hexdigest()}, SECRET, algorithm="HS256")
    assert vonage.verify(token, SECRET, body, NOW)["payload_hash"]
    [event] = vonage.events(json.loads(body), "harbor", 1)
    with pytest.raises(codec.SchemaValidationError, match="cannot encode"):
        codec.encode("call_event", event)
