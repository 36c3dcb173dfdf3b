"""EHR join data of a phone (workflow/ehr.py): what is kept, and the next appointment."""

from __future__ import annotations

from ringback.workflow import ehr
from ringback.workflow.state import ehr_key
from tests.workflow.harness import DAY, HOUR, KNOWN, PRACTICE_ID, T0, Harness


def test_only_the_fields_the_rules_read_are_kept():
    h = Harness()
    h.patient(KNOWN, phone=KNOWN, extra="not kept", language="es")
    stored = h.table[ehr_key(PRACTICE_ID, KNOWN)]["patient"]
    assert stored == {
        "patient_id": "pat-1",
        "display_name": "Ann Example",
        "deceased": False,
        "assigned_provider": None,
        "updated_at": T0 - DAY,
        "language": "es",
    }


def test_appointments_long_past_are_dropped_and_an_empty_record_is_deleted():
    h = Harness()
    h.appointment(KNOWN, "old", start=T0 - 31 * DAY, updated_at=T0 - 40 * DAY)
    h.appointment(KNOWN, "a1", start=T0 + DAY)
    assert list(h.table[ehr_key(PRACTICE_ID, KNOWN)]["appointments"]) == ["a1"]
    h.run(h.partition(KNOWN), lambda wf: wf.on_appointment(PRACTICE_ID, KNOWN, "a1", None))
    assert ehr_key(PRACTICE_ID, KNOWN) not in h.table


def test_the_next_appointment_is_the_earliest_upcoming_one():
    data = {
        "patient": None,
        "flags": {},
        "appointments": {
            "past": {"appointment_id": "past", "start": T0 - HOUR, "status": "booked", "updated_at": T0},
            "gone": {"appointment_id": "gone", "start": T0 + HOUR, "status": "cancelled", "updated_at": T0},
            "later": {"appointment_id": "later", "start": T0 + 3 * DAY, "status": "booked", "updated_at": T0},
            "next": {"appointment_id": "next", "start": T0 + DAY, "status": "pending", "updated_at": T0},
        },
    }
    assert ehr.next_appointment(data, T0)["appointment_id"] == "next"
    assert ehr.next_appointment(data, T0 + 4 * DAY) is None
