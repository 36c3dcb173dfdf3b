"""Patient SMS in the workflow (workflow/sms.py): consent, caps, quiet hours, inbound texts."""

from __future__ import annotations

from tests.workflow.harness import DAY, HOUR, KNOWN, MIN, NEW_CALLER, PRACTICE_ID, T0, Harness, hold, urgent_harness


def test_an_opted_out_caller_gets_a_staff_callback_task_instead_of_the_sms():
    h = Harness()
    h.sms(NEW_CALLER, "STOP")
    h.missed()
    h.at(hold())
    assert h.steps() == ["callback_task", "notify_coordinator"]
    task = h.action("callback_task")
    assert task["params"]["instead_of"] == "first_sms"
    assert task["params"]["blocked_reason"] == "the caller opted out of SMS"
    assert task["due_at"] == T0 + 15 * MIN and task["priority"] == "HIGH"
    assert "not sent" in h.action("notify_coordinator")["body"]
    assert h.outcomes[-1]["channel"] == "task"
    # The 2 h gate has nothing left to add (no SMS allowed, the task exists).
    h.at(3 * HOUR)
    assert h.steps() == ["callback_task", "notify_coordinator"]


def test_a_frequency_cap_turns_the_sms_step_into_a_task_with_the_reason():
    h = Harness(sms_caps={"per_day": 1, "per_week": 3})
    h.missed()
    h.at(hold())
    h.appointment(NEW_CALLER, "a1", start=h.now + DAY, updated_at=h.now)  # a booking converts the first case
    h.at(HOUR)
    h.missed()  # a new case the same day: the daily cap of 1 is used
    h.at(HOUR + hold())
    assert h.steps() == ["first_sms", "notify_coordinator", "callback_task", "notify_coordinator"]
    assert "frequency cap" in h.actions[2]["params"]["blocked_reason"]


def test_the_fcc_profile_caps_one_sms_a_day():
    h = Harness(sms_caps={"per_day": 5, "per_week": 9, "fcc_healthcare_exemption": True})
    h.missed()
    h.at(2 * HOUR)  # first SMS at the hold; the 2 h gate's second SMS would be the second today
    assert "second_sms" not in h.steps()
    assert "callback_task" in h.steps()
    assert any("frequency cap" in n for n in h.state(NEW_CALLER)["case"]["notes"])


def test_quiet_hours_defer_the_sms_and_staff_are_told_at_once():
    h = Harness()
    h.now = T0 + 13 * HOUR  # 22:00 in Chicago
    h.missed()
    h.at(13 * HOUR + hold())
    sms = h.action("first_sms")
    next_8am = T0 + 23 * HOUR  # 08:00 the next day in Chicago
    assert sms["due_at"] == next_8am and sms["params"]["deferred_until"] == str(next_8am)
    assert "quiet hours" in h.action("notify_coordinator")["body"]
    assert h.outcomes[-1]["first_response_at"] == next_8am


def test_a_deceased_patient_gets_no_sms():
    h = urgent_harness()
    h.patient(KNOWN, deceased=True, assigned_provider=None)
    h.missed(KNOWN)
    h.at(hold())
    assert h.steps() == ["clinical_task"]
    assert h.outcomes[-1]["channel"] == "task"


def test_a_sentence_opt_out_gets_one_confirmation_and_blocks_later_sms():
    h = Harness()
    h.missed()
    h.at(hold())
    h.sms(NEW_CALLER, "please stop texting me")
    h.sms(NEW_CALLER, "I said stop texting me!")
    confirmation = h.action("optout_confirmation")
    assert confirmation["params"]["consent_confirmation"] == "1" and confirmation["kind"] == "SEND_SMS"
    assert "START" in confirmation["body"]
    h.at(2 * HOUR)
    assert "second_sms" not in h.steps() and "callback_task" in h.steps()
    assert h.state(NEW_CALLER)["consent"]["opted_out"] is True


def test_a_keyword_opt_out_is_confirmed_by_the_carrier_not_by_us_and_start_opts_back_in():
    h = Harness()
    h.sms(NEW_CALLER, "STOP")
    assert h.actions == []
    h.sms(NEW_CALLER, "START")
    h.missed()
    h.at(hold())
    assert "first_sms" in h.steps()


def test_a_twilio_21610_error_records_an_opt_out():
    h = Harness()
    h.run(
        h.partition(NEW_CALLER),
        lambda wf: wf.on_message_status(
            {
                "message_sid": "SM1",
                "status": "failed",
                "error_code": "21610",
                "practice_id": PRACTICE_ID,
                "recipient": NEW_CALLER,
                "action_id": None,
                "received_at": h.now,
            }
        ),
    )
    h.missed()
    h.at(hold())
    assert h.steps() == ["callback_task", "notify_coordinator"]


def test_a_reply_before_the_first_response_is_read_by_a_person_and_does_not_close_the_case():
    h = Harness()
    h.missed()
    h.sms(NEW_CALLER, "hello?")
    h.at(hold())
    assert h.steps() == ["patient_replied", "first_sms", "notify_coordinator"]
    assert not [o for o in h.outcomes if o["final"]]


def test_help_and_opt_in_texts_are_not_replies():
    h = Harness()
    h.missed()
    h.at(hold())
    h.sms(NEW_CALLER, "HELP")
    h.sms(NEW_CALLER, "START")
    assert not [o for o in h.outcomes if o["final"]]
    assert h.state(NEW_CALLER)["consent"]["opted_out"] is False


def test_a_number_blocked_after_its_case_opened_gets_a_task_instead_of_the_sms():
    # The same decision as the SMS sink: the sink would refuse this SMS, so none is emitted.
    h = Harness()
    h.missed()
    h.practice.blocked_numbers.append(NEW_CALLER)  # the practices file changed during the hold
    h.at(hold())
    assert h.steps() == ["callback_task", "notify_coordinator"]
    assert h.action("callback_task")["params"]["blocked_reason"] == "blocked number"


def test_a_blocked_number_gets_no_opt_out_confirmation():
    h = Harness()
    h.sms("+13125550199", "please stop texting me")
    assert h.actions == []
    assert h.state("+13125550199")["consent"]["opted_out"] is True


def test_the_opt_out_confirmation_goes_at_once_in_the_quiet_hours():
    h = Harness()
    h.now = T0 + 13 * HOUR  # 22:00 in Chicago
    h.sms(NEW_CALLER, "don't text me")
    confirmation = h.action("optout_confirmation")
    assert confirmation["due_at"] is None and confirmation["created_at"] == h.now
