"""Classification of missed calls (domain/classify.py): every branch."""

from __future__ import annotations

import pytest

from ringback.domain import classify as c

PATIENT = {"patient_id": "p1", "display_name": "Ann Example", "deceased": False}


def flag(**kw) -> dict:
    base = {
        "flag_id": "f1",
        "code": "note",
        "display": None,
        "priority": None,
        "status": "active",
        "callback_requested": False,
        "updated_at": 1,
    }
    return {**base, **kw}


def call(**kw) -> dict:
    base = {"event_type": "CALL", "direction": "INBOUND", "outcome": "MISSED"}
    return {**base, **kw}


# ------------------------------------------------------------------ which events open a case
@pytest.mark.parametrize(
    "event, opens",
    [
        (call(), True),
        (call(outcome="VOICEMAIL"), True),
        (call(outcome="ANSWERED"), False),
        (call(outcome="OTHER"), False),
        (call(direction="OUTBOUND"), False),
        ({"event_type": "TRANSCRIPTION", "direction": "INBOUND", "outcome": None}, False),
        ({"event_type": "SMS", "direction": "INBOUND", "outcome": None}, False),
    ],
)
def test_opens_case(event, opens):
    assert c.opens_case(event) is opens


def test_answered_inbound_is_only_an_answered_inbound_call():
    assert c.answered_inbound(call(outcome="ANSWERED"))
    assert not c.answered_inbound(call(outcome="ANSWERED", direction="OUTBOUND"))
    assert not c.answered_inbound(call())


# ------------------------------------------------------------------ ignored callers
def test_own_and_blocked_numbers_are_ignored_with_a_reason():
    own, blocked = ["+13125550100"], ["+13125550199"]
    assert c.ignore_reason("+13125550100", own, blocked) == c.IGNORED_OWN_NUMBER
    assert c.ignore_reason("+13125550199", own, blocked) == c.IGNORED_BLOCKED
    assert c.ignore_reason("+14155550123", own, blocked) is None


# ------------------------------------------------------------------ scenarios
def test_unknown_caller_is_a_new_patient_even_with_flags_or_a_reschedule_voicemail():
    decided = c.classify(None, [flag(callback_requested=True)], "I need to reschedule")
    assert decided.scenario == c.NEW_PATIENT
    assert decided.urgent_flag is None


@pytest.mark.parametrize(
    "f",
    [
        flag(callback_requested=True),
        flag(code="callback-requested"),
        flag(code="refill-request"),
        flag(code="Urgent"),
        flag(priority="PH"),
    ],
)
def test_known_patient_with_an_active_urgency_or_callback_flag_is_urgent(f):
    decided = c.classify(PATIENT, [f], "I need to reschedule")  # urgency wins over a reschedule
    assert decided.scenario == c.URGENT_EXISTING
    assert decided.urgent_flag == f


@pytest.mark.parametrize(
    "f",
    [
        flag(callback_requested=True, status="inactive"),
        flag(code="refill-request", status="entered-in-error"),
        flag(code="billing-hold", priority="PM"),
        flag(priority="PL"),
    ],
)
def test_inactive_or_non_urgent_flags_do_not_make_a_call_urgent(f):
    assert c.classify(PATIENT, [f]).scenario == c.GENERAL_INQUIRY


def test_callback_request_is_the_reason_shown_first():
    refill = flag(flag_id="a", code="refill-request", display="Open refill request", updated_at=5)
    callback = flag(flag_id="b", callback_requested=True, display="Nurse line: call back", updated_at=1)
    decided = c.classify(PATIENT, [refill, callback])
    assert decided.urgent_flag is callback
    assert c.urgency_reason(callback) == "Nurse line: call back"
    assert c.urgency_reason(flag(callback_requested=True)) == "callback requested"
    assert c.urgency_reason(flag(code="refill-request")) == "refill-request"


@pytest.mark.parametrize(
    "text",
    [
        "Hi, I need to reschedule my appointment on Tuesday",
        "I'd like to re-schedule please",
        "Rescheduling my visit for next week",
        "can I change my appointment",
        "I want to move my appointment to Friday",
        "Could we switch the appointment",
        "I need to cancel",
        "I'm calling to cancel my appointment",
        "please cancel, thanks",
        "do you have a different time available",
        "is there another day I could come",
        "I need to postpone",
        "I can't make it on Thursday",
        "I won't be able to make my appointment",
        "Not cancelling the whole thing, but I need a different time",
        "I'm not sure about the bill but I need to reschedule",
    ],
)
def test_reschedule_intent_and_its_variants(text):
    assert c.reschedule_intent(text)
    assert c.classify(PATIENT, [], text).scenario == c.RESCHEDULE


@pytest.mark.parametrize(
    "text",
    [
        "I'm not cancelling, I have a question about my bill",
        "I’m not cancelling",  # typographic apostrophe
        "I am not canceling anything",
        "no need to reschedule, just a records question",
        "I don't want to change my appointment",
        "please don't cancel my appointment",
        "I do not need to reschedule",
        "question about my bill",
        "",
    ],
)
def test_negated_or_absent_intent_is_not_a_reschedule(text):
    assert not c.reschedule_intent(text)
    assert c.classify(PATIENT, [], text or None).scenario == c.GENERAL_INQUIRY


def test_no_transcript_is_not_a_reschedule():
    assert not c.reschedule_intent(None)
    decided = c.classify(PATIENT, [], None)
    assert decided.scenario == c.GENERAL_INQUIRY
    assert "no voicemail" in decided.reason
