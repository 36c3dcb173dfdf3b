"""What staff are told (recipes.task_notice, domain/staff_texts.py): every task's role at
once, nothing about the patient; each branch's note says what really happened."""

from __future__ import annotations

from ringback.domain import staff_texts
from tests.workflow.harness import (
    DAY,
    HOUR,
    KNOWN,
    MIN,
    NEW_CALLER,
    T0,
    Harness,
    hold,
    reschedule_harness,
    urgent_harness,
)

PATIENT_DATA = ("Ann Example", "Nurse line", NEW_CALLER, KNOWN)


def assert_no_patient_data(action: dict) -> None:
    """The text says nothing about the patient; of the params, only `caller` (never rendered)."""
    text = " ".join(str(v) for k, v in (("body", action["body"]), *action["params"].items()) if k != "caller")
    assert not [d for d in PATIENT_DATA if d in text], text
    assert set(action["params"]) == {"role", "task_id", "caller"}


def test_an_urgent_task_notifies_the_provider_at_once_flagged_urgent_without_patient_data():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(hold())
    task = h.action("clinical_task")
    [notice] = h.notices()
    assert notice["kind"] == "NOTIFY_STAFF" and notice["step"] == "clinical_task_notice"
    assert notice["recipient"] == "email:dr.lee@maple.example.org"  # the task's own target
    assert notice["priority"] == "URGENT" and notice["due_at"] == task["due_at"] == T0 + 30 * MIN
    assert notice["params"] == {"role": "assigned_provider", "task_id": task["action_id"], "caller": KNOWN}
    assert notice["body"] == "URGENT: a new urgent clinical callback task for the assigned provider. Open it now."
    assert notice["created_at"] == task["created_at"]  # told at once
    assert_no_patient_data(notice)
    # Emitted right after its task, on the same key: the sinks create the task first.
    assert h.actions.index(notice) == h.actions.index(task) + 1


def test_an_assigned_provider_without_a_route_is_told_through_the_nurse_route():
    h = Harness()
    h.patient(KNOWN, display_name="Ann Example", assigned_provider="Practitioner/17")
    h.flag(KNOWN)
    h.missed(KNOWN)
    h.at(hold())
    [notice] = h.notices()
    assert h.action("clinical_task")["recipient"] == "Practitioner/17"
    assert notice["recipient"] == "email:nurse@maple.example.org" and notice["priority"] == "URGENT"


def test_the_managers_alert_names_the_clinical_task():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(45 * MIN)
    alert = h.action("manager_alert")
    assert alert["params"]["task_id"] == h.action("clinical_task")["action_id"]
    assert alert["body"] == staff_texts.urgent_escalation(45)
    assert "Ann" not in alert["body"] and "Nurse line" not in alert["body"]


def test_admin_and_follow_up_tasks_notify_their_roles_with_the_tasks_priority():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(hold())
    [admin] = h.notices()
    assert admin["recipient"] == "email:admin@maple.example.org" and admin["priority"] == "NORMAL"
    assert admin["body"] == "A new task for the admin team is in the staff console."
    assert admin["params"]["task_id"] == h.action("admin_task")["action_id"]
    assert_no_patient_data(admin)
    follow = Harness()
    follow.missed()
    follow.at(2 * HOUR)
    [callback] = follow.notices()
    assert callback["step"] == "callback_task_notice" and callback["recipient"] == "email:desk@maple.example.org"
    assert callback["due_at"] == follow.action("callback_task")["due_at"]


def test_a_role_the_practice_routes_nowhere_gets_a_task_but_no_notice():
    h = Harness(routing={"scheduling_coordinator": "email:desk@maple.example.org"})
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(hold())
    assert h.action("admin_task")["recipient"] == "email:desk@maple.example.org"  # admin team -> coordinator
    assert [n["recipient"] for n in h.notices()] == ["email:desk@maple.example.org"]
    nowhere = Harness(routing={})
    nowhere.patient(KNOWN)
    nowhere.missed(KNOWN)
    nowhere.at(hold())
    assert nowhere.steps() == ["admin_task"] and nowhere.notices() == []


def test_a_replayed_task_step_sends_no_second_notice():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(hold())
    h.at(hold() + MIN)
    assert len(h.notices()) == 1


