"""Twilio Programmable Voice and Messaging webhooks → canonical records.

The request handlers the gateway routes Twilio's webhooks to (`handle_*`: the
`X-Twilio-Signature` check, then what to produce), and the pure functions they use, from
the posted form fields to a call-event (or message-status) record:

* voice status callback: `CallStatus` no-answer / busy / failed / canceled → MISSED,
  completed with a recording → VOICEMAIL, completed shorter than 5 s → MISSED,
  completed otherwise → ANSWERED; queued / ringing / in-progress → nothing.
* transcription callback: `TranscriptionText` → a TRANSCRIPTION event (outcome VOICEMAIL).
* incoming message: `Body`, `From`, `To`, `MessageSid` → an SMS event.
* message status callback (an SMS we sent): `MessageSid`, `MessageStatus`, `ErrorCode`
  → a message_status record; the practice and action come from the callback URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator

from ringback.domain.practice import Practice
from ringback.sources.canonical import SHORT_ANSWER_S, PayloadError, call_event, e164, safe_e164, seconds, text
from ringback.sources.webhook import Reject, Webhook

__all__ = [
    "PayloadError",
    "SHORT_ANSWER_S",
    "MISSED_STATUSES",
    "signature_valid",
    "practice_number",
    "call_outcome",
    "voice_status_event",
    "transcription_event",
    "sms_event",
    "message_status_record",
    "handle_voice_status",
    "handle_transcription",
    "handle_sms_inbound",
    "handle_sms_status",
]

MISSED_STATUSES = {"no-answer", "busy", "failed", "canceled"}


def signature_valid(auth_token: str, url: str, params: Mapping[str, Any] | bytes, signature: str | None) -> bool:
    """`params`: the form fields (a dict, or a multidict when names repeat), or the raw
    body of a JSON request (signed through `bodySHA256` in the URL)."""
    if not signature:
        return False
    try:
        return RequestValidator(auth_token).validate(url, params, signature)
    except (ValueError, TypeError, UnicodeError):
        # A URL or field the validator cannot even read (a hostile Host header, an
        # out-of-range port) is not a valid signature.
        return False


def _outbound(params: Mapping[str, str]) -> bool:
    # inbound | outbound-api | outbound-dial (a <Dial> leg); absent on some callbacks.
    return (params.get("Direction") or "inbound").startswith("outbound")


def practice_number(params: Mapping[str, str]) -> str | None:
    """The practice's own number in a voice / transcription / SMS callback, in E.164:
    `To` when the call came in, `From` when the practice placed it. None if unusable."""
    return safe_e164(params.get("From") if _outbound(params) else params.get("To"))


def _millis(rfc2822: str | None, fallback_ms: int) -> int:
    if not rfc2822:
        return fallback_ms
    try:
        return int(parsedate_to_datetime(rfc2822).timestamp() * 1000)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise PayloadError(f"Timestamp is not an RFC 2822 date: {rfc2822[:40]!r}") from None


def call_outcome(status: str, duration_s: int | None, has_recording: bool) -> str:
    """What the call was for the practice: MISSED, VOICEMAIL, ANSWERED or OTHER."""
    if status in MISSED_STATUSES:
        return "MISSED"
    if status == "completed":
        if has_recording:
            return "VOICEMAIL"
        if duration_s is not None and duration_s < SHORT_ANSWER_S:
            return "MISSED"
        return "ANSWERED"
    return "OTHER"


def _parties(params: Mapping[str, str]) -> tuple[str, str, str]:
    """(direction, caller = the patient's side, called = the practice's side)."""
    if _outbound(params):
        return "OUTBOUND", e164(params.get("To"), "To"), e164(params.get("From"), "From")
    return "INBOUND", e164(params.get("From"), "From"), e164(params.get("To"), "To")


def voice_status_event(params: Mapping[str, str], practice_id: str, received_ms: int) -> dict:
    """A voice status callback (`CallStatus` …) as a call event."""
    call_sid = text(params, "CallSid", max_len=64)
    status = text(params, "CallStatus", max_len=32)
    duration_s = seconds(params.get("CallDuration"), "CallDuration")
    has_recording = bool(params.get("RecordingSid") or params.get("RecordingUrl"))
    direction, caller, called = _parties(params)
    return call_event(
        event_id=f"twilio:{call_sid}:{status}",
        provider="twilio",
        event_type="CALL",
        outcome=call_outcome(status, duration_s, has_recording),
        provider_status=status,
        practice_id=practice_id,
        caller=caller,
        called=called,
        direction=direction,
        provider_call_id=call_sid,
        occurred_at=_millis(params.get("Timestamp"), received_ms),
        received_at=received_ms,
        duration_s=duration_s,
        recording_url=text(params, "RecordingUrl", required=False, max_len=2048),
    )


def transcription_event(params: Mapping[str, str], practice_id: str, received_ms: int) -> dict:
    """A transcription callback (`transcribeCallback` of <Record>) as a TRANSCRIPTION event.

    A failed transcription (`TranscriptionStatus=failed`, no text) still says a voicemail
    was left: it becomes the same event with no transcript."""
    call_sid = text(params, "CallSid", max_len=64)
    status = text(params, "TranscriptionStatus", required=False, max_len=32) or "completed"
    transcript = params.get("TranscriptionText")
    if status == "completed" and transcript is None:
        raise PayloadError("missing field TranscriptionText")
    direction, caller, called = _parties(params)
    return call_event(
        event_id=f"twilio:{call_sid}:transcription",
        provider="twilio",
        event_type="TRANSCRIPTION",
        outcome="VOICEMAIL",
        provider_status=status,
        practice_id=practice_id,
        caller=caller,
        called=called,
        direction=direction,
        provider_call_id=call_sid,
        occurred_at=received_ms,
        received_at=received_ms,
        recording_url=text(params, "RecordingUrl", required=False, max_len=2048),
        transcript=transcript or None,
    )


def sms_event(params: Mapping[str, str], practice_id: str, received_ms: int) -> dict:
    """An incoming message (`Body`, `From`, `To`, `MessageSid`) as an SMS event.
    The practice is the `To`; an MMS without text has an empty Body (kept as "")."""
    message_sid = text(params, "MessageSid", max_len=64)
    body = params.get("Body")
    if body is None:
        raise PayloadError("missing field Body")
    return call_event(
        event_id=f"twilio:{message_sid}:sms",
        provider="twilio",
        event_type="SMS",
        outcome=None,
        provider_status=text(params, "SmsStatus", required=False, max_len=32) or "received",
        practice_id=practice_id,
        caller=e164(params.get("From"), "From"),
        called=e164(params.get("To"), "To"),
        direction="INBOUND",
        provider_call_id=message_sid,
        occurred_at=received_ms,
        received_at=received_ms,
        sms_body=body,
        sms_id=message_sid,
    )


def message_status_record(params: Mapping[str, str], practice_id: str, action_id: str | None, received_ms: int) -> dict:
    """A status callback of an SMS we sent (schemas/message_status.avsc): `To` is the patient."""
    return {
        "message_sid": text(params, "MessageSid", max_len=64),
        "status": text(params, "MessageStatus", max_len=32),
        "error_code": text(params, "ErrorCode", required=False, max_len=16),
        "practice_id": practice_id,
        "recipient": e164(params.get("To"), "To"),
        "action_id": action_id or None,
        "received_at": received_ms,
    }


# ---------------------------------------------------------------------------------- requests
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# What a callback of one kind becomes: (the form fields, the practice id, received at) → a call event.
CallEventOf = Callable[[Mapping[str, str], str, int], dict]


def _first_values(form: Mapping[str, Any]) -> dict[str, str]:
    """Each field's first value (the signature covers every value; the records use the first)."""
    params: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(value, str):
            params.setdefault(key, value)
    return params


