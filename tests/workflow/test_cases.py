"""The life of a case (workflow/cases.py and the inputs): open, join, suppress, convert, outcomes."""

from __future__ import annotations

import pytest

from ringback.domain import recipes
from tests.workflow.harness import (
    DAY,
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


def test_a_callback_before_the_first_sms_suppresses_it():
    h = Harness()
    h.missed()
    h.at(20_000)
    h.answered()  # the caller called again and reached the front desk
    h.at(3 * HOUR)
    assert h.actions == []
    assert h.states() == ["OPEN", "SUPPRESSED"]
    assert h.final()["reason"].startswith("the caller reached staff")
    assert h.state(NEW_CALLER)["case"] is None


def test_a_second_missed_call_joins_the_open_case():
    h = Harness()
    first = h.missed()
    h.at(10_000)
    h.missed()
    h.at(HOUR)
    h.missed()  # after the first SMS: still the same case, no new sequence
    h.at(HOUR + 5 * MIN)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert [o["state"] for o in h.outcomes] == ["OPEN", "RESPONDED"]
    case = h.state(NEW_CALLER)["case"]
    assert case["calls"] == 3
    assert case["case_id"] == recipes.case_id(PRACTICE_ID, NEW_CALLER, first["event_id"])


def test_a_redelivered_webhook_opens_no_second_case_and_sends_nothing_twice():
    h = Harness()
    event = h.missed()
    h.run(h.partition(NEW_CALLER), lambda wf: wf.on_call_event(dict(event)))
    h.at(hold())
    h.run(h.partition(NEW_CALLER), lambda wf: wf.on_call_event(dict(event)))
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert h.ignored.count("duplicate_event") == 2
    assert h.states() == ["OPEN", "RESPONDED"]


def test_blocked_and_own_numbers_open_no_case_and_are_counted():
    h = Harness()
    h.missed("+13125550199")
    h.missed("+13125550100")
    h.at(3 * HOUR)
    assert h.actions == [] and h.outcomes == []
    assert h.ignored == ["blocked_number", "own_number"]
    assert h.state("+13125550199") is None


def test_an_unknown_practice_is_ignored():
    h = Harness()
    h.event(NEW_CALLER, practice_id="nobody")
    assert h.ignored == ["unknown_practice"] and h.outcomes == []


def test_an_answered_call_after_the_first_response_is_a_response_not_a_conversion():
    h = Harness()
    h.missed()
    h.at(10 * MIN)
    h.answered()
    assert not [o for o in h.outcomes if o["final"]]
    # The caller spoke with staff: no second SMS or callback task at the 2 h gate.
    h.at(DAY)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    final = h.final()
    assert final["state"] == "EXPIRED" and final["converted"] is False
    assert final["responded"] is True and final["response_channel"] == "answered_call"
    assert final["responded_at"] == T0 + 10 * MIN - 1000


def test_an_answered_call_then_a_booking_converts_with_the_booking():
    h = Harness()
    h.missed()
    h.at(10 * MIN)
    h.answered()
    h.at(20 * MIN)
    h.appointment(NEW_CALLER, "a1", start=h.now + 2 * DAY, updated_at=h.now)
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "booking"
    assert final["responded"] is True and final["converted_at"] == T0 + 20 * MIN


def test_updates_of_other_tasks_or_closed_cases_change_nothing():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(hold())
    h.task(KNOWN, "admin_task", action="CLAIM")
    h.task(KNOWN, "admin_task", case_id=f"{PRACTICE_ID}:someothercase")
    assert not [o for o in h.outcomes if o["final"]]
    assert "task_update_closed_case" in h.ignored


def test_a_patient_record_synced_during_the_hold_is_used_for_the_first_response():
    h = Harness()
    h.missed(KNOWN)
    assert h.state(KNOWN)["case"]["scenario"] == "NEW_PATIENT"
    h.patient(KNOWN)
    h.at(hold())
    assert h.steps() == ["admin_task"]  # never a new-patient link to an existing patient
    assert [(o["state"], o["scenario"]) for o in h.outcomes] == [
        ("OPEN", "GENERAL_INQUIRY"),
        ("RESPONDED", "GENERAL_INQUIRY"),
    ]


def test_outcome_ids_are_unique_and_every_case_ends_once():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "reschedule please")
    h.at(DAY)
    ids = [o["outcome_id"] for o in h.outcomes]
    assert len(ids) == len(set(ids))
    assert [o["final"] for o in h.outcomes].count(True) == 1
    assert all(o["record_type"] == "CASE" for o in h.outcomes)


@pytest.mark.parametrize("scenario_setup, window", [("new", 15 * MIN), ("urgent", 30 * MIN), ("general", 4 * HOUR)])
def test_within_window_uses_the_scenario_window(scenario_setup, window):
    h = urgent_harness(windows={"first_response_hold": 1}) if scenario_setup == "urgent" else Harness()
    caller = NEW_CALLER
    if scenario_setup == "urgent":
        caller = KNOWN
    elif scenario_setup == "general":
        h.patient(KNOWN)
        caller = KNOWN
    h.event(caller, occurred_at=h.now - window)  # the phone system reported it late
    h.at(hold())
    responded = [o for o in h.outcomes if o["state"] == "RESPONDED"][0]
    assert responded["response_latency_ms"] > window and responded["within_window"] is False


def test_an_appointment_arriving_changes_nothing():
    h = Harness()
    h.patient(KNOWN)
    h.appointment(KNOWN, "a7", start=T0 + HOUR, updated_at=T0 - DAY)
    h.missed(KNOWN)
    h.at(10 * MIN)
    h.appointment(KNOWN, "a7", start=T0 + HOUR, status="arrived", updated_at=h.now)
    assert not [o for o in h.outcomes if o["final"]]
