"""Vonage (Nexmo) Voice API event webhooks → canonical call events.

The request handler the gateway routes Vonage's event webhook to (`handle_event`) and the
pure functions it uses. From Vonage's webhook reference
(tests/vendor/vonage/voice-webhook-reference.md): the event webhook is a JSON
POST with `from`, `to` (numbers in E.164 without the `+`, e.g. `447700900000`),
`uuid` (`call_uuid` on human/machine events), `conversation_uuid`, `status`,
`direction`, `timestamp` (ISO 8601), `detail`, and `duration` (seconds) on `completed`.

Authenticity: signed webhooks carry `Authorization: Bearer <JWT>`, HS256 with the
account's signature secret. Its claims include `payload_hash`, the SHA-256 (hex) of
the JSON body; we require it and compare it with the body as received and with the
body re-serialised compactly (Vonage documents the hash of the compact JSON), so a
token captured from one webhook cannot carry another body.

Mapping: unanswered / busy / timeout / failed / rejected / cancelled → MISSED;
answered → ANSWERED; completed → ANSWERED, or MISSED when shorter than 5 s;
machine (answering-machine detection) → VOICEMAIL; started / ringing / human /
disconnected / record / input / transfer / errors → nothing. Event id:
`vonage:<uuid>:<missed|answered|voicemail>`, so `answered` then a long `completed`
collapse, as do `unanswered` then a zero-length `completed`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    iso_millis,
    safe_e164,
    seconds,
    text,
    verify_hs256,
)
from ringback.sources.webhook import Reject, Webhook

__all__ = [
    "PayloadError",
    "SignatureError",
    "bearer_token",
    "verify",
    "practice_number",
    "events",
    "status_outcome",
    "MISSED_STATUSES",
    "handle_event",
    "vouch",
]

MISSED_STATUSES = {"unanswered", "busy", "timeout", "failed", "rejected", "cancelled"}


def bearer_token(authorization: str | None) -> str | None:
    """The JWT of an `Authorization: Bearer <jwt>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return compact_jwt(token)


def _hashes(raw: bytes) -> set[str]:
    forms = {hashlib.sha256(raw).hexdigest()}
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return forms
    for ascii_only in (False, True):
        compact = json.dumps(parsed, separators=(",", ":"), ensure_ascii=ascii_only)
        try:
            forms.add(hashlib.sha256(compact.encode("utf-8")).hexdigest())
        except UnicodeEncodeError:  # an escaped lone surrogate has no UTF-8 form: nobody hashed one
            continue
    return forms


def verify(token: str, secret: str, raw_body: bytes, now_s: float) -> dict:
    """Verified claims whose `payload_hash` matches the body, or SignatureError."""
    claims = verify_hs256(token, secret, now_s)
    claimed = claims.get("payload_hash")
    if not isinstance(claimed, str) or not claimed:
        raise SignatureError("JWT has no payload_hash")
    claimed = claimed.lower()
    if not any(hmac.compare_digest(claimed, h) for h in _hashes(raw_body)):
        raise SignatureError("payload_hash does not match the body")
    return claims


def vouch(hook: Webhook) -> tuple[bool, Practice | None]:
    """A request whose payload cannot be read or names no practice: its bearer JWT still proves
    Vonage sent it, with the `payload_hash` checked when the body could be decoded (its signature
    alone when it could not)."""
    token = bearer_token(hook.request.headers.get("Authorization"))
    if token is None:
        return False, None
    now_s, body = hook.now_ms() / 1000, hook.decoded
    if body is None:
        return hook.vouched("vonage", lambda secret: verify_hs256(token, secret, now_s))
    return hook.vouched("vonage", lambda secret: verify(token, secret, body, now_s))


def _msisdn(raw: Any) -> Any:
    """Vonage writes numbers as E.164 digits without the `+`."""
    if isinstance(raw, str) and raw.isdigit() and len(raw) >= 8:
        return "+" + raw
    return raw


def _outbound(payload: dict) -> bool:
    return str(payload.get("direction") or "inbound").lower() == "outbound"


def practice_number(payload: Any) -> str | None:
    """The practice's number (E.164): `to` of an inbound call (the virtual number
    dialled), `from` of an outbound one. Events without `direction` (human/machine)
    count as inbound."""
    if not isinstance(payload, dict):
        return None
    return safe_e164(_msisdn(payload.get("from" if _outbound(payload) else "to")))


def status_outcome(status: str, duration_s: int | None) -> str | None:
    if status in MISSED_STATUSES:
        return "MISSED"
    if status == "answered":
        return "ANSWERED"
    if status == "completed":
        return "MISSED" if duration_s is not None and duration_s < SHORT_ANSWER_S else "ANSWERED"
    if status == "machine":
        return "VOICEMAIL"
    return None


def events(payload: Any, practice_id: str, received_ms: int) -> list[dict]:
    """The call event of one verified Vonage event (zero or one)."""
    if not isinstance(payload, dict):
        raise PayloadError("the event is not a JSON object")
    status = text(payload, "status", max_len=64)
    duration_s = seconds(payload.get("duration"), "duration")
    outcome = status_outcome(status, duration_s)
    if outcome is None:
        return []
    call_id = text(payload, "uuid", required=False, max_len=128) or text(payload, "call_uuid", max_len=128)
    outbound = _outbound(payload)
    practice_side, remote_side = ("from", "to") if outbound else ("to", "from")
    detail = text(payload, "detail", required=False, max_len=64)
    return [
        call_event(
            event_id=f"vonage:{call_id}:{outcome.lower()}",
            provider="vonage",
            event_type="CALL",
            outcome=outcome,
            provider_status=f"{status}/{detail}" if detail else status,
            practice_id=practice_id,
            caller=e164(_msisdn(payload.get(remote_side)), remote_side),
            called=e164(_msisdn(payload.get(practice_side)), practice_side),
            direction="OUTBOUND" if outbound else "INBOUND",
            provider_call_id=call_id,
            occurred_at=iso_millis(payload.get("timestamp"), "timestamp", received_ms),
            received_at=received_ms,
            duration_s=duration_s,
        )
    ]


async def handle_event(hook: Webhook) -> web.Response:
    """An event webhook: JSON, with `Authorization: Bearer <JWT>` whose `payload_hash` covers the body."""
    token = bearer_token(hook.request.headers.get("Authorization"))
    if token is None:
        raise Reject(403, "signature", "missing Authorization: Bearer <signed JWT>")
    raw = await hook.body()
    payload = await hook.json()
    number = practice_number(payload)
    practice = hook.practice_by_number(number)
    now_ms = hook.now_ms()
    hook.authenticate("vonage", practice, number, lambda secret: verify(token, secret, raw, now_ms / 1000))
    practice = await hook.require_practice(practice, number)
    await hook.produce(practice, lambda: events(payload, practice.id, now_ms))
    return web.Response(status=204)
