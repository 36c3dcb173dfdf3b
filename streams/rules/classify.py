"""Which scenario a missed call is (SPEC section 6). Pure: values in, decision out."""

from __future__ import annotations

NEW_PATIENT = "NEW_PATIENT"
URGENT_EXISTING = "URGENT_EXISTING"
RESCHEDULE = "RESCHEDULE"
GENERAL_INQUIRY = "GENERAL_INQUIRY"

OPENING_OUTCOMES = {"MISSED", "VOICEMAIL"}


def opens_case(event: dict) -> bool:
    """A missed inbound call (including one that ended in voicemail) opens or joins a case."""
    return (event["event_type"] == "CALL" and event["direction"] == "INBOUND"
            and event["outcome"] in OPENING_OUTCOMES)


def classify(patient: dict | None) -> str:
    """Walking-skeleton classification: an unknown caller is a new-patient inquiry.

    The full rules (urgency flags, reschedule intent, general inquiries) extend this.
    """
    if patient is None:
        return NEW_PATIENT
    return GENERAL_INQUIRY
