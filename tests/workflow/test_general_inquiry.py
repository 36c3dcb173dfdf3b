"""General inquiries (workflow/general_inquiry.py): the admin task, completion, expiry, bookings."""

from __future__ import annotations

from tests.workflow.harness import DAY, HOUR, KNOWN, T0, Harness, hold


def test_general_inquiry_admin_task_due_in_four_hours_then_completed():
    h = Harness()
    h.patient(KNOWN)
    h.voicemail(KNOWN, "I'm not cancelling, I have a question about my bill")
    h.at(hold())
    assert h.steps() == ["admin_task"]
    task = h.action("admin_task")
    assert task["recipient"] == "email:admin@maple.example.org" and task["due_at"] == T0 + 4 * HOUR
    assert task["scenario"] == "GENERAL_INQUIRY"
    h.at(HOUR)
    h.task(KNOWN, "admin_task")
    assert h.final()["state"] == "CONVERTED"


def test_general_inquiry_nobody_acts_the_case_expires():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(DAY)
    assert h.steps() == ["admin_task"]
    final = h.final()
    assert final["state"] == "EXPIRED" and final["escalations"] == 0 and final["within_window"] is True


def test_a_general_inquiry_converts_on_a_new_booking():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(HOUR)
    h.appointment(KNOWN, "a7", start=h.now + 3 * DAY, updated_at=h.now)
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "booking"
