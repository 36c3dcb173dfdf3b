"""The ready-made call flow: the TwiML ringback answers a practice number's incoming call with.

A practice with `call_flow` in the practices file points its Twilio number's incoming-call
webhook at `POST /webhooks/twilio/voice/incoming`. The answer rings the front-desk phones
(`<Dial>`, one `<Number>` each, for `ring_seconds`) with every callback pointed back at
ringback, so each signal of docs/providers/twilio.md arrives correlated with the call:

* the `<Dial action>` → /voice/dial: the verdict of the forward; its answer continues the
  call: the voicemail fallback (`<Say>` greeting, `<Record>` with transcription) when
  nobody answered, `<Hangup/>` when somebody did;
* each `<Number>`'s status callback (`answered`, `completed`) → /voice/status and, with
  machine detection on, its `amdStatusCallback` → /voice/amd;
* `<Record action>` → /voice/voicemail, `transcribeCallback` → /voice/transcription.

Callback URLs carry `Correlation.query()` (the practice, the parent CallSid, the caller and
the practice number): leg and AMD callbacks name neither the practice nor the caller, and
Twilio's signature covers the URL, so the query is trusted. Pure: values in, XML out.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from ringback.domain.practice import CallFlow
from ringback.sources.twilio.callbacks import Correlation

VOICE_INCOMING = "/webhooks/twilio/voice/incoming"
VOICE_STATUS = "/webhooks/twilio/voice/status"
VOICE_DIAL = "/webhooks/twilio/voice/dial"
VOICE_AMD = "/webhooks/twilio/voice/amd"
VOICE_VOICEMAIL = "/webhooks/twilio/voice/voicemail"
VOICE_TRANSCRIPTION = "/webhooks/twilio/voice/transcription"


def _url(base_url: str, path: str, query: str) -> str:
    return f"{base_url.rstrip('/')}{path}?{query}"


def incoming_twiml(flow: CallFlow, base_url: str, practice_id: str, corr: Correlation | None) -> str:
    """Ring the front desk. `corr` is None when the caller has no number to key events by
    (withheld): the phones still ring, without the leg callbacks that could not be used."""
    query = corr.query() if corr else urlencode({"practice": practice_id})
    response = VoiceResponse()
    dial = response.dial(
        action=_url(base_url, VOICE_DIAL, query),
        method="POST",
        timeout=flow.ring_seconds,
        # The caller hears ringing until a phone answers (not a connected silence).
        answer_on_bridge=True,
    )
    for number in flow.front_desk:
        legs: dict[str, str] = {}
        if corr is not None:
            legs = {
                "status_callback": _url(base_url, VOICE_STATUS, query),
                "status_callback_event": "answered completed",
                "status_callback_method": "POST",
            }
            if flow.machine_detection:
                legs |= {
                    "machine_detection": "Enable",
                    "amd_status_callback": _url(base_url, VOICE_AMD, query),
                    "amd_status_callback_method": "POST",
                }
        dial.number(number, **legs)
    return str(response.to_xml())


def after_dial_twiml(flow: CallFlow | None, base_url: str, query: str, answered: bool) -> str:
    """The `<Dial action>`'s answer: hang up after a conversation; otherwise the voicemail
    fallback (a practice without `call_flow` has none: the call ends)."""
    response = VoiceResponse()
    if answered or flow is None:
        response.hangup()
        return str(response.to_xml())
    response.say(flow.voicemail_greeting)
    response.record(
        action=_url(base_url, VOICE_VOICEMAIL, query),
        method="POST",
        max_length=flow.voicemail_max_seconds,
        play_beep=True,
        transcribe=True,
        transcribe_callback=_url(base_url, VOICE_TRANSCRIPTION, query),
    )
    return str(response.to_xml())


def hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())
