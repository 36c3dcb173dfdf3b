"""Webhooks as the phone providers send them, signed, for the gateway tests.

The builders live in `src/ringback/dev/simulator/webhooks.py` (the traffic simulator posts the
same webhooks); this module keeps their names for the tests and adds what only tests
need: the vendor folder and its Dialpad JWT vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

from ringback.dev.simulator.webhooks import (
    ACCOUNT_SID,
    DIALPAD,
    RINGCENTRAL,
    TWILIO_SMS_INBOUND,
    TWILIO_SMS_STATUS,
    TWILIO_TRANSCRIPTION,
    TWILIO_VOICE_STATUS,
    VONAGE,
    Webhook,
    dialpad,
    dialpad_call,
    ringcentral,
    ringcentral_handshake,
    ringcentral_session,
    twilio,
    twilio_sms_inbound,
    twilio_sms_status,
    twilio_transcription,
    twilio_voice_status,
    vonage,
    vonage_event,
)

__all__ = [
    "ACCOUNT_SID",
    "DIALPAD",
    "RINGCENTRAL",
    "TWILIO_SMS_INBOUND",
    "TWILIO_SMS_STATUS",
    "TWILIO_TRANSCRIPTION",
    "TWILIO_VOICE_STATUS",
    "VENDOR",
    "VONAGE",
    "Webhook",
    "dialpad",
    "dialpad_call",
    "dialpad_vectors",
    "ringcentral",
    "ringcentral_handshake",
    "ringcentral_session",
    "twilio",
    "twilio_sms_inbound",
    "twilio_sms_status",
    "twilio_transcription",
    "twilio_voice_status",
    "vonage",
    "vonage_event",
]

VENDOR = Path(__file__).resolve().parents[1] / "vendor"  # tests/vendor: specs and samples, with licences


def dialpad_vectors() -> dict:
    return json.loads((VENDOR / "dialpad" / "hs256_jwt_test_vectors.json").read_text())
