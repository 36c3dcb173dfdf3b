"""RingCentral telephony-session notifications → canonical call events.

The request handler the gateway routes RingCentral's webhook to (`handle_notification`)
and the pure functions it uses. What RingCentral sends (see RingCentral's documentation;
there are no redistributable samples):

* Subscription handshake: a POST with a `Validation-Token` header and an empty body,
  answered 200 with the same header (`validation_token`).
* Notifications: JSON `{uuid, event, timestamp, subscriptionId, body: {telephonySessionId,
  sessionId, eventTime, origin, parties: [...]}}`; each party has `id`, `direction`
  (Inbound/Outbound), `from`/`to` (`phoneNumber`, `extensionId`), `status.code`
  (Setup, Proceeding, Answered, Disconnected, Gone, Parked, Hold, VoiceMail, ...),
  `status.reason` on Disconnected and `missedCall: true` on missed calls.
* Authenticity: the subscription's `deliveryMode.verificationToken` comes back as a
  `Verification-Token` header on every notification (no HMAC); `token_valid` compares it
  in constant time.

Mapping per party: `missedCall: true`, or Disconnected with reason NoAnswer / TargetBusy /
Timeout / Rejected / Cancelled → MISSED; VoiceMail → VOICEMAIL; Answered → ANSWERED;
anything else → nothing. Event id: `ringcentral:<telephonySessionId>:<missed|voicemail|answered>`,
so the several notifications RingCentral sends for one call (a party per ring-group
member, Disconnected after missedCall, redeliveries) collapse to one event per outcome.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ringback.sources.canonical import PayloadError, call_event, e164, iso_millis, safe_e164, text
from ringback.sources.webhook import Reject, Webhook

MISSED_REASONS = {"NoAnswer", "TargetBusy", "Timeout", "Rejected", "Cancelled"}
# What a validation token may look like (RingCentral sends a UUID); we echo it in a header.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,512}$")


def validation_token(header: str | None) -> str | None:
    """The handshake token to echo, or None when the header is absent or not a plain token."""
    if header is None or not _TOKEN.match(header):
        return None
    return header


def token_valid(expected: str, received: str | None) -> bool:
    """`Verification-Token` against the configured token, in constant time."""
    if not received or not expected:
        return False
    return hmac.compare_digest(received.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def _parties(notification: Any) -> list[dict]:
    body = notification.get("body") if isinstance(notification, dict) else None
    parties = body.get("parties") if isinstance(body, dict) else None
    if not isinstance(parties, list):
        return []
    return [p for p in parties if isinstance(p, dict)]


def _side(party: dict, name: str) -> dict:
    """An object field of a party (`from`, `to`, `status`), or {} when absent or not an object."""
    side = party.get(name)
    return side if isinstance(side, dict) else {}


def _outbound(party: dict) -> bool:
    return str(party.get("direction") or "Inbound").lower() == "outbound"


def _practice_side(party: dict) -> dict:
    return _side(party, "from" if _outbound(party) else "to")


def _remote_side(party: dict) -> dict:
    return _side(party, "to" if _outbound(party) else "from")


def practice_numbers(notification: Any) -> list[str]:
    """The practice-side numbers (E.164) of the parties, in order: `to` of an inbound
    party (the number dialled), `from` of an outbound one. Used to find the practice."""
    out: list[str] = []
    for party in _parties(notification):
        number = safe_e164(_practice_side(party).get("phoneNumber"))
        if number and number not in out:
            out.append(number)
    return out


def party_outcome(party: dict) -> str | None:
    status = _side(party, "status")
    code, reason = status.get("code"), status.get("reason")
    if party.get("missedCall") is True or (code == "Disconnected" and reason in MISSED_REASONS):
        return "MISSED"
    if code == "VoiceMail":
        return "VOICEMAIL"
    if code == "Answered":
        return "ANSWERED"
    return None


def events(notification: Any, practice_id: str, practice_numbers_e164: Iterable[str], received_ms: int) -> list[dict]:
    """The call events of one notification, for the parties on this practice's numbers.
    Parties of other practices are left out (this practice's token cannot vouch for them)."""
    if not isinstance(notification, dict):
        raise PayloadError("the notification is not a JSON object")
    body = notification.get("body")
    if not isinstance(body, dict):
        raise PayloadError("missing field body")
    session_id = text(body, "telephonySessionId", max_len=128)
    occurred = iso_millis(body.get("eventTime") or notification.get("timestamp"), "body.eventTime", received_ms)
    own = set(practice_numbers_e164)
    out: dict[str, dict] = {}
    for index, party in enumerate(_parties(notification)):
        called = safe_e164(_practice_side(party).get("phoneNumber"))
        if called not in own:
            continue
        outcome = party_outcome(party)
        if outcome is None:
            continue
        remote = _remote_side(party)
        if not remote.get("phoneNumber") and remote.get("extensionId"):
            continue  # an internal extension-to-extension call: no patient on the line
        direction = "OUTBOUND" if _outbound(party) else "INBOUND"
        caller = e164(
            remote.get("phoneNumber"), f"body.parties.{index}.{'to' if _outbound(party) else 'from'}.phoneNumber"
        )
        status = _side(party, "status")
        provider_status = "/".join(str(s)[:40] for s in (status.get("code"), status.get("reason")) if s)
        if party.get("missedCall") is True and "missed" not in provider_status.lower():
            provider_status = (provider_status + "/missedCall").lstrip("/")
        event_id = f"ringcentral:{session_id}:{outcome.lower()}"
        out.setdefault(
            event_id,
            call_event(
                event_id=event_id,
                provider="ringcentral",
                event_type="CALL",
                outcome=outcome,
                provider_status=provider_status or "unknown",
                practice_id=practice_id,
                caller=caller,
                called=called,
                direction=direction,
                provider_call_id=session_id,
                occurred_at=occurred,
                received_at=received_ms,
            ),
        )
    return list(out.values())


async def handle_notification(hook: Webhook) -> web.Response:
    """A subscription handshake (echo the token, produce nothing) or a notification."""
    headers = hook.request.headers
    if "Validation-Token" in headers:
        token = validation_token(headers.get("Validation-Token"))
        if token is None:
            raise Reject(400, "validation_token", "Validation-Token is not a plain token")
        return web.Response(status=200, headers={"Validation-Token": token})
    received = headers.get("Verification-Token")
    if not received:
        raise Reject(403, "signature", "missing Verification-Token")
    notification = await hook.json()
    practice, number = hook.first_practice(practice_numbers(notification))
    hook.authenticate("ringcentral", practice, number, lambda token: token_valid(token, received))
    practice = await hook.require_practice(practice, number)
    await hook.produce(practice, lambda: events(notification, practice.id, practice.phone_numbers, hook.now_ms()))
    return web.Response(status=200)