# ------------------------------------------------------------------ the coordinator's note, per branch
def test_new_patient_quiet_hours_note_gives_the_send_time():
    h = Harness()
    h.now = T0 + 13 * HOUR  # 22:00 in Chicago
    h.missed()
    h.at(13 * HOUR + hold())
    note = h.action("notify_coordinator")
    assert note["body"] == staff_texts.NEW_PATIENT_SMS_QUIET_HOURS.format(send_time="Wed 25 Nov 08:00 CST")
    assert "went out" not in note["body"] and h.notices() == []


def test_after_an_opt_out_the_note_names_the_task_with_its_priority_and_no_if_they_do_not_reply():
    h = Harness()
    h.sms(NEW_CALLER, "STOP")
    h.missed()
    h.at(hold())
    task, note = h.action("callback_task"), h.action("notify_coordinator")
    assert note["body"] == staff_texts.NEW_PATIENT_OPTED_OUT
    assert "if they do not reply" not in note["body"] and "reply" not in note["params"]["todo"]
    assert note["priority"] == task["priority"] == "HIGH" and note["due_at"] == task["due_at"]
    assert note["params"]["task_id"] == task["action_id"]


def test_a_frequency_cap_note_says_the_limit_reached():
    h = Harness(sms_caps={"per_day": 1, "per_week": 1})
    h.missed()
    h.at(DAY + HOUR)  # the first case expired; its SMS is this week's one
    h.missed()
    h.at(DAY + HOUR + hold())
    notes = [a for a in h.actions if a["step"] == "notify_coordinator"]
    assert notes[1]["body"] == staff_texts.NEW_PATIENT_CAPPED.format(limit="1 SMS in 7 days")
    assert notes[1]["priority"] == "HIGH"


# ------------------------------------------------------------------ the scheduling queue's note, per branch
def test_reschedule_note_with_the_link_sent():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to reschedule my appointment tomorrow")
    h.at(hold())
    note = h.action("notify_scheduling")
    assert note["body"] == staff_texts.RESCHEDULE_LINK_SENT.format(appointment_time="Wed 25 Nov 09:00 CST")
    assert "task_id" not in note["params"] and note["due_at"] is None


def test_reschedule_note_beyond_the_link_horizon_says_no_link_was_sent_and_names_the_task():
    h = reschedule_harness(20 * DAY)
    h.voicemail(KNOWN, "I'd like to move my appointment")
    h.at(hold())
    note, task = h.action("notify_scheduling"), h.action("callback_task")
    assert note["body"] == staff_texts.RESCHEDULE_BEYOND_HORIZON.format(
        appointment_time="Mon 14 Dec 09:00 CST", horizon_days=14
    )
    assert "with the link" not in note["body"] and "with the link" not in note["params"]["todo"]
    assert note["params"]["task_id"] == task["action_id"] and note["priority"] == task["priority"]
    assert [n["step"] for n in h.notices()] == ["callback_task_notice"]


def test_reschedule_note_when_the_number_opted_out():
    h = reschedule_harness(DAY)
    h.sms(KNOWN, "STOP")
    h.voicemail(KNOWN, "I need to reschedule my appointment tomorrow")
    h.at(hold())
    note = h.action("notify_scheduling")
    assert note["body"] == staff_texts.RESCHEDULE_OPTED_OUT.format(appointment_time="Wed 25 Nov 09:00 CST")
    assert note["params"]["task_id"] == h.action("callback_task")["action_id"]


def test_reschedule_note_in_the_quiet_hours():
    h = reschedule_harness(DAY + 13 * HOUR)
    h.now = T0 + 13 * HOUR  # 22:00 in Chicago
    h.voicemail(KNOWN, "I need to reschedule my appointment")
    h.at(13 * HOUR + hold())
    note = h.action("notify_scheduling")
    assert note["body"] == staff_texts.RESCHEDULE_LINK_QUIET_HOURS.format(
        appointment_time="Wed 25 Nov 22:00 CST", send_time="Wed 25 Nov 08:00 CST"
    )


def test_the_protect_alert_names_its_task():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to reschedule my appointment tomorrow")
    h.at(4 * HOUR)
    alert = h.action("protect_alert")
    assert alert["params"]["task_id"] == h.action("protect_task")["action_id"]
    assert alert["body"] == staff_texts.reschedule_escalation("Wed 25 Nov 09:00 CST", 48)
    assert [n["step"] for n in h.notices()] == ["protect_task_notice"]
    assert h.notices()[0]["priority"] == "HIGH"
