"""RingCentral telephony-session notifications → canonical call events.

The request handler the gateway routes RingCentral's webhook to (`handle_notification`)
and the pure functions it uses. What RingCentral sends (its developer guide: "Telephony
Session Notifications", the account telephony-sessions event; docs/providers/ringcentral.md):

* Subscription handshake: a POST with a `Validation-Token` header and an empty body,
  answered 200 with the same header (`validation_token`).
* Notifications: JSON `{uuid, event, timestamp, subscriptionId, body: {sequence,
  telephonySessionId, sessionId, eventTime, origin, parties: [...]}}`, usually one party
  per notification, several notifications per session, not necessarily in `sequence`
  order. A party has `id`, `extensionId` (absent on the PSTN side of a call), `direction`,
  `from`/`to` (`phoneNumber`, `name`, `extensionId`, `deviceId`), `status.code` (Setup,
  Proceeding, Answered, Hold, Parked, Disconnected, Gone, VoiceMail, VoiceMailScreening,
  FaxReceive), `status.reason` and `missedCall`.
* Authenticity: the subscription's `deliveryMode.verificationToken` comes back as a
  `Verification-Token` header on every notification (no HMAC); `token_valid` compares it
  in constant time.

Who is who in a session. A party an extension owns (`extensionId`: a person, an IVR menu,
a call queue or ring-group member) that is `Inbound` receives a call; the PSTN side of a
call from outside has no extension and is labelled `Outbound` (the caller's own party:
`from` = the caller, `to` = the practice's number). Either way a party of a call INTO the
practice has the caller in `from` and the practice in `to`; a party of a call OUT of it
(an extension's `Outbound` party, the PSTN party it rings) the other way round. A party
whose other side is an extension (an `extensionId`, or a short extension number such as
`11101`) belongs to an internal call.

Mapping, per party of this practice (its practice-side number is one of the practice's):
* call into the practice, a party an extension owns: Disconnected with a reason that hands
  the call on (pickup, transfer, an agent answered, the caller dialled an extension) →
  nothing; `missedCall`, or Disconnected with NoAnswer / TargetBusy / Timeout / Rejected
  → MISSED (Cancelled only with `missedCall`: a member's ringing is cancelled when another
  member answers); VoiceMail → VOICEMAIL; Answered → ANSWERED (a person picked up: an
  IVR menu's party goes from Setup to Disconnected without being Answered);
* call into the practice, the caller's own party: `missedCall` or a no-answer reason →
  MISSED; its Answered only says RingCentral took the call (an IVR greeting, queue music)
  → nothing;
* all of those are "leg" signals (schemas/call_event.avsc) with `leg_id` = the party id:
  the worker decides the call from all of them (a person's ANSWERED stays, whatever order
  the notifications come in; a ring-group member that rang out while another answered
  does not make the call missed);
* call out of the practice: the PSTN party being Answered (the patient picked up) →
  ANSWERED, the provider's verdict on the whole call (signal null). An extension's own
  `Outbound` party is Answered as soon as RingCentral routes the call: nothing.
Event id: `ringcentral:<telephonySessionId>:<missed|voicemail|answered>`: the first signal
of each outcome decides what it can (a later one of the same outcome changes nothing), and
a redelivered notification gives the same id.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from ringback.sources.canonical import PayloadError, call_event, e164, iso_millis, safe_e164, text
from ringback.sources.webhook import Reject, Webhook

# Disconnect reasons of a party that did not answer. Not "Cancelled": a ring-group member's
# ringing is cancelled when another member picks up; RingCentral flags the party
# `missedCall` when the cancel was the caller hanging up.
MISSED_REASONS = {"NoAnswer", "TargetBusy", "Timeout", "Rejected"}
# Disconnect reasons of a party that handed the call on: someone else has it now.
HANDED_ON_REASONS = {
    "Pickup",
    "TakeOver",
    "AgentAnswered",
    "BlindTransfer",
    "AttendedTransfer",
    "RccTransfer",
    "DtmfTransfer",
    "CallerInputRedirect",
    "CallRedirected",
    "CallFlip",
    "CallSwitch",
    "CallPark",
    "ParkLocation",
    "Supervising",
}
LEG = "leg"
IGNORED = Counter(
    "ringback_ringcentral_ignored_total",
    "Authentic RingCentral notifications acknowledged without a record or dead letter, by reason",
    ["reason"],
)
# What a validation token may look like (RingCentral sends a UUID); we echo it in a header.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,512}$")
# An extension number (`101`, `11101`), as internal calls carry instead of a phone number.
_EXTENSION_NUMBER = re.compile(r"^\*?\d{1,6}$")


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


# ---------------------------------------------------------------- parties


def _parties(notification: Any) -> list[dict]:
    body = notification.get("body") if isinstance(notification, dict) else None
    parties = body.get("parties") if isinstance(body, dict) else None
    if not isinstance(parties, list):
        return []
    return [p for p in parties if isinstance(p, dict)]


def _side(party: dict, name: str) -> dict:
    """An object field of a party (`from`, `to`, `status`, `owner`), or {} when absent or not an object."""
    side = party.get(name)
    return side if isinstance(side, dict) else {}


def _owned(party: dict) -> bool:
    """Whether an extension of the account owns the party (the PSTN side of a call has none)."""
    return bool(party.get("extensionId") or _side(party, "owner").get("extensionId"))


def _outbound(party: dict) -> bool:
    return str(party.get("direction") or "Inbound").lower() == "outbound"


def call_into_practice(party: dict) -> bool:
    """An extension's Inbound party, or the caller's own (PSTN, Outbound) party: a call into
    the practice, caller in `from`, practice in `to`. Otherwise a call out of it."""
    return _owned(party) != _outbound(party)


def _practice_side(party: dict) -> dict:
    return _side(party, "to" if call_into_practice(party) else "from")


def _remote_name(party: dict) -> str:
    return "from" if call_into_practice(party) else "to"


def internal(party: dict) -> bool:
    """Whether the other side of the party is an extension of the account, not a phone line outside."""
    remote = _side(party, _remote_name(party))
    number = remote.get("phoneNumber")
    return bool(remote.get("extensionId")) or (isinstance(number, str) and bool(_EXTENSION_NUMBER.match(number)))


def internal_only(notification: Any) -> bool:
    """A notification about calls between extensions only (no patient on the line)."""
    parties = _parties(notification)
    return bool(parties) and all(internal(p) for p in parties)


def practice_numbers(notification: Any) -> list[str]:
    """Every E.164 number of the parties, the practice-side ones first (the `to` of a call
    into the practice, the `from` of a call out of it): the first one a practice owns finds it."""
    parties = _parties(notification)
    sides = [_practice_side(p) for p in parties] + [_side(p, _remote_name(p)) for p in parties]
    out: list[str] = []
    for side in sides:
        number = safe_e164(side.get("phoneNumber"))
        if number and number not in out:
            out.append(number)
    return out


def party_outcome(party: dict) -> str | None:
    """What one party says about the call (see the module docstring), or None."""
    status = _side(party, "status")
    code, reason = status.get("code"), status.get("reason")
    if not call_into_practice(party):
        return "ANSWERED" if code == "Answered" and not _owned(party) else None
    if code == "Disconnected" and reason in HANDED_ON_REASONS:
        return None
    if code == "VoiceMail":  # the party is flagged missedCall too: the voicemail says more
        return "VOICEMAIL"
    if party.get("missedCall") is True or (code == "Disconnected" and reason in MISSED_REASONS):
        return "MISSED"
    if code == "Answered" and _owned(party):
        return "ANSWERED"
    return None


def _provider_status(party: dict) -> str:
    status = _side(party, "status")
    provider_status = "/".join(str(s)[:40] for s in (status.get("code"), status.get("reason")) if s)
    if party.get("missedCall") is True:
        provider_status = (provider_status + "/missedCall").lstrip("/")
    return provider_status or "unknown"


def events(notification: Any, practice_id: str, practice_numbers_e164: Iterable[str], received_ms: int) -> list[dict]:
    """The call events of one notification, for the parties on this practice's numbers.
    Parties of other practices are left out (this practice's token cannot vouch for them),
    and so are parties of internal calls."""
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
        if called not in own or internal(party):
            continue
        outcome = party_outcome(party)
        if outcome is None:
            continue
        into = call_into_practice(party)
        remote = _remote_name(party)
        caller = e164(_side(party, remote).get("phoneNumber"), f"body.parties.{index}.{remote}.phoneNumber")
        event_id = f"ringcentral:{session_id}:{outcome.lower()}"
        out.setdefault(
            event_id,
            call_event(
                event_id=event_id,
                provider="ringcentral",
                event_type="CALL",
                outcome=outcome,
                provider_status=_provider_status(party),
                practice_id=practice_id,
                caller=caller,
                called=called,
                direction="INBOUND" if into else "OUTBOUND",
                provider_call_id=session_id,
                occurred_at=occurred,
                received_at=received_ms,
                leg_id=text(party, "id", required=False, max_len=128) if into else None,
                signal=LEG if into else None,
            ),
        )
    return list(out.values())


# ---------------------------------------------------------------- the request


async def handle_notification(hook: Webhook) -> web.Response:
    """A subscription handshake (echo the token, produce nothing) or a notification.

    Once a notification is authentic it is answered 200 whatever it holds: RingCentral
    retries a notification that fails and may end a subscription whose webhook keeps
    failing. What cannot become a call event goes to the dead-letter topic instead;
    internal calls are only counted."""
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
    if practice is None and internal_only(notification):
        # Extension numbers only: no practice number says whose token to check, so try each.
        vouched, practice = hook.vouched("ringcentral", lambda token: token_valid(token, received))
        if not vouched:
            raise Reject(403, "signature", "missing or invalid Verification-Token")
    else:
        hook.authenticate("ringcentral", practice, number, lambda token: token_valid(token, received))
    if internal_only(notification):
        IGNORED.labels("internal_call").inc()
        return web.Response(status=200)
    if practice is None:  # answered 200 once dead-lettered (the registry's dead_lettered_status)
        raise await hook.malformed(PayloadError("no practice owns a number of this notification"), None)
    found = practice
    await hook.produce(found, lambda: events(notification, found.id, found.phone_numbers, hook.now_ms()))
    return web.Response(status=200)
