"""A patient's reply is read by a person (workflow/sms.py `reply`): a "patient replied" task
for the role that owns the case, further replies added to it, the text only in its params."""

from __future__ import annotations

from tests.workflow.harness import (
    HOUR,
    KNOWN,
    MIN,
    NEW_CALLER,
    PRACTICE_ID,
    T0,
    Harness,
    hold,
    reschedule_harness,
    urgent_harness,
)

TEXT = "Yes please - can I come Tuesday after 3?"


def replies(h: Harness) -> list[dict]:
    return [a for a in h.actions if a["step"].startswith("patient_replied") and a["kind"] == "CREATE_TASK"]


def test_a_reply_makes_a_task_for_the_coordinator_with_the_text_for_the_console_only():
    h = Harness()
    h.missed()
    h.at(HOUR)
    h.sms(NEW_CALLER, TEXT)
    [task] = replies(h)
    cid = h.case_id(NEW_CALLER)
    assert task["kind"] == "CREATE_TASK" and task["action_id"] == f"{cid}:patient_replied"
    assert task["recipient"] == "email:desk@maple.example.org" and task["priority"] == "HIGH"
    assert task["due_at"] == T0 + HOUR + 15 * MIN  # the new-patient response window
    params = task["params"]
    assert params["role"] == "scheduling_coordinator" and params["caller"] == NEW_CALLER
    assert params["reply_text"] == TEXT and params["reply_at"] == str(T0 + HOUR - 1000)
    assert "task_id" not in params  # a new task
    # The text is not in what a notification or a log could show.
    assert TEXT not in task["body"] and TEXT not in task["reason"]
    assert h.state(NEW_CALLER)["reply_task"] == {"task_id": task["action_id"], "replies": 1}


def test_further_replies_go_to_the_open_task_and_a_redelivered_one_adds_nothing():
    h = Harness()
    h.missed()
    h.at(HOUR)
    first = h.sms(NEW_CALLER, TEXT)
    h.at(HOUR + MIN)
    h.sms(NEW_CALLER, "Or Wednesday morning")
    h.event(NEW_CALLER, "SMS", None, sms_body=TEXT, event_id=first["event_id"])  # the webhook again
    assert h.ignored == ["duplicate_event"]
    one, two = replies(h)
    assert two["step"] == "patient_replied_2" and two["params"]["task_id"] == one["action_id"]
    assert two["params"]["reply_text"] == "Or Wednesday morning"
    assert h.state(NEW_CALLER)["reply_task"]["replies"] == 2


def test_once_the_reply_task_is_done_the_next_reply_makes_a_new_one():
    h = Harness()
    h.missed()
    h.at(HOUR)
    h.sms(NEW_CALLER, TEXT)
    h.task(NEW_CALLER, "patient_replied", outcome="left_message")
    assert h.state(NEW_CALLER)["reply_task"] is None
    h.sms(NEW_CALLER, "Hello?")
    one, two = replies(h)
    assert two["step"] == "patient_replied_2" and "task_id" not in two["params"]
    # A reply task done converts nothing: the case waits for a booking.
    assert not [o for o in h.outcomes if o["final"]]


def test_consent_words_and_help_make_no_task():
    h = Harness()
    h.missed()
    h.at(hold())
    for body in ("HELP", "START", "STOP", "UNSTOP"):
        h.sms(NEW_CALLER, body)
    assert replies(h) == []


def test_an_urgent_case_reply_goes_to_the_assigned_provider_and_the_callback_is_still_owed():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(hold())
    h.sms(KNOWN, "I feel worse")
    [task] = replies(h)
    assert task["recipient"] == "email:dr.lee@maple.example.org" and task["priority"] == "URGENT"
    assert task["params"]["role"] == "assigned_provider"
    h.at(45 * MIN)
    assert "manager_alert" in h.steps()  # a reply is not the clinical callback


def test_a_reschedule_case_reply_goes_to_the_scheduling_queue():
    h = reschedule_harness(3 * 86_400_000)
    h.voicemail(KNOWN, "I need to reschedule")
    h.at(hold())
    h.sms(KNOWN, "Friday works")
    [task] = replies(h)
    assert task["params"]["role"] == "scheduling_coordinator"  # the queue's fallback at this practice
    assert task["priority"] == "NORMAL"


def test_a_reply_with_no_open_case_is_a_task_for_the_front_office_and_further_ones_join_it():
    h = Harness()
    h.sms(NEW_CALLER, "Is the office open Saturday?")
    h.sms(NEW_CALLER, "Thanks")
    one, two = replies(h)
    assert one["recipient"] == "email:admin@maple.example.org" and one["params"]["role"] == "admin_team"
    assert one["case_id"].startswith(f"{PRACTICE_ID}:") and one["missed_at"] is None
    assert two["case_id"] != one["case_id"] and two["params"]["task_id"] == one["action_id"]
    assert h.keys[0] == f"{PRACTICE_ID}|{NEW_CALLER}".encode()
    assert h.outcomes == []  # no case


def test_a_reply_after_the_case_closed_joins_the_reply_task_still_open():
    h = Harness()
    h.missed()
    h.at(HOUR)
    h.sms(NEW_CALLER, TEXT)
    h.appointment(NEW_CALLER, "a1", start=h.now + 86_400_000, updated_at=h.now)  # booked: the case closes
    assert h.final()["conversion_channel"] == "booking"
    h.sms(NEW_CALLER, "See you then")
    one, two = replies(h)
    assert two["params"]["task_id"] == one["action_id"]
    # Its completion arrives after the case closed: the pointer is cleared all the same.
    h.task(NEW_CALLER, "patient_replied", case_id=one["case_id"])
    assert h.state(NEW_CALLER)["reply_task"] is None
    assert "task_update_closed_case" not in h.ignored
