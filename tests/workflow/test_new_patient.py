"""New patient (workflow/new_patient.py): the booking link after the hold, the 2 h follow-up, conversions."""

from __future__ import annotations

from ringback.domain import staff_texts
from tests.workflow.harness import DAY, HOUR, MIN, NEW_CALLER, PRACTICE_ID, T0, Harness


def test_new_patient_first_sms_waits_the_hold_then_goes_with_a_coordinator_notification():
    h = Harness()
    h.missed()
    # Opening a case writes state only; its OPEN record goes out with the first response.
    assert h.outcomes == [] and h.actions == []
    assert h.state(NEW_CALLER)["case"]["open_record"]["at"] == T0
    h.at(44_000)
    assert h.actions == []
    h.at(45_000)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert h.states() == ["OPEN", "RESPONDED"] and h.outcomes[0]["at"] == T0
    sms = h.action("first_sms")
    cid = h.case_id(NEW_CALLER)
    assert sms["action_id"] == f"{cid}:first_sms" and sms["kind"] == "SEND_SMS"
    assert sms["recipient"] == NEW_CALLER and sms["scenario"] == "NEW_PATIENT"
    assert "https://book.example.org/maple" in sms["body"] and "Maple Family Practice" in sms["body"]
    assert sms["call_reported_at"] == T0 and sms["missed_at"] == T0 - 1000 and sms["due_at"] is None
    assert sms["params"] == {
        "template": "new_patient_first",
        "language": "en",
        "fallback_role": "scheduling_coordinator",
    }
    note = h.action("notify_coordinator")
    assert note["kind"] == "NOTIFY_STAFF" and note["recipient"] == "email:desk@maple.example.org"
    assert note["body"] == staff_texts.NEW_PATIENT_SMS_SENT and note["priority"] == "NORMAL"
    assert "task_id" not in note["params"] and h.notices() == []  # no task, nothing more to tell
    assert note["params"]["caller"] == NEW_CALLER and note["params"]["role"] == "scheduling_coordinator"
    assert h.keys[0] == f"{PRACTICE_ID}|{NEW_CALLER}".encode()
    responded = h.outcomes[-1]
    assert responded["state"] == "RESPONDED" and responded["channel"] == "sms"
    assert responded["first_response_at"] == T0 + 45_000
    assert responded["response_latency_ms"] == 46_000 and responded["within_window"] is True
    # The timer fired within one tick of its due time.
    assert h.fired == [("first_response", 0)]


def test_a_reply_stops_the_two_hour_follow_up_and_is_a_response_not_a_conversion():
    h = Harness()
    h.missed()
    h.at(HOUR)
    h.sms(NEW_CALLER, "Yes please, can I come Thursday?")
    h.at(5 * HOUR)
    assert h.steps() == ["first_sms", "notify_coordinator", "patient_replied"]
    assert not [o for o in h.outcomes if o["final"]]
    h.at(DAY)
    final = h.final()
    assert final["state"] == "EXPIRED" and final["converted"] is False and final["conversion_channel"] is None
    assert final["responded"] is True and final["responded_at"] == T0 + HOUR - 1000
    assert final["response_channel"] == "sms_reply"


def test_a_reply_then_the_booking_staff_make_converts_the_case():
    h = Harness()
    h.missed()
    h.at(HOUR)
    h.sms(NEW_CALLER, "Yes please, can I come Thursday?")
    h.at(HOUR + 20 * MIN)
    h.appointment(NEW_CALLER, "a1", start=h.now + 2 * DAY, updated_at=h.now)
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "booking"
    assert final["converted_at"] == T0 + HOUR + 20 * MIN and final["responded_at"] == T0 + HOUR - 1000


def test_no_reply_within_two_hours_second_sms_and_callback_task_due_in_four_hours():
    h = Harness()
    h.missed()
    h.at(2 * HOUR - 1000)
    assert "second_sms" not in h.steps()
    h.at(2 * HOUR)
    assert h.steps() == ["first_sms", "notify_coordinator", "second_sms", "callback_task"]
    task = h.action("callback_task")
    assert task["kind"] == "CREATE_TASK" and task["due_at"] == T0 + 2 * HOUR + 4 * HOUR
    assert task["recipient"] == "email:desk@maple.example.org"
    assert h.outcomes[-1]["state"] == "ESCALATED" and h.outcomes[-1]["escalations"] == 1
    # Nobody books: the case ends after case_expiry (24 h) as escalated-and-closed.
    h.at(DAY)
    final = h.final()
    assert final["state"] == "ESCALATED_AND_CLOSED" and final["converted"] is False and final["escalations"] == 1
    assert h.steps().count("second_sms") == 1


def test_completing_the_callback_task_converts_the_case():
    h = Harness()
    h.missed()
    h.at(2 * HOUR)
    h.at(3 * HOUR)
    h.task(NEW_CALLER, "callback_task")
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "callback"
    assert final["escalations"] == 1


def test_a_booking_after_the_missed_call_converts_and_closes_the_gates():
    h = Harness()
    h.missed()
    h.at(30 * MIN)
    h.appointment(NEW_CALLER, "a9", start=h.now + 3 * DAY, updated_at=h.now)
    h.at(DAY)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "booking"
    assert final["converted_at"] == T0 + 30 * MIN


def test_a_booking_made_before_the_missed_call_does_not_count():
    h = Harness()
    h.missed()
    h.at(30 * MIN)
    h.appointment(NEW_CALLER, "a9", start=h.now + 3 * DAY, updated_at=T0 - HOUR)  # an older booking synced now
    h.at(2 * HOUR)
    assert "second_sms" in h.steps()
    assert not [o for o in h.outcomes if o["final"]]