async def _signed(hook: Webhook, practice: Practice | None, number: str | None, form: Mapping[str, Any]) -> Practice:
    """The practice, once `X-Twilio-Signature` is valid for its auth token (403 / 404 otherwise)."""
    url = hook.public_url()
    signature = hook.request.headers.get("X-Twilio-Signature")
    if not signature:
        raise Reject(403, "signature", "missing X-Twilio-Signature")
    hook.authenticate("twilio", practice, number, lambda token: signature_valid(token, url, form, signature))
    return await hook.require_practice(practice, number)


async def _call_event(hook: Webhook, event_of: CallEventOf) -> None:
    form = await hook.form()
    params = _first_values(form)
    number = practice_number(params)
    practice = await _signed(hook, hook.practice_by_number(number), number, form)
    await hook.produce(practice, lambda: [event_of(params, practice.id, hook.now_ms())])


async def handle_voice_status(hook: Webhook) -> web.Response:
    await _call_event(hook, voice_status_event)
    return web.Response(status=204)


async def handle_transcription(hook: Webhook) -> web.Response:
    await _call_event(hook, transcription_event)
    return web.Response(status=204)


async def handle_sms_inbound(hook: Webhook) -> web.Response:
    await _call_event(hook, sms_event)
    # Empty TwiML: no automatic reply (the stream app decides what to send).
    return web.Response(status=200, text=TWIML_EMPTY, content_type="text/xml")


async def handle_sms_status(hook: Webhook) -> web.Response:
    """Delivery receipt of an SMS we sent. The sinks put `?practice=<id>&action=<id>` in
    the status-callback URL; the signature covers the URL, so the query is trusted."""
    form = await hook.form()
    params = _first_values(form)
    query = hook.request.query
    practice_id = query.get("practice")
    number: str | None
    if practice_id:
        practice, number = hook.practice_by_id(practice_id), None
        if practice is None:
            # Check with the account-wide token when there is one (403 on forgery), then 404.
            token = hook.secret("twilio", None)
            signature = hook.request.headers.get("X-Twilio-Signature")
            if token and not signature_valid(token, hook.public_url(), form, signature):
                raise Reject(403, "signature", "missing or invalid X-Twilio-Signature")
            raise Reject(404, "unknown_practice", "the practice in the callback URL is not configured")
    else:  # a callback URL without the query: the sender number may still be a practice's
        number = safe_e164(params.get("From"))
        practice = hook.practice_by_number(number)
    practice = await _signed(hook, practice, number, form)
    try:
        action_id = query.get("action")
        if action_id is not None and len(action_id) > 256:
            raise PayloadError("action is longer than 256 characters")
        record = message_status_record(params, practice.id, action_id, hook.now_ms())
    except PayloadError as exc:
        raise await hook.malformed(exc, practice) from None
    await hook.produce_message_status(record)
    return web.Response(status=204)
