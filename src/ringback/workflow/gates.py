"""What a due timer does: the recipe step it runs, and the TICK that fires the due ones.

`first_response` decides the scenario again (the hold gives an EHR sync or a voicemail
transcription time to arrive) and runs that scenario's first step; the later gates
belong to their scenario, the expiry to the case. When timers are due and how they are
found: workflow/timers.py.
"""

from __future__ import annotations

from collections.abc import Callable

from ringback.domain import classify as cls
from ringback.domain.practice import Practice
from ringback.workflow import cases, ehr, general_inquiry, new_patient, reschedule, timers, urgent
from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case, ehr_key

MAX_FIRED_PER_RUN = 20  # timers of one case fired in one run (each fires once; a guard against a loop)
RETRY_UNKNOWN_PRACTICE_MS = 60_000  # a practice not loaded (yet): look at its cases again then


def first_response(run: Run, practice: Practice, state: CallerState, case: Case) -> None:
    data = ehr.load(run, ehr_key(practice.id, state["caller"]))
    decided = cls.classify(data["patient"], data["flags"].values(), case["transcript"])
    case["scenario"], case["reason"] = decided.scenario, decided.reason
    if decided.scenario == cls.NEW_PATIENT:
        new_patient.first_response(run, practice, state, case)
    elif decided.scenario == cls.URGENT_EXISTING:
        urgent.first_response(run, practice, state, case, data, decided)
    elif decided.scenario == cls.RESCHEDULE:
        reschedule.first_response(run, practice, state, case)
    else:
        general_inquiry.first_response(run, practice, state, case)


GATES: dict[str, Callable[[Run, Practice, CallerState, Case], None]] = {
    timers.FIRST_RESPONSE: first_response,
    timers.FOLLOWUP: new_patient.followup,
    timers.ESCALATION: urgent.escalation,
    timers.PROTECT: reschedule.protect,
    timers.EXPIRE: cases.expire,
}


def run_due(run: Run, practice: Practice, state: CallerState) -> None:
    """Fire this caller's timers that are due (a zero hold fires while the call is processed)."""
    for _ in range(MAX_FIRED_PER_RUN):
        case = state["case"]
        if case is None:
            return
        name = timers.next_due(case, run.now)
        if name is None:
            return
        due, _ = case["timers"].pop(name)
        run.tx.fired.append((name, run.now - due))
        GATES[name](run, practice, state, case)


def tick(run: Run) -> None:
    """Fire every gate of this partition due up to now (see workflow/timers.py)."""
    past, current, done_keys, new_cursor = timers.due_entries(run.tx, run.partition, run.now)
    if new_cursor is None:
        return
    states: dict[str, CallerState] = {}
    for from_past, entries in ((True, past), (False, current)):
        for ck, _, indexed in entries:
            state: CallerState | None = states.get(ck) or run.tx.get(ck)
            if state is None:
                continue
            case = state["case"]
            if case is None or case.get("indexed") != indexed:
                continue  # closed, or indexed again since: a stale entry
            if indexed > run.now and not from_past:
                continue  # later in the current second: a later tick sees it
            states[ck] = state
            practice = run.practices.by_id(state["practice_id"])
            if practice is not None:
                run_due(run, practice, state)
            elif state["case"] is not None:  # config not loaded (yet): look again in a minute
                state["case"]["timers"] = {
                    n: [max(t[0], run.now + RETRY_UNKNOWN_PRACTICE_MS), t[1]]
                    for n, t in state["case"]["timers"].items()
                }
            if state["case"] is not None:
                state["case"]["indexed"] = None  # save_caller indexes it at its next due time
    # Order: the cases (each indexed again before it is written), then the deletions of
    # the handled buckets, the cursor last.
    for ck, state in states.items():
        timers.save_caller(run, ck, state)
    for key in reversed(done_keys):
        run.tx.delete(key)
    timers.set_cursor(run.tx, run.partition, new_cursor)
