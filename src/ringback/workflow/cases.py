"""The life of a case: opened by a missed call, joined by the next ones, responded to,
escalated by its gates, converted or closed; and the outcome record of each change.

One case per practice + caller, opened by a CALL with outcome MISSED or VOICEMAIL; its
timers (workflow/timers.py) run the recipe of its scenario (new_patient.py, urgent.py,
reschedule.py, general_inquiry.py). Every case ends in exactly one final outcome.

Conversion means an appointment: a booking, reschedule or confirmation from the EHR
feed after the missed call (`appointment_conversion`), or a callback task completed
with the outcome reached_patient (`task_completed`). The caller answering us (an SMS
reply, a call that reached staff after our response) is a *response*
(`caller_responded`): it stops the follow-up SMS but converts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ringback.domain import classify as cls
from ringback.domain import recipes
from ringback.domain.practice import Practice
from ringback.workflow import ehr, timers
from ringback.workflow.run import Run
from ringback.workflow.state import Appointment, CallerState, Case, ehr_key

# Case states (schemas/outcome.avsc CaseState).
OPEN, RESPONDED, ESCALATED = "OPEN", "RESPONDED", "ESCALATED"
CONVERTED, ESCALATED_AND_CLOSED, EXPIRED, SUPPRESSED = "CONVERTED", "ESCALATED_AND_CLOSED", "EXPIRED", "SUPPRESSED"

# How the caller responded (outcome.avsc response_channel): a response, never a conversion.
SMS_REPLY, ANSWERED_CALL = "sms_reply", "answered_call"
REACHED_PATIENT = "reached_patient"  # the callback task outcome that converts (console/views.py offers it)

CLOSED_MAX = 8  # ids of closed cases a caller keeps
CALL_IDS_MAX = 10


def open_case(run: Run, practice: Practice, state: CallerState, event: Mapping) -> None:
    """A missed call without an open case: classify it, arm the hold and the expiry."""
    data = ehr.load(run, ehr_key(practice.id, state["caller"]))
    transcript = (state["transcripts"].get(event["provider_call_id"]) or [None])[0]
    decided = cls.classify(data["patient"], data["flags"].values(), transcript)
    case: Case = {
        "case_id": recipes.case_id(practice.id, state["caller"], event["event_id"]),
        "practice_id": practice.id,
        "caller": state["caller"],
        "scenario": decided.scenario,
        "reason": decided.reason,
        "state": OPEN,
        "opened_at": event["received_at"],
        "missed_at": event["occurred_at"],
        "call_reported_at": event["received_at"],
        "calls": 1,
        "call_ids": [event["provider_call_id"]],
        "voicemail": event.get("outcome") == "VOICEMAIL",
        "transcript": transcript,
        "steps": {},
        "timers": {},
        "gen": 0,
        "first_response_at": None,
        "channel": None,
        "escalations": 0,
        "appointment": None,
        "tasks_done": {},
        "replied_at": None,
        "response_channel": None,
        "converted": False,
        "converted_at": None,
        "conversion_channel": None,
        "outcome_seq": {},
        "notes": [],
    }
    state["case"] = case
    run.tx.opened.append(case["scenario"])
    _outcome(run, case, OPEN, final=False)
    opened = case["opened_at"]
    timers.arm(case, timers.FIRST_RESPONSE, opened + recipes.first_response_delay_ms(practice, case["scenario"]))
    timers.arm(case, timers.EXPIRE, opened + recipes.window_ms(practice, "case_expiry"))


def join(case: Case, state: CallerState, event: Mapping) -> None:
    """A further missed call joins the open case (no second sequence). A call already in
    the case (its voicemail heard after its miss) is counted once."""
    if event["provider_call_id"] not in case["call_ids"]:
        case["calls"] += 1
        case["call_ids"] = (case["call_ids"] + [event["provider_call_id"]])[-CALL_IDS_MAX:]
    if event.get("outcome") == "VOICEMAIL":
        case["voicemail"] = True
    text = (state["transcripts"].get(event["provider_call_id"]) or [None])[0]
    if text:
        case["transcript"] = text


def answered(run: Run, state: CallerState, case: Case, event: Mapping) -> None:
    """The caller got through: before the first response the case is suppressed (cancel if
    answered); after it the caller responded (not a conversion: the booking it may lead
    to converts the case when the EHR feed shows it)."""
    if event["occurred_at"] < case["missed_at"] and event["provider_call_id"] not in case["call_ids"]:
        return  # an older call delivered late: it answers nothing (unless it is the missed call itself)
    if case["first_response_at"] is None:
        close(run, state, SUPPRESSED, "the caller reached staff before the first response (cancel if answered)")
    elif case["scenario"] != cls.URGENT_EXISTING:  # urgent: the clinical callback is still owed
        caller_responded(run, case, event["occurred_at"], ANSWERED_CALL)


def caller_responded(run: Run, case: Case, at: int, channel: str) -> None:
    """The caller answered us (`SMS_REPLY`, `ANSWERED_CALL`): recorded once (the first), and
    the new-patient follow-up (second SMS + callback task) is no longer due: a person
    reads the reply or spoke with the caller."""
    if case["replied_at"] is None:
        case["replied_at"], case["response_channel"] = at, channel
    if case["timers"].pop(timers.FOLLOWUP, None) is not None:
        run.tx.cancelled.append(timers.FOLLOWUP)


def task_completed(run: Run, state: CallerState, case: Case, step: str, outcome: str | None, at: int) -> None:
    """Staff completed the task of a step: its gate closes either way. A callback task
    (clinical, callback, admin, protect) with outcome reached_patient converts the case,
    with wrong_number closes it without a conversion; with left_message (or no outcome)
    it stays open for a booking."""
    case["tasks_done"][step] = at
    if step in recipes.CALLBACK_STEPS and step in case["steps"]:
        if outcome == REACHED_PATIENT:
            convert(run, state, "callback", at)
        elif outcome == "wrong_number":
            # Nobody to recover: close without counting a conversion.
            close(run, state, ESCALATED_AND_CLOSED, "callback task: wrong number")


def appointment_conversion(case: Case, old: Appointment | None, new: Appointment) -> str | None:
    """How an appointment change converts the case, if it does: a confirmed appointment
    (ehr.CONFIRMED) booked, moved or confirmed after the missed call. A request still to
    confirm (pending, proposed, waitlist), a cancellation or a no-show converts nothing:
    a cancel-and-rebook converts with the booking."""
    if (new.get("updated_at") or 0) <= case["missed_at"]:
        return None
    if new.get("status") not in ehr.CONFIRMED:
        return None
    before = old.get("status") if old else None
    if before not in ehr.BOOKED:
        kind = "booking"  # new, or after a cancellation / no-show
    elif before not in ehr.CONFIRMED:
        kind = "confirmation"  # pending / proposed / waitlist -> booked
    elif old and old.get("start") != new.get("start"):
        kind = "reschedule"
    else:
        return None  # the same slot again (booked -> arrived, a re-sync): not a new booking
    scenario = case["scenario"]
    if scenario == cls.RESCHEDULE:
        return "reschedule" if kind == "booking" else kind
    if scenario in (cls.NEW_PATIENT, cls.GENERAL_INQUIRY):
        return "confirmation" if kind == "confirmation" else "booking"
    return None  # urgent: only the clinical callback closes it


def expire(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    """The `expire` timer: the case window ended without a conversion."""
    if case["escalations"]:
        close(run, state, ESCALATED_AND_CLOSED, "escalated; case window ended without a conversion")
    else:
        close(run, state, EXPIRED, "case window ended without a conversion")


# ------------------------------------------------------------------ changes of a case
def emit(run: Run, case: Case, command: dict) -> None:
    """Emit the action of a step: one action per case and step, ever. A task goes with
    its notice to the role (recipes.task_notice): staff are told at once."""
    steps = case["steps"]
    if command["step"] in steps:
        return
    steps[command["step"]] = run.now
    _flush_open(run, case)
    run.tx.actions.append((action_key(case["practice_id"], case["caller"]), command))
    practice = run.practices.by_id(case["practice_id"]) if command["kind"] == "CREATE_TASK" else None
    notice = recipes.task_notice(practice, case, command) if practice is not None else None
    if notice is not None:
        emit(run, case, notice)


def act(
    run: Run,
    case: Case,
    kind: str,
    step: str,
    recipient: str,
    body: str | None,
    reason: str,
    *,
    priority: str = "NORMAL",
    due_at: int | None = None,
    params: Mapping[str, str] | None = None,
) -> None:
    """Emit the action command of a step of `case`, made now (`recipes.action`)."""
    emit(run, case, recipes.action(case, kind, step, recipient, body, reason, run.now, priority, due_at, params))


def alert_manager(
    run: Run, practice: Practice, case: Case, step: str, text: str, reason: str, priority: str, todo: str, task: str
) -> None:
    """Alert the department manager that the case's task `task` (a step) is late, and count the escalation."""
    manager = recipes.DEPARTMENT_MANAGER
    act(
        run,
        case,
        "ALERT_MANAGER",
        step,
        recipes.route(practice, manager),
        text,
        reason,
        priority=priority,
        params=recipes.staff_params(practice, case, manager, todo, task_id=recipes.action_id(case["case_id"], task)),
    )
    escalate(run, case)


