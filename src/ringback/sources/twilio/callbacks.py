"""Twilio's voice and messaging callbacks → canonical records (pure functions).

One call a patient makes to a practice that forwards with `<Dial>` sends several callbacks;
each becomes a call event of the same call (`provider_call_id` = the parent CallSid) with
the `signal` that says how much it knows (sources/canonical.py, docs/providers/twilio.md):

* parent status callback (`CallStatus` of the inbound call itself, signal "parent"):
  no-answer / busy / failed / canceled → MISSED, completed with a recording → VOICEMAIL,
  completed shorter than 5 s → MISSED, completed otherwise → ANSWERED; queued / ringing /
  in-progress → nothing (an inbound call is in-progress once Twilio runs its TwiML, before
  anybody picks up). Outbound calls (the practice calling back) keep signal null.
* `<Dial action>` (`DialCallStatus`, signal "leg", leg = `DialCallSid`): no-answer / busy /
  failed / canceled → MISSED; completed / answered → ANSWERED, or MISSED when
  `DialCallDuration` < 5 s (a carrier or voicemail pickup hung up at once).
* a dialed `<Number>` leg's status callback (`Direction=outbound-dial`, `ParentCallSid`):
  in-progress (the `answered` event) → ANSWERED, signal "leg", leg = its CallSid; with an
  `AnsweredBy` of a machine → MISSED, signal "machine"; its other statuses → nothing (the
  Dial action decides).
* `amdStatusCallback` (`AnsweredBy`): machine_start / machine_end_beep / machine_end_silence /
  machine_end_other / fax → MISSED, signal "machine", leg = its CallSid; human / unknown → nothing.
* `<Record action>` of the voicemail fallback (`RecordingUrl`) → VOICEMAIL, signal "parent"
  (recorded on the parent call; it upgrades the legs' MISSED).
* transcription callback: `TranscriptionText` → a TRANSCRIPTION event (outcome VOICEMAIL).
* incoming message: `Body`, `From`, `To`, `MessageSid` → an SMS event.
* message status callback (an SMS we sent): `MessageSid`, `MessageStatus`, `ErrorCode`
  → a message_status record; the practice and action come from the callback URL.

Leg and AMD callbacks carry no practice number (the AMD one no caller either): the
ready-made call flow puts the practice, the parent CallSid and both numbers in their
URLs' query (`Correlation`), which the signature covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from ringback.sources.canonical import SHORT_ANSWER_S, PayloadError, call_event, e164, safe_e164, seconds, text

MISSED_STATUSES = {"no-answer", "busy", "failed", "canceled"}
# `AnsweredBy` values of answering-machine detection that are not a person.
MACHINE_ANSWERS = {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
# Statuses of a dialed leg's `answered` event (Twilio sends in-progress; `answered` is DialCallStatus's word).
LEG_ANSWERED = {"in-progress", "answered"}
PERSON_ANSWERS = {"human", "unknown"}  # `unknown`: mostly a person who did not speak first


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


def _direction(params: Mapping[str, str]) -> str:
    # inbound | outbound-api | outbound-dial (a <Dial> leg); absent on some callbacks.
    return params.get("Direction") or "inbound"


def _outbound(params: Mapping[str, str]) -> bool:
    return _direction(params).startswith("outbound")


def is_dialed_leg(params: Mapping[str, str]) -> bool:
    """A status callback of a `<Dial>`ed `<Number>` (the practice side of a forwarded call)."""
    return _direction(params) == "outbound-dial"


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


def dial_outcome(dial_status: str, dial_duration_s: int | None) -> str:
    """What a `<Dial>` to the front desk was: MISSED, ANSWERED or OTHER (DialCallStatus)."""
    if dial_status in MISSED_STATUSES:
        return "MISSED"
    if dial_status in ("completed", "answered"):
        if dial_duration_s is not None and dial_duration_s < SHORT_ANSWER_S:
            return "MISSED"
        return "ANSWERED"
    return "OTHER"


def _parties(params: Mapping[str, str]) -> tuple[str, str, str]:
    """(direction, caller = the patient's side, called = the practice's side)."""
    if _outbound(params):
        return "OUTBOUND", e164(params.get("To"), "To"), e164(params.get("From"), "From")
    return "INBOUND", e164(params.get("From"), "From"), e164(params.get("To"), "To")


def voice_status_event(params: Mapping[str, str], practice_id: str, received_ms: int) -> dict:
    """A status callback of the call itself (`CallStatus` …) as a call event."""
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
        # An inbound call's own status says little when it was forwarded: Twilio answered it
        # to run the TwiML, so `completed` is the ringing time. Its legs' signals override it.
        signal="parent" if direction == "INBOUND" else None,
    )


def dial_action_event(params: Mapping[str, str], practice_id: str, received_ms: int) -> dict:
    """The `<Dial action>` request (made on the parent call: its CallSid, From, To) as a call event."""
    call_sid = text(params, "CallSid", max_len=64)
    dial_status = text(params, "DialCallStatus", max_len=32)
    duration_s = seconds(params.get("DialCallDuration"), "DialCallDuration")
    direction, caller, called = _parties(params)
    return call_event(
        event_id=f"twilio:{call_sid}:dial-{dial_status}",
        provider="twilio",
        event_type="CALL",
        outcome=dial_outcome(dial_status, duration_s),
        provider_status=f"dial-{dial_status}",
        practice_id=practice_id,
        caller=caller,
        called=called,
        direction=direction,
        provider_call_id=call_sid,
        occurred_at=_millis(params.get("Timestamp"), received_ms),
        received_at=received_ms,
        duration_s=duration_s,
        leg_id=text(params, "DialCallSid", required=False, max_len=64),
        signal="leg",
    )


def voicemail_event(params: Mapping[str, str], practice_id: str, received_ms: int) -> list[dict]:
    """The `<Record action>` of the voicemail fallback: VOICEMAIL once something was recorded."""
    call_sid = text(params, "CallSid", max_len=64)
    recording_url = text(params, "RecordingUrl", required=False, max_len=2048)
    if recording_url is None:
        return []
    direction, caller, called = _parties(params)
    return [
        call_event(
            event_id=f"twilio:{call_sid}:voicemail",
            provider="twilio",
            event_type="CALL",
            outcome="VOICEMAIL",
            provider_status="recorded",
            practice_id=practice_id,
            caller=caller,
            called=called,
            direction=direction,
            provider_call_id=call_sid,
            occurred_at=received_ms,
            received_at=received_ms,
            duration_s=seconds(params.get("RecordingDuration"), "RecordingDuration"),
            recording_url=recording_url,
            # Recorded on the parent call once the legs rang out: it upgrades their MISSED.
            signal="parent",
        )
    ]


# ---------------------------------------------------------------- legs: correlated through the callback URL
@dataclass(frozen=True)
class Correlation:
    """What the ready-made flow writes into the query of the callback URLs it gives Twilio,
    so that a leg's callbacks (which name neither the practice nor, for AMD, the caller)
    become events of the parent call, keyed `practice_id|caller`."""

    practice_id: str
    call_sid: str  # the parent call's CallSid
    caller: str  # the patient, E.164
    called: str  # the practice number called, E.164
    # Machine detection runs on the legs: a leg's `answered` is not yet a person (the AMD verdict says).
    amd: bool = False

    def query(self) -> str:
        fields = {"practice": self.practice_id, "call": self.call_sid, "caller": self.caller, "called": self.called}
        return urlencode({**fields, "amd": "1"} if self.amd else fields)

    @staticmethod
    def from_query(query: Mapping[str, str], practice_id: str) -> Correlation:
        """From a signed callback URL's query (the practice already found from it)."""
        return Correlation(
            practice_id=practice_id,
            call_sid=text(query, "call", max_len=64),
            caller=e164(query.get("caller"), "caller (callback URL)"),
            called=e164(query.get("called"), "called (callback URL)"),
            amd=query.get("amd") == "1",
        )


