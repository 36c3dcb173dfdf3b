"""Dialpad call events → canonical call events: the vendor's JWT vectors (RFC 7515 A.1 and a
Dialpad-style `missed` event signed with the spec's example secret), the call states of
Dialpad's OpenAPI description, forged and redelivered events."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from ringback.sources import dialpad
from ringback.sources.canonical import PayloadError, SignatureError, compact_jwt, hs256_signed, unverified_claims
from tests.support.webhooks import VENDOR, dialpad_call, dialpad_vectors

VECTORS = dialpad_vectors()
SPEC_STATES = json.loads((VENDOR / "dialpad" / "dialpad_call_event_extract.json").read_text())[
    "call_event_subscription_call_states_enum"
]
VECTOR = VECTORS["dialpad_style_SYNTHETIC"]
# The spec's example secret is 11 bytes: PyJWT warns when the tests sign with it.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
NOW = VECTOR["decoded_payload"]["event_timestamp"] / 1000
CALLER, DID = "+14155551234", "+15005550006"


def test_rfc7515_a1_vector_with_the_injected_clock():
    rfc = VECTORS["rfc7515_A1"]
    key = base64.urlsafe_b64decode(rfc["jwk_k_base64url"] + "==")
    claims = dialpad.verify(rfc["compact_jws"], key, now_s=1300819380 - 10)
    assert claims == {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}
    with pytest.raises(SignatureError, match="exp"):  # the same token today: expired
        dialpad.verify(rfc["compact_jws"], key, now_s=1_800_000_000)
    with pytest.raises(SignatureError):
        dialpad.verify(rfc["compact_jws"], key[:-1], now_s=1300819380)


def test_dialpad_vector_verifies_and_maps_to_a_missed_call():
    token = compact_jwt(VECTOR["http_body"].encode())
    assert token == VECTOR["http_body"]
    claims = dialpad.verify(token, VECTOR["secret"], NOW)
    assert claims == VECTOR["decoded_payload"]
    assert dialpad.practice_numbers(unverified_claims(token)) == [DID]
    [event] = dialpad.events(claims, "harbor", DID, 1_772_550_280_000)
    assert event == {
        "event_id": "dialpad:1000000001:missed",
        "provider": "dialpad",
        "event_type": "CALL",
        "outcome": "MISSED",
        "provider_status": "missed",
        "practice_id": "harbor",
        "caller": CALLER,
        "called": DID,
        "direction": "INBOUND",
        "provider_call_id": "1000000001",
        "occurred_at": 1_772_550_275_000,
        "received_at": 1_772_550_280_000,
        "duration_s": 0,
        "recording_url": None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
        "leg_id": None,
        "signal": None,
    }


@pytest.mark.parametrize(
    "forge",
    [
        lambda t, s: dialpad.verify(t, "wrong_secret", NOW),
        lambda t, s: dialpad.verify(t[:-2] + ("AA" if not t.endswith("AA") else "BB"), s, NOW),
        # the claims swapped for others (another caller), the signature kept
        lambda t, s: dialpad.verify(
            t.split(".")[0]
            + "."
            + base64.urlsafe_b64encode(
                json.dumps({**VECTOR["decoded_payload"], "external_number": "+14155550000"}).encode()
            )
            .decode()
            .rstrip("=")
            + "."
            + t.split(".")[2],
            s,
            NOW,
        ),
        lambda t, s: dialpad.verify(jwt.encode(VECTOR["decoded_payload"], s, algorithm="HS512"), s, NOW),
        lambda t, s: dialpad.verify(jwt.encode(VECTOR["decoded_payload"], None, algorithm="none"), s, NOW),
    ],
)
def test_forgeries_are_refused(forge):
    with pytest.raises(SignatureError):
        forge(VECTOR["http_body"], VECTOR["secret"])


def test_not_a_jwt():
    assert compact_jwt(json.dumps(VECTOR["decoded_payload"]).encode()) is None  # unsigned JSON
    assert compact_jwt(b"\xff\xfe") is None
    assert compact_jwt(b"a.b") is None
    assert unverified_claims("e30.W10.x") is None  # claims that are a list, not an object


def verified(claims: dict, secret: str = "test_secret") -> dict:
    return dialpad.verify(jwt.encode(claims, secret, algorithm="HS256"), secret, NOW)


@pytest.mark.parametrize(
    "state, connected, duration_ms, kind",
    [
        ("missed", False, 0, ("CALL", "MISSED")),
        ("voicemail", False, 0, ("CALL", "VOICEMAIL")),
        ("voicemail_uploaded", False, 0, ("TRANSCRIPTION", "VOICEMAIL")),
        ("connected", True, 0, ("CALL", "ANSWERED")),
        ("hangup", True, 95_000, ("CALL", "ANSWERED")),
        ("hangup", True, 2_000, ("CALL", "MISSED")),
        ("hangup", False, 0, ("CALL", "MISSED")),
    ],
)
def test_states(state, connected, duration_ms, kind):
    [event] = dialpad.events(
        verified(dialpad_call(7, state, CALLER, DID, connected=connected, duration_ms=duration_ms)), "harbor", DID, 1
    )
    assert (event["event_type"], event["outcome"]) == kind


def test_every_other_state_of_the_spec_produces_nothing():
    handled = {"missed", "voicemail", "voicemail_uploaded", "connected", "hangup"}
    assert handled <= set(SPEC_STATES)
    for state in set(SPEC_STATES) - handled:
        assert dialpad.events(verified(dialpad_call(7, state, CALLER, DID)), "harbor", DID, 1) == [], state


def test_one_call_collapses_to_one_event_per_outcome_and_redelivery_is_identical():
    ids = [
        dialpad.events(verified(dialpad_call(9, s, CALLER, DID)), "harbor", DID, 1)[0]["event_id"]
        for s in ("missed", "hangup")
    ]
    assert ids == ["dialpad:9:missed", "dialpad:9:missed"]
    answered = [
        dialpad.events(verified(dialpad_call(9, s, CALLER, DID, connected=True, duration_ms=60_000)), "harbor", DID, 1)[
            0
        ]["event_id"]
        for s in ("connected", "hangup")
    ]
    assert answered == ["dialpad:9:answered", "dialpad:9:answered"]
    body = jwt.encode(dialpad_call(9, "missed", CALLER, DID), "test_secret", algorithm="HS256")
    assert dialpad.events(dialpad.verify(body, "test_secret", NOW), "harbor", DID, 5) == dialpad.events(
        dialpad.verify(body, "test_secret", NOW), "harbor", DID, 5
    )


def test_voicemail_uploaded_carries_transcript_and_link():
    claims = dialpad_call(
        11,
        "voicemail_uploaded",
        CALLER,
        DID,
        transcription_text="Please call me back",
        voicemail_share_link="https://dialpad.com/shared/voicemail/abc",
    )
    [event] = dialpad.events(verified(claims), "harbor", DID, 1)
    assert event["event_id"] == "dialpad:11:transcription"
    assert event["transcript"] == "Please call me back"
    assert event["recording_url"] == "https://dialpad.com/shared/voicemail/abc"


def test_practice_numbers_prefer_the_number_dialled_and_outbound_uses_the_caller_id():
    claims = dialpad_call(12, "missed", CALLER, "+15005550007", entry_point_target={"phone": DID, "type": "office"})
    assert dialpad.practice_numbers(claims) == [DID, "+15005550007"]
    out = dialpad_call(
        13, "connected", CALLER, "+15005550007", direction="outbound", proxy_target={"phone": DID}, connected=True
    )
    assert dialpad.practice_numbers(out) == [DID, "+15005550007"]
    [event] = dialpad.events(verified(out), "harbor", DID, 1)
    assert (event["direction"], event["caller"], event["called"]) == ("OUTBOUND", CALLER, DID)
    assert dialpad.practice_numbers({"internal_number": 5}) == []


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"call_id": None}, "call_id"),
        ({"state": None}, "state"),
        ({"external_number": "12", "contact": None}, "external_number"),
        ({"duration": "long"}, "duration"),
        ({"event_timestamp": "noon"}, "event_timestamp"),
        ({"state": "voicemail_uploaded", "transcription_text": ["x"]}, "transcription_text"),
    ],
)
def test_malformed(over, msg):
    claims = {**dialpad_call(7, "missed", CALLER, DID), **over}
    with pytest.raises(PayloadError, match=msg):
        dialpad.events(verified(claims), "harbor", DID, 1)


def test_a_signature_is_checked_without_reading_the_claims():
    """Claims that are not JSON (or not UTF-8) cannot name a practice; the signature alone says
    whether Dialpad sent them, so the gateway can dead-letter them instead of losing them."""
    secret = VECTOR["secret"]
    token = jwt.PyJWS().encode(b'{"call_id": "\xff"', secret, algorithm="HS256")
    assert unverified_claims(token) is None
    assert hs256_signed(token, secret)
    assert not hs256_signed(token, "another-secret")
    assert not hs256_signed(jwt.PyJWS().encode(b"{}", secret, algorithm="HS512"), secret)  # HS256 only
    assert hs256_signed(VECTOR["http_body"], secret)