def action_key(practice_id: str, caller: str) -> bytes:
    """The record key of an action: practice|caller (the patient's number, also for staff actions)."""
    return f"{practice_id}|{caller}".encode()


def responded(run: Run, case: Case, at: int, channel: str) -> None:
    if case["first_response_at"] is not None:
        return
    case["first_response_at"] = at
    case["channel"] = channel
    case["state"] = RESPONDED
    _outcome(run, case, RESPONDED, final=False)


def escalate(run: Run, case: Case) -> None:
    case["escalations"] += 1
    case["state"] = ESCALATED
    _outcome(run, case, ESCALATED, final=False)


def convert(run: Run, state: CallerState, channel: str, at: int) -> None:
    case = state["case"]
    assert case is not None
    case["converted"], case["converted_at"], case["conversion_channel"] = True, at, channel
    close(run, state, CONVERTED, None)


def close(run: Run, state: CallerState, final_state: str, reason: str | None) -> None:
    case = state["case"]
    assert case is not None
    case["state"] = final_state
    run.tx.cancelled.extend(case["timers"])
    case["timers"] = {}  # their index entries become stale and are skipped
    _outcome(run, case, final_state, final=True, reason=reason)
    state["closed"] = (state["closed"] + [case["case_id"]])[-CLOSED_MAX:]
    state["case"] = None


