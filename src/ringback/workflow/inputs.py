"""The workflow's entry points: every input of one partition (or a TICK) in, state changes
and commands out.

No Kafka and no clock in the workflow: the Faust agent (worker/topology.py) hands every
input to a `Workflow` together with a `Tx` over the state table (workflow/state.py) and
`now`, then sends what the workflow emitted (actions, outcomes) and only then writes
the state changes. Unit tests drive the same code with a dict as the table.

Where things happen: cases.py (open, join, respond, escalate, convert, close), the
scenarios (new_patient.py, urgent.py, reschedule.py, general_inquiry.py), sms.py
(whether a patient SMS may go; inbound texts), ehr.py (patient, appointments, flags),
timers.py and gates.py (durable gates and what they fire).
"""

from __future__ import annotations

from collections.abc import Mapping

from ringback.domain import classify as cls
from ringback.domain import recipes
from ringback.domain.practice import Practice
from ringback.workflow import calls, cases, ehr, gates, reschedule, sms, timers
from ringback.workflow.run import Practices, Run
from ringback.workflow.state import CallerState, Tx, caller_key, ehr_key, new_caller, remember, seen

TRANSCRIPTS_MAX = 5  # voicemail transcripts a caller keeps (one may arrive before its call)


class Workflow:
    """Everything one input (or one TICK) of one partition does."""

    def __init__(self, tx: Tx, practices: Practices, now_ms: int, partition: int) -> None:
        self.run = Run(tx, practices, now_ms, partition)

    def on_call_event(self, event: Mapping) -> None:
        run = self.run
        practice = run.practices.by_id(event["practice_id"])
        if practice is None:
            run.tx.ignored.append("unknown_practice")
            return
        caller = event["caller"]
        ck = caller_key(practice.id, caller)
        state: CallerState | None = run.tx.get(ck)
        if state is not None and seen(state, event["event_id"]):
            run.tx.ignored.append("duplicate_event")
            return
        kind = event["event_type"]
        if kind == "CALL" and calls.signalled(event):
            reason = cls.ignore_reason(caller, practice.phone_numbers, practice.blocked_numbers)
            if reason:
                run.tx.ignored.append(reason)
                return
            state = state or new_caller(practice.id, caller)
            remember(state, event["event_id"], run.now)
            outcome = calls.decide(state, event, run.now)
            if outcome is None:
                run.tx.ignored.append("call_already_decided")
            else:
                self._call(practice, state, {**event, "outcome": outcome})
        elif kind == "CALL" and cls.opens_case(event):
            reason = cls.ignore_reason(caller, practice.phone_numbers, practice.blocked_numbers)
            if reason:
                run.tx.ignored.append(reason)
                return
            state = state or new_caller(practice.id, caller)
            remember(state, event["event_id"], run.now)
            self._call(practice, state, event)
        elif kind == "CALL":
            if state is None or state["case"] is None or not cls.answered_inbound(event):
                return  # an answered call of someone without an open case: nothing to do
            remember(state, event["event_id"], run.now)
            self._call(practice, state, event)
        elif kind == "TRANSCRIPTION":
            state = state or new_caller(practice.id, caller)
            remember(state, event["event_id"], run.now)
            self._transcript(practice, state, event)
        elif kind == "SMS":
            state = state or new_caller(practice.id, caller)
            remember(state, event["event_id"], run.now)
            sms.inbound(run, practice, state, event)
        else:
            return
        gates.run_due(run, practice, state)
        timers.save_caller(run, ck, state)

    def on_task_update(self, caller: str, update: Mapping) -> None:
        """A staff update from the console (`caller`: from the record key practice|caller).
        COMPLETE of a task closes its gate and may convert or close the case (cases.task_completed);
        of the caller's reply task, the next reply makes a new task (sms.reply_task_done)."""
        run = self.run
        practice = run.practices.by_id(update["practice_id"])
        if practice is None:
            run.tx.ignored.append("unknown_practice")
            return
        ck = caller_key(practice.id, caller)
        state: CallerState | None = run.tx.get(ck)
        marker = "task:" + update["update_id"]
        if state is None:
            run.tx.ignored.append("task_update_without_case")
            return
        if seen(state, marker):
            run.tx.ignored.append("duplicate_event")
            return
        remember(state, marker, run.now)
        cid, step = recipes.step_of(update["task_id"])
        case = state["case"]
        reply_done = update["action"] == "COMPLETE" and sms.reply_task_done(state, update["task_id"])
        if case is None or case["case_id"] != cid:
            if not reply_done:
                run.tx.ignored.append("task_update_closed_case")
        elif update["action"] == "COMPLETE":
            cases.task_completed(run, state, case, step, update.get("outcome"), update["at"])
        gates.run_due(run, practice, state)
        timers.save_caller(run, ck, state)

    def on_message_status(self, status: Mapping) -> None:
        """A Twilio delivery receipt: error 21610 (unsubscribed recipient) is an opt-out."""
        if str(status.get("error_code") or "") != "21610":
            return
        run = self.run
        practice = run.practices.by_id(status["practice_id"])
        if practice is None:
            return
        ck = caller_key(practice.id, status["recipient"])
        state: CallerState = run.tx.get(ck) or new_caller(practice.id, status["recipient"])
        if sms.carrier_opt_out(state, status["received_at"]):
            timers.save_caller(run, ck, state)

    def on_patient(self, practice_id: str, phone: str, record: Mapping | None) -> None:
        ek = ehr_key(practice_id, phone)
        data = ehr.load(self.run, ek)
        data["patient"] = None if record is None else ehr.patient(record)
        ehr.save(self.run, ek, data)

    def on_flag(self, practice_id: str, phone: str, flag_id: str, record: Mapping | None) -> None:
        ek = ehr_key(practice_id, phone)
        data = ehr.load(self.run, ek)
        if record is None:
            data["flags"].pop(flag_id, None)
        else:
            data["flags"][flag_id] = ehr.flag(record)
        ehr.save(self.run, ek, data)

    def on_appointment(self, practice_id: str, phone: str, appointment_id: str, record: Mapping | None) -> None:
        """An appointment created, changed or deleted; a booking or change after the missed
        call may convert the caller's case (cases.appointment_conversion)."""
        run = self.run
        ek = ehr_key(practice_id, phone)
        data = ehr.load(run, ek)
        old = data["appointments"].get(appointment_id)
        if record is None:
            data["appointments"].pop(appointment_id, None)
            ehr.save(run, ek, data)
            return
        new = ehr.appointment(record)
        ehr.put_appointment(data, appointment_id, new, run.now)
        ehr.save(run, ek, data)
        practice = run.practices.by_id(practice_id)
        ck = caller_key(practice_id, phone)
        state: CallerState | None = run.tx.get(ck)
        if practice is None or state is None or state["case"] is None:
            return
        channel = cases.appointment_conversion(state["case"], old, new)
        if channel:
            cases.convert(run, state, channel, new.get("updated_at") or run.now)
        gates.run_due(run, practice, state)
        timers.save_caller(run, ck, state)

    def on_tick(self) -> None:
        """Fire every gate of this partition due up to now (workflow/gates.py)."""
        gates.tick(self.run)

    def _call(self, practice: Practice, state: CallerState, event: Mapping) -> None:
        """What a call was (its outcome decided) does to the caller's case."""
        case = state["case"]
        if cls.opens_case(event):
            if case is None:
                cases.open_case(self.run, practice, state, event)
            else:
                cases.join(case, state, event)
        elif cls.answered_inbound(event) and case is not None:
            cases.answered(self.run, state, case, event)

    def _transcript(self, practice: Practice, state: CallerState, event: Mapping) -> None:
        """A voicemail transcript: kept for the case its call opens or joins (it may come first)."""
        text = event.get("transcript") or ""
        call_id = event["provider_call_id"]
        kept = dict(state["transcripts"])
        kept[call_id] = [text, event["received_at"]]
        state["transcripts"] = dict(sorted(kept.items(), key=lambda kv: kv[1][1])[-TRANSCRIPTS_MAX:])
        case = state["case"]
        if case is None or call_id not in case["call_ids"]:
            return
        case["transcript"] = text
        reschedule.late_transcript(self.run, practice, state, case, text)
