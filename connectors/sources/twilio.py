"""Twilio Programmable Voice and Messaging webhooks → canonical call events.

Pure functions from the posted form fields to a call-event record; the gateway
checks the signature and does the I/O.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from twilio.request_validator import RequestValidator

from ringback.settings import to_e164

MISSED_STATUSES = {"no-answer", "busy", "failed", "canceled"}
# An answered call this short is a hang-up on the greeting or a carrier pickup, not a conversation.
SHORT_ANSWER_S = 5


class PayloadError(ValueError):
    """An authenticated payload we cannot turn into an event (400 + dead letter)."""


def signature_valid(auth_token: str, url: str, params, signature: str | None) -> bool:
    """`params`: the form fields (a dict, or a multidict when names repeat), or the raw
    body of a JSON request (signed through `bodySHA256` in the URL)."""
    if not signature:
        return False
    return RequestValidator(auth_token).validate(url, params, signature)


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise PayloadError(f"missing field {name}")
    return value


def _millis(rfc2822: str | None, fallback_ms: int) -> int:
    if not rfc2822:
        return fallback_ms
    try:
        return int(parsedate_to_datetime(rfc2822).timestamp() * 1000)
    except (TypeError, ValueError):
        raise PayloadError(f"Timestamp is not an RFC 2822 date: {rfc2822[:40]!r}") from None


def _number(params: dict[str, str], name: str) -> str:
    try:
        return to_e164(_required(params, name))
    except ValueError as exc:
        raise PayloadError(f"{name}: {exc}") from None


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


def voice_status_event(params: dict[str, str], practice_id: str, received_ms: int) -> dict:
    """A voice status callback (`CallStatus` …) as a call event."""
    call_sid = _required(params, "CallSid")
    status = _required(params, "CallStatus")
    direction = "INBOUND" if params.get("Direction", "inbound") == "inbound" else "OUTBOUND"
    duration = params.get("CallDuration")
    try:
        duration_s = int(duration) if duration not in (None, "") else None
    except ValueError:
        raise PayloadError(f"CallDuration is not a number: {duration[:20]!r}") from None
    has_recording = bool(params.get("RecordingSid") or params.get("RecordingUrl"))
    return {
        "event_id": f"twilio:{call_sid}:{status}",
        "provider": "twilio",
        "event_type": "CALL",
        "outcome": call_outcome(status, duration_s, has_recording),
        "provider_status": status,
        "practice_id": practice_id,
        "caller": _number(params, "From"),
        "called": _number(params, "To"),
        "direction": direction,
        "provider_call_id": call_sid,
        "occurred_at": _millis(params.get("Timestamp"), received_ms),
        "received_at": received_ms,
        "duration_s": duration_s,
        "recording_url": params.get("RecordingUrl") or None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
    }
