"""What each scenario does at each step, as action commands. Pure: no Kafka, no clock."""

from __future__ import annotations

import hashlib

from ringback.settings import Practice
from streams.rules.classify import NEW_PATIENT

DEFAULT_TEMPLATES = {
    "new_patient_first": ("Hi, this is {practice_name}. Sorry we missed your call! "
                          "Reply to book, or book here: {booking_link} Reply STOP to opt out."),
}


def case_id(practice_id: str, caller: str, opening_event_id: str) -> str:
    """Deterministic: a replay of the same opening event yields the same case id."""
    digest = hashlib.sha256(f"{practice_id}|{caller}|{opening_event_id}".encode()).hexdigest()[:20]
    return f"{practice_id}:{digest}"


def render(practice: Practice, template: str) -> str:
    text = practice.templates.get(template) or DEFAULT_TEMPLATES[template]
    return text.format(practice_name=practice.name, booking_link=practice.booking_link,
                       reschedule_link=practice.reschedule_link or practice.booking_link)


def first_response(practice: Practice, event: dict, scenario: str, now_ms: int) -> list[dict]:
    """The first step of a case: for a new patient, the booking-link SMS."""
    cid = case_id(practice.id, event["caller"], event["event_id"])
    if scenario != NEW_PATIENT:
        return []
    return [{
        "action_id": f"{cid}:first_sms",
        "case_id": cid,
        "practice_id": practice.id,
        "kind": "SEND_SMS",
        "step": "first_sms",
        "scenario": scenario,
        "recipient": event["caller"],
        "body": render(practice, "new_patient_first"),
        "reason": "missed call from an unknown number",
        "priority": "NORMAL",
        "created_at": now_ms,
        "due_at": None,
        "missed_at": event["occurred_at"],
        "call_reported_at": event["received_at"],
        "params": {},
    }]