def _leg_event(
    params: Mapping[str, str], corr: Correlation, received_ms: int, *, kind: str, outcome: str, signal: str
) -> dict:
    leg_sid = text(params, "CallSid", max_len=64)
    parent = params.get("ParentCallSid")
    if parent and parent != corr.call_sid:
        raise PayloadError("ParentCallSid is not the call named in the callback URL")
    answered_by = params.get("AnsweredBy")
    status = text(params, "CallStatus", required=False, max_len=32) or "amd"
    return call_event(
        event_id=f"twilio:{corr.call_sid}:{kind}-{leg_sid}",
        provider="twilio",
        event_type="CALL",
        outcome=outcome,
        provider_status=f"leg-{answered_by}"[:64] if kind == "machine" else f"leg-{status}",
        practice_id=corr.practice_id,
        caller=corr.caller,
        called=corr.called,
        direction="INBOUND",
        provider_call_id=corr.call_sid,
        occurred_at=_millis(params.get("Timestamp"), received_ms),
        received_at=received_ms,
        leg_id=leg_sid,
        signal=signal,
    )


def amd_events(params: Mapping[str, str], corr: Correlation, received_ms: int) -> list[dict]:
    """An `amdStatusCallback` (or any leg callback carrying `AnsweredBy`): a machine → MISSED.
    `human` / `unknown` on the AMD callback of a flow with machine detection: the person the
    leg's `answered` only announced → ANSWERED (the same event a leg's `answered` is without AMD)."""
    answered_by = text(params, "AnsweredBy", required=False, max_len=64)
    if answered_by in MACHINE_ANSWERS:
        return [_leg_event(params, corr, received_ms, kind="machine", outcome="MISSED", signal="machine")]
    if corr.amd and answered_by in PERSON_ANSWERS and "CallStatus" not in params:  # the amdStatusCallback itself
        return [_leg_event(params, corr, received_ms, kind="answered", outcome="ANSWERED", signal="leg")]
    return []


def leg_status_events(params: Mapping[str, str], corr: Correlation, received_ms: int) -> list[dict]:
    """A dialed `<Number>` leg's status callback: `answered` by a person → ANSWERED at once
    (with machine detection on, the AMD verdict says whether it was a person: amd_events)."""
    status = text(params, "CallStatus", max_len=32)
    machine = amd_events(params, corr, received_ms)
    if machine:
        return machine
    if status in LEG_ANSWERED and not corr.amd:
        return [_leg_event(params, corr, received_ms, kind="answered", outcome="ANSWERED", signal="leg")]
    return []  # initiated, ringing, completed, no-answer ...: the Dial action decides the call


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
