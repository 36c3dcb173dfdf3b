"""A call decided from all its signals (workflow/calls.py), whatever order they arrive in."""

from __future__ import annotations

import itertools

import pytest

from ringback.workflow import calls
from ringback.workflow.state import new_caller
from tests.workflow.harness import DAY, HOUR, MIN, NEW_CALLER, T0, Harness, hold

PARENT = "CA" + "1" * 32
LEG = "CA" + "2" * 32
OTHER_LEG = "CA" + "3" * 32


def signal(outcome: str, signal: str | None, leg: str | None = None, call: str = PARENT) -> dict:
    return {"provider_call_id": call, "outcome": outcome, "signal": signal, "leg_id": leg}


# ------------------------------------------------------------------ the verdict (pure)
def test_a_parent_status_never_contradicts_a_leg_verdict_in_either_order():
    state = new_caller("p", NEW_CALLER)
    assert calls.decide(state, signal("MISSED", "leg", LEG), T0) == "MISSED"
    assert calls.decide(state, signal("ANSWERED", "parent"), T0) is None
    state = new_caller("p", NEW_CALLER)
    assert calls.decide(state, signal("ANSWERED", "parent"), T0) == "ANSWERED"
    assert calls.decide(state, signal("MISSED", "leg", LEG), T0) == "MISSED"


def test_a_machine_on_the_answered_leg_makes_the_call_missed():
    state = new_caller("p", NEW_CALLER)
    assert calls.decide(state, signal("ANSWERED", "leg", LEG), T0) == "ANSWERED"
    assert calls.decide(state, signal("MISSED", "machine", LEG), T0) == "MISSED"
    # the Dial verdict "completed" on the same leg afterwards is still the machine's
    assert calls.decide(state, signal("ANSWERED", "leg", LEG), T0) is None


def test_a_person_on_one_leg_is_not_undone_by_another_leg():
    state = new_caller("p", NEW_CALLER)
    assert calls.decide(state, signal("ANSWERED", "leg", LEG), T0) == "ANSWERED"
    assert (
        calls.decide(state, signal("MISSED", "leg", OTHER_LEG), T0) is None
    )  # a ring-group member who did not pick up
    assert calls.decide(state, signal("MISSED", "machine", OTHER_LEG), T0) is None  # another member's voicemail
    assert calls.decide(state, signal("VOICEMAIL", "leg", OTHER_LEG), T0) is None


def test_a_miss_then_a_person_answering_is_answered():
    state = new_caller("p", NEW_CALLER)
    assert calls.decide(state, signal("MISSED", "leg", LEG), T0) == "MISSED"
    assert calls.decide(state, signal("ANSWERED", "leg", OTHER_LEG), T0) == "ANSWERED"


def test_voicemail_upgrades_a_miss_and_a_leg_ringing_out_does_not_undo_it():
    state = new_caller("p", NEW_CALLER)
    assert calls.decide(state, signal("MISSED", "leg", LEG), T0) == "MISSED"
    assert calls.decide(state, signal("VOICEMAIL", "leg"), T0) == "VOICEMAIL"
    assert calls.decide(state, signal("MISSED", "leg", OTHER_LEG), T0) is None
    assert calls.decide(state, signal("MISSED", "machine", LEG), T0) is None


def test_each_call_has_its_own_verdict_and_the_verdicts_are_bounded_and_expire():
    state = new_caller("p", NEW_CALLER)
    for n in range(calls.CALLS_MAX + 5):
        assert calls.decide(state, signal("MISSED", "leg", call=f"CA{n}"), T0 + n) == "MISSED"
    assert len(state["calls"]) == calls.CALLS_MAX
    assert "CA0" not in state["calls"] and f"CA{calls.CALLS_MAX + 4}" in state["calls"]
    calls.decide(state, signal("MISSED", "leg", call="late"), T0 + calls.CALLS_MS + 100)
    assert list(state["calls"]) == ["late"]


