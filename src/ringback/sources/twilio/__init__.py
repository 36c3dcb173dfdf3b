"""Twilio Programmable Voice and Messaging: webhooks in, canonical records out.

* `callbacks.py`: pure mappings, from each callback's form fields to call events
  (parent status, `<Dial action>`, a dialed leg's status, AMD, voicemail, transcription,
  SMS) or message-status records; the signature check.
* `call_flow.py`: the ready-made call flow's TwiML (ring the front desk, then voicemail).
* `handlers.py`: the request handlers the gateway's registry routes to.

docs/providers/twilio.md says what each signal means and how to configure Twilio.
"""

from ringback.sources.twilio.callbacks import (
    MACHINE_ANSWERS,
    MISSED_STATUSES,
    Correlation,
    PayloadError,
    amd_events,
    call_outcome,
    dial_action_event,
    dial_outcome,
    is_dialed_leg,
    leg_status_events,
    message_status_record,
    practice_number,
    signature_valid,
    sms_event,
    transcription_event,
    voice_status_event,
    voicemail_event,
)
from ringback.sources.twilio.handlers import (
    TWIML_EMPTY,
    handle_amd,
    handle_dial,
    handle_incoming,
    handle_sms_inbound,
    handle_sms_status,
    handle_transcription,
    handle_voice_status,
    handle_voicemail,
)

__all__ = [
    "MACHINE_ANSWERS",
    "MISSED_STATUSES",
    "TWIML_EMPTY",
    "Correlation",
    "PayloadError",
    "amd_events",
    "call_outcome",
    "dial_action_event",
    "dial_outcome",
    "is_dialed_leg",
    "leg_status_events",
    "message_status_record",
    "practice_number",
    "signature_valid",
    "sms_event",
    "transcription_event",
    "voice_status_event",
    "voicemail_event",
    "handle_amd",
    "handle_dial",
    "handle_incoming",
    "handle_sms_inbound",
    "handle_sms_status",
    "handle_transcription",
    "handle_voice_status",
    "handle_voicemail",
]
