"""What every webhook adapter shares: the canonical call-event record and its rules.

The adapters (`twilio`, `ringcentral`, `dialpad`, `vonage`) turn a provider's payload into
records built here with pure functions; their request handlers and the gateway do the
I/O. Nothing in this module reads the clock, the network or the practice directory.

Conventions every adapter follows:
* `caller` is always the patient's side of the call (the remote party) in E.164 and
  `called` the practice's number, so the record key `practice_id|caller` joins with the
  patient tables whatever the direction; `direction` says who dialled.
* `event_id` is `<provider>:<provider call id>:<kind>`; a redelivered webhook gives the
  same id (dedupe is downstream).
* Only events the stream app acts on are produced (`producible`): inbound MISSED /
  VOICEMAIL / ANSWERED calls, ANSWERED outbound calls (the practice reached the
  patient), transcriptions and inbound SMS. Ringing, in-progress and outbound calls
  that did not connect are acknowledged and dropped.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, overload

import jwt

from ringback.domain.phones import to_e164

# An answered call this short is a hang-up on the greeting or a carrier pickup, not a conversation.
SHORT_ANSWER_S = 5
CALL_OUTCOMES = ("MISSED", "VOICEMAIL", "ANSWERED")


class PayloadError(ValueError):
    """An authenticated payload we cannot turn into an event (400 + dead letter).

    Messages name fields, never their values when those may be PHI (numbers, text)."""


def call_event(
    *,
    event_id: str,
    provider: str,
    event_type: str,
    outcome: str | None,
    provider_status: str,
    practice_id: str,
    caller: str,
    called: str,
    direction: str,
    provider_call_id: str,
    occurred_at: int,
    received_at: int,
    duration_s: int | None = None,
    recording_url: str | None = None,
    transcript: str | None = None,
    sms_body: str | None = None,
    sms_id: str | None = None,
    leg_id: str | None = None,
    signal: str | None = None,
) -> dict:
    """One record of schemas/call_event.avsc (every field, so the codec sees no gap)."""
    return {
        "event_id": event_id,
        "provider": provider,
        "event_type": event_type,
        "outcome": outcome,
        "provider_status": provider_status,
        "practice_id": practice_id,
        "caller": caller,
        "called": called,
        "direction": direction,
        "provider_call_id": provider_call_id,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "duration_s": duration_s,
        "recording_url": recording_url,
        "transcript": transcript,
        "sms_body": sms_body,
        "sms_id": sms_id,
        "leg_id": leg_id,
        "signal": signal,
    }


def producible(event: dict) -> bool:
    """Whether the stream app needs this event (see the module docstring)."""
    if event["event_type"] in ("SMS", "TRANSCRIPTION"):
        return True
    if event["outcome"] not in CALL_OUTCOMES:
        return False
    return event["direction"] == "INBOUND" or event["outcome"] == "ANSWERED"


def e164(raw: object, field: str) -> str:
    """A caller/called number in E.164, or PayloadError naming the field (not the value)."""
    if not isinstance(raw, str) or not raw.strip():
        raise PayloadError(f"missing field {field}")
    try:
        return to_e164(raw)
    except ValueError as exc:
        raise PayloadError(f"{field}: {exc}") from None


def safe_e164(raw: object) -> str | None:
    """E.164 or None: for looking a number up, where a bad value just finds nothing."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 64:
        return None
    try:
        return to_e164(raw)
    except ValueError:
        return None


@overload
def text(payload: Mapping[str, Any], field: str, *, required: Literal[True] = True, max_len: int = 256) -> str: ...
@overload
def text(payload: Mapping[str, Any], field: str, *, required: bool, max_len: int = 256) -> str | None: ...
def text(payload: Mapping[str, Any], field: str, *, required: bool = True, max_len: int = 256) -> str | None:
    """A string field; ids and statuses are bounded so a hostile value cannot bloat a key."""
    value = payload.get(field)
    if value is None or value == "":
        if required:
            raise PayloadError(f"missing field {field}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"{field} is not a string")
    value = str(value)
    if len(value) > max_len:
        raise PayloadError(f"{field} is longer than {max_len} characters")
    return value


def iso_millis(value: object, field: str, fallback_ms: int) -> int:
    """ISO 8601 (`2020-01-01T12:00:00.000Z`) to epoch ms; absent → fallback."""
    if value is None or value == "":
        return fallback_ms
    if not isinstance(value, str) or len(value) > 64:
        raise PayloadError(f"{field} is not an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(f"{field} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _checked_ms(parsed.timestamp() * 1000, field)


def epoch_millis(value: object, field: str, fallback_ms: int) -> int:
    """An integer epoch-milliseconds field; absent → fallback."""
    if value is None:
        return fallback_ms
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"{field} is not a number")
    return _checked_ms(value, field)


def _checked_ms(ms: float, field: str) -> int:
    # Avro timestamp-millis is a long; anything outside years 1970..2300 is a broken clock.
    if not (0 <= ms < 10_413_792_000_000):
        raise PayloadError(f"{field} is out of range")
    return int(ms)


def seconds(value: object, field: str, *, divisor: int = 1) -> int | None:
    """A non-negative duration (seconds, or milliseconds with divisor=1000) as int seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(f"{field} is not a number")
    try:
        number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except (ValueError, OverflowError):
        raise PayloadError(f"{field} is not a number") from None
    if not (0 <= number < 10**9 * divisor):  # also rejects NaN and infinities
        raise PayloadError(f"{field} is out of range")
    return int(number // divisor)


# ---------------------------------------------------------------- signed JWTs (Dialpad, Vonage)


class SignatureError(ValueError):
    """A token that does not prove the request came from the provider (403)."""


_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def compact_jwt(raw: bytes | str | None) -> str | None:
    """The token if `raw` has the shape of a compact JWS (three base64url parts), else None."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    raw = raw.strip()
    return raw if _COMPACT_JWS.match(raw) else None


def unverified_claims(token: str) -> dict | None:
    """The claims read without checking the signature: only to find whose secret to
    check it with. None when the token cannot be read at all."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def hs256_signed(token: str, secret: str) -> bool:
    """Whether an HS256 token is signed with `secret`, its claims unread (they may be neither
    JSON nor UTF-8): enough to know a payload we cannot use came from the provider."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            jwt.PyJWS().decode(token, secret, algorithms=["HS256"])
    except jwt.PyJWTError:
        return False
    return True


def verify_hs256(token: str, secret: str, now_s: float, leeway_s: int = 300) -> dict:
    """Claims of an HS256 token signed with `secret` (HS256 only: no `none`, no key confusion).

    `exp` / `nbf`, when present, are checked against the injected clock with some leeway
    (PyJWT would read the wall clock)."""
    try:
        with warnings.catch_warnings():
            # Providers choose the secret length (Dialpad's own example is 11 bytes).
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
    except jwt.PyJWTError as exc:
        raise SignatureError(f"JWT rejected: {type(exc).__name__}") from None
    if not isinstance(claims, dict):
        raise SignatureError("JWT claims are not an object")
    for name, ok in (("exp", lambda t: now_s <= t + leeway_s), ("nbf", lambda t: now_s >= t - leeway_s)):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise SignatureError(f"JWT {name} rejected")
    return claims
