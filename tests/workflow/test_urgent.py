"""Urgent existing patient (workflow/urgent.py): clinical task, acknowledgement, the 45 min alert."""

from __future__ import annotations

from tests.workflow.harness import DAY, HOUR, KNOWN, MIN, T0, Harness, hold, urgent_harness


def test_urgent_task_to_the_assigned_provider_and_patient_acknowledgement():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(hold())
    assert h.steps() == ["clinical_task", "ack_sms"]
    task = h.action("clinical_task")
    assert task["kind"] == "CREATE_TASK" and task["priority"] == "URGENT"
    assert task["recipient"] == "email:dr.lee@maple.example.org"
    assert task["params"]["role"] == "assigned_provider"
    assert task["params"]["patient_name"] == "Ann Example"
    assert task["params"]["urgency_reason"] == "Nurse line: call back"
    assert task["due_at"] == T0 + 30 * MIN
    ack = h.action("ack_sms")
    assert ack["params"]["fallback_role"] == "nurse"
    assert "clinical team" in ack["body"] and "30 minutes" in ack["body"]
    assert "Nurse line" not in ack["body"] and "Ann" not in ack["body"]  # no clinical detail, no name
    assert h.outcomes[-1]["state"] == "RESPONDED" and h.outcomes[-1]["within_window"] is True


def test_urgent_without_an_assigned_provider_goes_to_the_nurse_route():
    h = Harness()
    h.patient(KNOWN)
    h.flag(KNOWN, code="refill-request", callback_requested=False, priority=None, display=None)
    h.missed(KNOWN)
    h.at(hold())
    task = h.action("clinical_task")
    assert task["recipient"] == "email:nurse@maple.example.org" and task["params"]["role"] == "nurse"
    assert task["params"]["urgency_reason"] == "refill-request"


def test_urgent_acknowledgement_never_waits_longer_than_five_minutes():
    h = urgent_harness(windows={"first_response_hold": 600})
    h.missed(KNOWN)
    h.at(5 * MIN - 1000)
    assert h.actions == []
    h.at(5 * MIN)
    assert h.steps() == ["clinical_task", "ack_sms"]


def test_urgent_task_completed_at_44_minutes_prevents_the_manager_alert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(44 * MIN)
    h.task(KNOWN, "clinical_task")
    h.at(2 * HOUR)
    assert "manager_alert" not in h.steps()
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "callback"
    assert final["escalations"] == 0


def test_urgent_task_wrong_number_closes_without_conversion_or_alert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(20 * MIN)
    h.task(KNOWN, "clinical_task", outcome="wrong_number")
    h.at(2 * HOUR)
    assert "manager_alert" not in h.steps()
    final = h.final()
    assert final["state"] == "ESCALATED_AND_CLOSED" and final["converted"] is False


def test_urgent_task_left_message_prevents_the_alert_but_does_not_convert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(20 * MIN)
    h.task(KNOWN, "clinical_task", outcome="left_message")
    h.at(2 * HOUR)
    assert "manager_alert" not in h.steps()
    assert h.state(KNOWN)["case"]["converted"] is False  # still open: a reply or booking may follow
    h.at(2 * DAY)
    final = h.final()
    assert final["converted"] is False and final["state"] != "CONVERTED"


def test_urgent_task_completed_at_46_minutes_does_not_prevent_the_manager_alert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(45 * MIN - 1000)
    assert "manager_alert" not in h.steps()
    h.at(45 * MIN)
    alert = h.action("manager_alert")
    assert alert["kind"] == "ALERT_MANAGER" and alert["recipient"] == "slack:MAPLE_SLACK"
    assert "Nurse line" not in alert["body"] and "Ann" not in alert["body"]
    assert alert["params"]["task_id"] == f"{h.case_id(KNOWN)}:clinical_task"
    h.at(46 * MIN)
    h.task(KNOWN, "clinical_task")
    assert h.steps() == ["clinical_task", "ack_sms", "manager_alert"]
    final = h.final()
    assert final["state"] == "CONVERTED" and final["escalations"] == 1


def test_urgent_case_is_not_closed_by_a_front_desk_call_or_a_booking():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(10 * MIN)
    h.answered(KNOWN)
    h.appointment(KNOWN, "a5", start=h.now + DAY, updated_at=h.now)
    h.at(45 * MIN)
    assert "manager_alert" in h.steps()


def test_cancel_if_answered_applies_to_urgent_calls_too():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(10_000)
    h.answered(KNOWN)
    h.at(HOUR)
    assert h.actions == [] and h.final()["state"] == "SUPPRESSED"