def _outcome(run: Run, case: Case, state_name: str, final: bool, reason: str | None = None) -> None:
    seq = case["outcome_seq"].get(state_name, 0) + 1
    case["outcome_seq"][state_name] = seq
    practice = run.practices.by_id(case["practice_id"])
    first = case["first_response_at"]
    latency = first - case["missed_at"] if first is not None else None
    within = None
    if latency is not None and practice is not None:
        within = latency <= recipes.response_window_ms(practice, case["scenario"])
    record: dict[str, Any] = {
        "outcome_id": f"{case['case_id']}:{state_name}" + (f":{seq}" if seq > 1 else ""),
        "case_id": case["case_id"],
        "practice_id": case["practice_id"],
        "scenario": case["scenario"],
        "state": state_name,
        "final": final,
        "missed_at": case["missed_at"],
        "first_response_at": first,
        "response_latency_ms": latency,
        "within_window": within,
        "escalations": case["escalations"],
        "converted": case["converted"],
        "converted_at": case["converted_at"],
        "conversion_channel": case["conversion_channel"],
        "responded": case["replied_at"] is not None,
        "responded_at": case["replied_at"],
        "response_channel": case.get("response_channel"),
        "channel": case["channel"],
        "reason": reason,
        "at": run.now,
        "record_type": "CASE",
        "action_id": None,
        "action_kind": None,
        "action_result": None,
    }
    if state_name == OPEN:
        # Sent with the case's next record (its first response, usually): opening a case
        # then writes state only, and a TICK sends the first responses of many cases
        # together. A crash in between loses nothing: the record waits in the case.
        case["open_record"] = record
        return
    _flush_open(run, case)
    run.tx.outcomes.append(record)


def _flush_open(run: Run, case: Case) -> None:
    record = case.pop("open_record", None)
    if record is not None:
        record["scenario"] = case["scenario"]  # as decided at the first response
        for name, opened in (("responded", False), ("responded_at", None), ("response_channel", None)):
            record.setdefault(name, opened)  # an OPEN record stored before these fields existed
        run.tx.outcomes.append(record)
