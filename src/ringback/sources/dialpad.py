"""Dialpad call-event webhooks → canonical call events.

The request handler the gateway routes Dialpad's webhook to (`handle_call_event`) and
the pure functions it uses. From Dialpad's API v2 OpenAPI description
(Dialpad API v2 OpenAPI, `schemas.call.CallProto`; extract in tests/vendor/dialpad): with a
webhook secret, the POST body is a compact JWT signed HS256 with that secret whose claims
are the call event; without a secret Dialpad posts plain JSON, which we refuse (it
cannot be authenticated).

Claims used: `call_id`, `state`, `direction` (inbound/outbound), `external_number` (the
other party), `internal_number`, `target` / `entry_point_target` / `proxy_target`
(`phone`), `date_connected`, `duration` (milliseconds), `event_timestamp` /
`date_started` (epoch ms), `voicemail_share_link`, `transcription_text`.

Mapping (call states): `missed` → MISSED; `voicemail` → VOICEMAIL; `voicemail_uploaded`
→ a TRANSCRIPTION event (outcome VOICEMAIL, with `transcription_text` when Dialpad sends
it and the recording link); `connected` → ANSWERED; `hangup` → ANSWERED when the call
connected for at least 5 s, otherwise MISSED. Every other state (ringing, calling,
preanswer, queued, hold, recording, ...) → nothing. Event id:
`dialpad:<call_id>:<missed|voicemail|answered|transcription>`, so `missed` followed by
`hangup` of the same call, or `connected` then `hangup`, collapse to one event.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ringback.domain.practice import Practice
from ringback.sources.canonical import (
    SHORT_ANSWER_S,
    PayloadError,
    SignatureError,
    call_event,
    compact_jwt,
    e164,
    epoch_millis,
    hs256_signed,
    safe_e164,
    seconds,
    text,
    unverified_claims,
    verify_hs256,
)
from ringback.sources.webhook import Reject, Unverifiable, Webhook

__all__ = [
    "PayloadError",
    "SignatureError",
    "compact_jwt",
    "unverified_claims",
    "verify",
    "practice_numbers",
    "events",
    "state_outcome",
    "handle_call_event",
    "vouch",
]


def verify(token: str, secret: str, now_s: float) -> dict:
    """The verified claims, or SignatureError."""
    return verify_hs256(token, secret, now_s)


def vouch(hook: Webhook) -> tuple[bool, Practice | None]:
    """A signed body whose claims cannot be read or name no practice: still Dialpad's when the
    signature is valid with some practice's secret (a body that cannot be decoded proves nothing)."""
    token = compact_jwt(hook.decoded)
    if token is None:
        return False, None
    return hook.vouched("dialpad", lambda secret: hs256_signed(token, secret))


def _phone(claims: dict, name: str) -> Any:
    value = claims.get(name)
    return value.get("phone") if isinstance(value, dict) else None


def _outbound(claims: dict) -> bool:
    return str(claims.get("direction") or "inbound").lower() == "outbound"


def practice_numbers(claims: Any) -> list[str]:
    """Candidate practice numbers (E.164), most specific first: for an inbound call the
    number dialled (`entry_point_target`), then `internal_number`, then `target`; for an
    outbound call the caller id used (`proxy_target`), then `internal_number`, `target`."""
    if not isinstance(claims, dict):
        return []
    first = "proxy_target" if _outbound(claims) else "entry_point_target"
    raw = [_phone(claims, first), claims.get("internal_number"), _phone(claims, "target")]
    out: list[str] = []
    for value in raw:
        number = safe_e164(value)
        if number and number not in out:
            out.append(number)
    return out


def state_outcome(state: str, connected: bool, duration_s: int | None) -> tuple[str, str] | None:
    """(event_type, outcome) of a call state, or None when nothing is to be produced."""
    if state == "missed":
        return "CALL", "MISSED"
    if state == "voicemail":
        return "CALL", "VOICEMAIL"
    if state == "voicemail_uploaded":
        return "TRANSCRIPTION", "VOICEMAIL"
    if state == "connected":
        return "CALL", "ANSWERED"
    if state == "hangup":
        if connected and (duration_s is None or duration_s >= SHORT_ANSWER_S):
            return "CALL", "ANSWERED"
        return "CALL", "MISSED"
    return None


def events(claims: Any, practice_id: str, called: str, received_ms: int) -> list[dict]:
    """The call event of one verified Dialpad event (zero or one)."""
    if not isinstance(claims, dict):
        raise PayloadError("the JWT claims are not an object")
    call_id = text(claims, "call_id", max_len=64)
    state = text(claims, "state", max_len=64)
    duration_s = seconds(claims.get("duration"), "duration", divisor=1000)
    connected = claims.get("date_connected") not in (None, 0, "")
    kind = state_outcome(state, connected, duration_s)
    if kind is None:
        return []
    event_type, outcome = kind
    outbound = _outbound(claims)
    caller = e164(claims.get("external_number") or _phone(claims, "contact"), "external_number")
    occurred = epoch_millis(claims.get("event_timestamp") or claims.get("date_started"), "event_timestamp", received_ms)
    suffix = "transcription" if event_type == "TRANSCRIPTION" else outcome.lower()
    transcript = claims.get("transcription_text") if event_type == "TRANSCRIPTION" else None
    if transcript is not None and not isinstance(transcript, str):
        raise PayloadError("transcription_text is not a string")
    return [
        call_event(
            event_id=f"dialpad:{call_id}:{suffix}",
            provider="dialpad",
            event_type=event_type,
            outcome=outcome,
            provider_status=state,
            practice_id=practice_id,
            caller=caller,
            called=called,
            direction="OUTBOUND" if outbound else "INBOUND",
            provider_call_id=call_id,
            occurred_at=occurred,
            received_at=received_ms,
            duration_s=duration_s,
            recording_url=text(claims, "voicemail_share_link", required=False, max_len=2048),
            transcript=transcript or None,
        )
    ]


async def handle_call_event(hook: Webhook) -> web.Response:
    """A call event: a JWT signed with the webhook's secret, whose claims are the event."""
    token = compact_jwt(await hook.body())
    if token is None:
        raise Reject(403, "signature", "the body is not a signed JWT (give the Dialpad webhook a secret)")
    claims = unverified_claims(token)
    if claims is None:  # claims that are not a JSON object: a dead letter if the signature is valid (vouch)
        raise Unverifiable(403, "unverifiable", "the JWT claims are not a JSON object")
    practice, number = hook.first_practice(practice_numbers(claims))
    now_ms = hook.now_ms()
    verified = hook.authenticate("dialpad", practice, number, lambda secret: verify(token, secret, now_ms / 1000))
    practice = await hook.require_practice(practice, number)
    called = number
    assert called is not None  # the number the practice was found by (require_practice raised otherwise)
    await hook.produce(practice, lambda: events(verified, practice.id, called, now_ms))
    return web.Response(status=204)