# ------------------------------------------------------------------ the workflow, a Twilio <Dial>-forwarded call
def forwarded(h: Harness, order: list[str], *, machine: bool = False, answered: bool = False) -> None:
    """The signals of one forwarded call, in `order`: parent `completed` (a long ringing
    time: ANSWERED by the parent's own rule), the dialed leg answered, its AMD result, the
    Dial action's verdict."""
    dial = "ANSWERED" if (answered or machine) else "MISSED"
    sent = {
        "parent": dict(outcome="ANSWERED", signal="parent", provider_status="completed", duration_s=40),
        "leg_answered": dict(outcome="ANSWERED", signal="leg", leg_id=LEG, provider_status="in-progress"),
        "amd": dict(outcome="MISSED", signal="machine", leg_id=LEG, provider_status="machine_end_beep"),
        "dial": dict(outcome=dial, signal="leg", leg_id=LEG, provider_status="dial-" + dial.lower()),
    }
    for name in order:
        h.event(NEW_CALLER, call_id=PARENT, event_id=f"twilio:{PARENT}:{name}", **sent[name])


@pytest.mark.parametrize("order", [["dial", "parent"], ["parent", "dial"]])
def test_a_forwarded_call_nobody_answered_gets_one_first_sms_in_either_order(order):
    h = Harness()
    forwarded(h, order)
    h.at(hold() + MIN)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert h.state(NEW_CALLER)["case"]["calls"] == 1


@pytest.mark.parametrize("order", list(itertools.permutations(["parent", "leg_answered", "amd", "dial"])))
def test_a_forwarded_call_a_cell_phone_voicemail_picked_up_is_missed_in_any_order(order):
    h = Harness()
    forwarded(h, list(order), machine=True)
    h.at(hold() + MIN)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert [o["state"] for o in h.outcomes] in (["OPEN", "RESPONDED"], ["OPEN", "SUPPRESSED", "OPEN", "RESPONDED"])


def test_an_answered_leg_within_the_hold_cancels_the_first_response_at_once():
    h = Harness()
    h.missed()  # an earlier missed call: a case waits out its hold
    h.at(20_000)
    forwarded(h, ["leg_answered"], answered=True)  # the patient calls again and a person answers
    assert h.states() == ["OPEN", "SUPPRESSED"]
    h.at(10 * MIN)  # the call lasts minutes: its parent `completed` and Dial verdict come much later
    forwarded(h, ["dial", "parent"], answered=True)
    h.at(3 * HOUR)
    assert h.actions == []
    assert h.states() == ["OPEN", "SUPPRESSED"]


def test_a_ring_group_member_not_picking_up_before_another_answers_sends_nothing():
    h = Harness()
    h.event(NEW_CALLER, call_id=PARENT, outcome="MISSED", signal="leg", leg_id="party-1")
    h.at(5_000)
    h.event(NEW_CALLER, call_id=PARENT, outcome="ANSWERED", signal="leg", leg_id="party-2")
    h.at(3 * HOUR)
    assert h.actions == []
    assert h.states() == ["OPEN", "SUPPRESSED"]


def test_a_voicemail_after_the_miss_of_the_same_call_is_one_call_with_a_voicemail():
    h = Harness()
    h.event(NEW_CALLER, call_id=PARENT, outcome="MISSED", signal="leg", leg_id=LEG)
    h.event(NEW_CALLER, call_id=PARENT, outcome="VOICEMAIL", signal="parent")  # parent `completed` + recording
    case = h.state(NEW_CALLER)["case"]
    assert (case["calls"], case["voicemail"]) == (1, True)


def test_a_redelivered_signal_and_a_signal_that_decides_nothing_are_counted_not_acted_on():
    h = Harness()
    first = h.event(NEW_CALLER, call_id=PARENT, outcome="MISSED", signal="leg", leg_id=LEG)
    h.event(NEW_CALLER, call_id=PARENT, outcome="MISSED", signal="leg", leg_id=LEG, event_id=first["event_id"])
    h.event(NEW_CALLER, call_id=PARENT, outcome="ANSWERED", signal="parent")
    assert h.ignored == ["duplicate_event", "call_already_decided"]
    assert h.state(NEW_CALLER)["case"]["state"] == "OPEN"


def test_an_answered_call_with_no_case_keeps_its_verdict_for_the_signals_after_it():
    h = Harness()
    forwarded(h, ["leg_answered"], answered=True)
    assert h.state(NEW_CALLER)["case"] is None
    forwarded(h, ["parent"])  # a short parent status would not make it a miss either
    h.event(NEW_CALLER, call_id=PARENT, outcome="MISSED", signal="parent", provider_status="completed")
    h.advance(DAY)
    assert h.actions == [] and h.outcomes == []
