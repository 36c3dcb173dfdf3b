"""Reschedule requests (workflow/reschedule.py): the link, the 4 h gate, late transcripts."""

from __future__ import annotations

from tests.workflow.harness import DAY, HOUR, KNOWN, T0, Harness, hold, reschedule_harness


def test_reschedule_within_48_hours_link_then_the_four_hour_gate_protects_it():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "Hi, I need to reschedule my appointment tomorrow")
    h.at(hold())
    assert h.steps() == ["reschedule_sms", "notify_scheduling"]
    assert "https://book.example.org/maple/reschedule" in h.action("reschedule_sms")["body"]
    note = h.action("notify_scheduling")
    assert note["params"]["appointment_id"] == "a1" and note["params"]["appointment_start"] == str(T0 + DAY)
    assert note["recipient"] == "email:desk@maple.example.org"  # scheduling queue -> coordinator
    assert note["params"]["role"] == "scheduling_coordinator"
    assert h.action("reschedule_sms")["params"]["fallback_role"] == "scheduling_coordinator"
    h.at(4 * HOUR - 1000)
    assert "protect_task" not in h.steps()
    h.at(4 * HOUR)
    assert h.steps() == ["reschedule_sms", "notify_scheduling", "protect_task", "protect_alert"]
    task = h.action("protect_task")
    assert task["priority"] == "HIGH" and task["kind"] == "CREATE_TASK"
    assert h.action("protect_alert")["kind"] == "ALERT_MANAGER"
    assert h.outcomes[-1]["state"] == "ESCALATED"


def test_reschedule_gate_does_nothing_for_an_appointment_beyond_48_hours():
    h = reschedule_harness(5 * DAY)
    h.voicemail(KNOWN, "I can't make it on Monday")
    h.at(4 * HOUR)
    assert h.steps() == ["reschedule_sms", "notify_scheduling"]
    h.at(DAY)
    assert h.final()["state"] == "EXPIRED"


def test_no_reschedule_link_for_an_appointment_beyond_14_days():
    h = reschedule_harness(20 * DAY)
    h.voicemail(KNOWN, "I'd like to move my appointment")
    h.at(hold())
    assert h.steps() == ["callback_task", "notify_scheduling"]
    assert "beyond" in h.action("callback_task")["reason"]
    h.at(5 * HOUR)
    assert "protect_task" not in h.steps()


def test_reschedule_link_is_sent_at_14_days_but_not_after():
    inside = reschedule_harness(14 * DAY)
    inside.voicemail(KNOWN, "need to reschedule")
    inside.at(hold())
    assert "reschedule_sms" in inside.steps()
    outside = reschedule_harness(14 * DAY + hold() + 1000)
    outside.voicemail(KNOWN, "need to reschedule")
    outside.at(hold())
    assert "reschedule_sms" not in outside.steps()


def test_reschedule_without_an_upcoming_appointment_is_a_callback_task():
    h = Harness()
    h.patient(KNOWN)
    h.voicemail(KNOWN, "I want to cancel my appointment")
    h.at(hold())
    assert h.steps() == ["callback_task"]
    assert "no upcoming appointment" in h.action("callback_task")["reason"]


def test_a_rescheduled_appointment_converts_and_closes_the_gate():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to reschedule")
    h.at(HOUR)
    h.appointment(KNOWN, "a1", start=T0 + 3 * DAY, updated_at=h.now)
    h.at(5 * HOUR)
    assert "protect_task" not in h.steps()
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "reschedule"


def test_a_cancellation_is_not_a_conversion_but_leaves_nothing_to_protect():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to cancel tomorrow")
    h.at(HOUR)
    h.appointment(KNOWN, "a1", start=T0 + DAY, status="cancelled", updated_at=h.now)
    h.at(5 * HOUR)
    assert "protect_task" not in h.steps()
    assert not [o for o in h.outcomes if o["final"]]
    h.at(2 * DAY)
    final = h.final()
    assert final["state"] == "EXPIRED" and final["converted"] is False


def test_cancel_and_rebook_converts_as_a_reschedule():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to change my appointment")
    h.at(HOUR)
    h.appointment(KNOWN, "a1", start=T0 + DAY, status="cancelled", updated_at=h.now)
    h.at(2 * HOUR)
    h.appointment(KNOWN, "a2", start=T0 + 5 * DAY, updated_at=h.now)
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "reschedule"
    assert final["converted_at"] == T0 + 2 * HOUR


def test_confirming_a_pending_appointment_converts_as_a_confirmation():
    h = reschedule_harness(DAY)
    h.appointment(KNOWN, "a1", start=T0 + DAY, status="pending", updated_at=T0 - DAY)
    h.voicemail(KNOWN, "can I change my appointment time")
    h.at(HOUR)
    h.appointment(KNOWN, "a1", start=T0 + DAY, status="booked", updated_at=h.now)
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "confirmation"


def test_a_request_still_to_confirm_converts_nothing():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "please reschedule")
    h.at(HOUR)
    h.appointment(KNOWN, "a2", start=T0 + 4 * DAY, status="proposed", updated_at=h.now)
    assert not [o for o in h.outcomes if o["final"]]


def test_the_protect_gate_has_nothing_to_do_when_the_appointment_is_gone():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "please reschedule")
    h.at(HOUR)
    h.run(h.partition(KNOWN), lambda wf: wf.on_appointment("maple-family", KNOWN, "a1", None))  # deleted in the EHR
    h.at(5 * HOUR)
    assert h.steps() == ["reschedule_sms", "notify_scheduling"]
    assert "nothing left to protect" in " ".join(h.state(KNOWN)["case"]["notes"])


def test_a_transcript_arriving_before_its_call_is_used():
    h = reschedule_harness(DAY)
    h.transcript(KNOWN, "CA-early", "Please reschedule my appointment")
    h.event(KNOWN, outcome="VOICEMAIL", call_id="CA-early")
    h.at(hold())
    assert h.steps()[0] == "reschedule_sms"


def test_a_transcript_arriving_after_the_general_response_upgrades_the_case():
    h = reschedule_harness(DAY)
    call = h.voicemail(KNOWN)
    h.at(hold())
    assert h.steps() == ["admin_task"]
    h.transcript(KNOWN, call["provider_call_id"], "I have to cancel tomorrow's appointment")
    assert h.steps() == ["admin_task", "reschedule_sms", "notify_scheduling"]
    assert h.state(KNOWN)["case"]["scenario"] == "RESCHEDULE"
    h.at(4 * HOUR)
    assert "protect_task" in h.steps()


def test_a_transcript_of_another_call_does_not_change_the_case():
    h = reschedule_harness(DAY)
    h.missed(KNOWN)
    h.at(hold())
    h.transcript(KNOWN, "CA-some-older-call", "I need to reschedule")
    assert h.steps() == ["admin_task"] and h.state(KNOWN)["case"]["scenario"] == "GENERAL_INQUIRY"
