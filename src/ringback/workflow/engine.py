"""Cases and workflow steps: inputs of one partition in, state changes and commands out.

No Kafka and no clock in here: the Faust agent (streams/topology.py) hands every
input to a `Workflow` together with a `Tx` over the state table and `now`, then
sends what the workflow emitted (actions, outcomes) and only then writes the
state changes. Unit tests drive the same code with a dict as the table.

State table layout (one changelog-backed table, `state`, so one changelog partition
per partition and a crash keeps a consistent prefix of every kind of write):

  c|<practice>|<caller>   the caller: open case, consent, SMS send times, seen event ids
  e|<practice>|<phone>    EHR join data: patient, appointments by id, flags by id
  t|<partition>|<second>  due-index of gate timers (streams/timers.py)
  m|<partition>           partition meta: timer cursor, offsets of the last emitted records

A case (per practice + caller) is opened by a missed call (MISSED or VOICEMAIL);
further missed calls join it. Its timers: `first_response` (the cancel-if-answered
hold), `followup` (new patient 2 h), `escalation` (urgent 45 min), `protect`
(reschedule 4 h) and `expire` (case_expiry, 24 h).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from ringback.domain import classify as cls
from ringback.domain import consent, recipes
from ringback.domain.practice import Practice
from ringback.domain.recipes import (
    ACK_SMS,
    ADMIN_TASK,
    CALLBACK_STEPS,
    CALLBACK_TASK,
    CLINICAL_TASK,
    FIRST_SMS,
    MANAGER_ALERT,
    NOTIFY_COORDINATOR,
    NOTIFY_SCHEDULING,
    OPTOUT_CONFIRMATION,
    PROTECT_ALERT,
    PROTECT_TASK,
    RESCHEDULE_SMS,
    SECOND_SMS,
)
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.workflow import timers

NEW, URGENT, RESCHEDULE, GENERAL = cls.NEW_PATIENT, cls.URGENT_EXISTING, cls.RESCHEDULE, cls.GENERAL_INQUIRY

# Case states (schemas/outcome.avsc CaseState).
OPEN, RESPONDED, ESCALATED = "OPEN", "RESPONDED", "ESCALATED"
CONVERTED, ESCALATED_AND_CLOSED, EXPIRED, SUPPRESSED = "CONVERTED", "ESCALATED_AND_CLOSED", "EXPIRED", "SUPPRESSED"

# Timers.
FIRST_RESPONSE, FOLLOWUP, ESCALATION, PROTECT, EXPIRE = "first_response", "followup", "escalation", "protect", "expire"

# Appointment statuses (FHIR) that hold a slot.
BOOKED = frozenset({"booked", "pending", "proposed", "arrived", "checked-in", "fulfilled", "waitlist"})
UPCOMING = frozenset({"booked", "pending", "proposed", "arrived", "checked-in"})

SEEN_MAX, SEEN_MS = 256, 7 * 86_400_000
TRANSCRIPTS_MAX = 5
CLOSED_MAX = 8


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


def caller_key(practice_id: str, phone: str) -> str:
    return f"c|{practice_id}|{phone}"


def ehr_key(practice_id: str, phone: str) -> str:
    return f"e|{practice_id}|{phone}"


def index_entry_pending(read: Callable[[str], Any], entry: list) -> bool:
    """Whether a due-index entry `[caller_key, "case", indexed]` still stands for pending
    timers: the check `Workflow.on_tick` makes before firing (streams/timers.py)."""
    state = read(entry[0])
    case = state.get("case") if state else None
    return bool(case) and case.get("indexed") == entry[2] and bool(case.get("timers"))


class Tx:
    """The state table as one input sees it: reads through, writes buffered.

    `writes` is ordered by each key's *last* write, which is the order the agent
    writes them to the table after the emitted records are acknowledged."""

    def __init__(self, read: Callable[[str], Any], copy_reads: bool = True) -> None:
        self._read = read
        self._copy = copy_reads
        self.writes: dict[str, Any] = {}
        self.actions: list[tuple[bytes, dict]] = []  # (record key practice|caller, action command)
        self.outcomes: list[dict] = []
        self.ignored: list[str] = []  # metric labels: why an input did nothing
        self.fired: list[tuple[str, int]] = []  # (timer, ms after due)
        self.opened: list[str] = []  # scenarios of cases opened
        self.cancelled: list[str] = []  # timers dropped unfired because their case closed (metrics)

    def get(self, key: str) -> Any:
        if key in self.writes:
            value = self.writes[key]
            return None if value is DELETE else copy.deepcopy(value)
        value = self._read(key)
        if value is None:
            return None
        return copy.deepcopy(value) if self._copy else value

    def set(self, key: str, value: Any) -> None:
        self.writes.pop(key, None)
        self.writes[key] = value

    def delete(self, key: str) -> None:
        self.writes.pop(key, None)
        self.writes[key] = DELETE


def _new_caller(practice_id: str, caller: str) -> dict:
    return {
        "practice_id": practice_id,
        "caller": caller,
        "case": None,
        "seen": [],
        "sms_sent": [],
        "consent": {"opted_out": False, "changed_at": None, "optouts": 0, "source": None},
        "transcripts": {},
        "closed": [],
    }


def _opt_out_keyword(body: str) -> bool:
    word = re.sub(r"\s+", " ", re.sub(r"[^\w\s-]", "", body)).strip().upper()
    return word in consent.OPT_OUT_KEYWORDS


class Workflow:
    """Everything one input (or one TICK) of one partition does."""

    def __init__(self, tx: Tx, directory: PracticeDirectory, now_ms: int, partition: int) -> None:
        self.tx = tx
        self.directory = directory
        self.now = now_ms
        self.partition = partition

    # ================================================================== inputs
    def on_call_event(self, event: Mapping) -> None:
        practice = self.directory.by_id(event["practice_id"])
        if practice is None:
            self.tx.ignored.append("unknown_practice")
            return
        caller = event["caller"]
        ck = caller_key(practice.id, caller)
        state = self.tx.get(ck)
        if state is not None and self._seen(state, event["event_id"]):
            self.tx.ignored.append("duplicate_event")
            return
        kind = event["event_type"]
        if kind == "CALL" and cls.opens_case(event):
            reason = cls.ignore_reason(caller, practice.phone_numbers, practice.blocked_numbers)
            if reason:
                self.tx.ignored.append(reason)
                return
            state = state or _new_caller(practice.id, caller)
            self._remember(state, event["event_id"])
            if state["case"] is None:
                self._open_case(practice, state, ck, event)
            else:
                self._join_case(state, event)
        elif kind == "CALL":
            if state is None or state["case"] is None or not cls.answered_inbound(event):
                return  # an answered call of someone without an open case: nothing to do
            self._remember(state, event["event_id"])
            self._answered(practice, state, event)
        elif kind == "TRANSCRIPTION":
            state = state or _new_caller(practice.id, caller)
            self._remember(state, event["event_id"])
            self._transcript(practice, state, ck, event)
        elif kind == "SMS":
            state = state or _new_caller(practice.id, caller)
            self._remember(state, event["event_id"])
            self._inbound_sms(practice, state, ck, event)
        else:
            return
        self._run_due(practice, state, ck)
        self._save(ck, state)

    def on_task_update(self, caller: str, update: Mapping) -> None:
        """A staff update from the console (`caller`: from the record key practice|caller).
        COMPLETE of a callback task (clinical, callback, admin, protect) closes that task's
        gate; with outcome reached_patient (or none) the case converts, with wrong_number it
        closes without a conversion, with left_message it stays open for a reply or booking."""
        practice = self.directory.by_id(update["practice_id"])
        if practice is None:
            self.tx.ignored.append("unknown_practice")
            return
        ck = caller_key(practice.id, caller)
        state = self.tx.get(ck)
        marker = "task:" + update["update_id"]
        if state is None:
            self.tx.ignored.append("task_update_without_case")
            return
        if self._seen(state, marker):
            self.tx.ignored.append("duplicate_event")
            return
        self._remember(state, marker)
        cid, step = recipes.step_of(update["task_id"])
        case = state["case"]
        if case is None or case["case_id"] != cid:
            self.tx.ignored.append("task_update_closed_case")
        elif update["action"] == "COMPLETE":
            case["tasks_done"][step] = update["at"]  # staff acted: the task's gate closes either way
            if step in CALLBACK_STEPS and step in case["steps"]:
                outcome = update.get("outcome") or "reached_patient"
                if outcome == "reached_patient":
                    self._convert(state, "callback", update["at"])
                elif outcome == "wrong_number":
                    # Nobody to recover: close without counting a conversion.
                    self._close(state, ESCALATED_AND_CLOSED, "callback task: wrong number")
                # left_message: the case stays open for a reply or a booking until its window ends.
        self._run_due(practice, state, ck)
        self._save(ck, state)

    def on_message_status(self, status: Mapping) -> None:
        """A Twilio delivery receipt: error 21610 (unsubscribed recipient) is an opt-out."""
        if str(status.get("error_code") or "") != "21610":
            return
        practice = self.directory.by_id(status["practice_id"])
        if practice is None:
            return
        ck = caller_key(practice.id, status["recipient"])
        state = self.tx.get(ck) or _new_caller(practice.id, status["recipient"])
        if not state["consent"]["opted_out"]:
            state["consent"].update(opted_out=True, changed_at=status["received_at"], source="carrier_21610")
            state["consent"]["optouts"] += 1
            self._save(ck, state)

    def on_patient(self, practice_id: str, phone: str, record: Mapping | None) -> None:
        ek = ehr_key(practice_id, phone)
        ehr = self._ehr(ek)
        ehr["patient"] = (
            None
            if record is None
            else {
                k: record.get(k) for k in ("patient_id", "display_name", "deceased", "assigned_provider", "updated_at")
            }
        )
        self._save_ehr(ek, ehr)

    def on_flag(self, practice_id: str, phone: str, flag_id: str, record: Mapping | None) -> None:
        ek = ehr_key(practice_id, phone)
        ehr = self._ehr(ek)
        if record is None:
            ehr["flags"].pop(flag_id, None)
        else:
            ehr["flags"][flag_id] = {
                k: record.get(k)
                for k in ("flag_id", "code", "display", "priority", "status", "callback_requested", "updated_at")
            }
        self._save_ehr(ek, ehr)

    def on_appointment(self, practice_id: str, phone: str, appointment_id: str, record: Mapping | None) -> None:
        ek = ehr_key(practice_id, phone)
        ehr = self._ehr(ek)
        old = ehr["appointments"].get(appointment_id)
        if record is None:
            ehr["appointments"].pop(appointment_id, None)
            self._save_ehr(ek, ehr)
            return
        new = {k: record.get(k) for k in ("appointment_id", "start", "status", "updated_at")}
        ehr["appointments"][appointment_id] = new
        # Keep the table small: appointments long past are of no use to any rule.
        horizon = self.now - 30 * 86_400_000
        ehr["appointments"] = {k: v for k, v in ehr["appointments"].items() if (v.get("start") or 0) >= horizon}
        self._save_ehr(ek, ehr)
        practice = self.directory.by_id(practice_id)
        ck = caller_key(practice_id, phone)
        state = self.tx.get(ck)
        if practice is None or state is None or state["case"] is None:
            return
        channel = self._appointment_conversion(state["case"], old, new)
        if channel:
            self._convert(state, channel, new.get("updated_at") or self.now)
        self._run_due(practice, state, ck)
        self._save(ck, state)

    def on_tick(self) -> None:
        """Fire every gate of this partition due up to now (see streams/timers.py)."""
        past, current, done_keys, new_cursor = timers.due_entries(self.tx, self.partition, self.now)
        if new_cursor is None:
            return
        states: dict[str, dict] = {}
        for from_past, entries in ((True, past), (False, current)):
            for ck, _, indexed in entries:
                state = states.get(ck) or self.tx.get(ck)
                if state is None:
                    continue
                case = state["case"]
                if case is None or case.get("indexed") != indexed:
                    continue  # closed, or indexed again since: a stale entry
                if indexed > self.now and not from_past:
                    continue  # later in the current second: a later tick sees it
                states[ck] = state
                practice = self.directory.by_id(state["practice_id"])
                if practice is not None:
                    self._run_due(practice, state, ck)
                elif state["case"] is not None:  # config not loaded (yet): look again in a minute
                    state["case"]["timers"] = {
                        n: [max(t[0], self.now + 60_000), t[1]] for n, t in state["case"]["timers"].items()
                    }
                if state["case"] is not None:
                    state["case"]["indexed"] = None  # _save indexes it at its next due time
        # Order: the cases (each indexed again before it is written), then the deletions of
        # the handled buckets, the cursor last.
        for ck, state in states.items():
            self._save(ck, state)
        for key in reversed(done_keys):
            self.tx.delete(key)
        timers.set_cursor(self.tx, self.partition, new_cursor)

    # ================================================================== cases
    def _open_case(self, practice: Practice, state: dict, ck: str, event: Mapping) -> None:
        ehr = self._ehr(ehr_key(practice.id, state["caller"]))
        transcript = (state["transcripts"].get(event["provider_call_id"]) or [None])[0]
        decided = cls.classify(ehr["patient"], ehr["flags"].values(), transcript)
        case = {
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
            "converted": False,
            "converted_at": None,
            "conversion_channel": None,
            "outcome_seq": {},
            "notes": [],
        }
        state["case"] = case
        self.tx.opened.append(case["scenario"])
        self._outcome(case, OPEN, final=False)
        opened = case["opened_at"]
        self._arm(ck, case, FIRST_RESPONSE, opened + recipes.first_response_delay_ms(practice, case["scenario"]))
        self._arm(ck, case, EXPIRE, opened + recipes.window_ms(practice, "case_expiry"))

    def _join_case(self, state: dict, event: Mapping) -> None:
        case = state["case"]
        case["calls"] += 1
        case["call_ids"] = (case["call_ids"] + [event["provider_call_id"]])[-10:]
        if event.get("outcome") == "VOICEMAIL":
            case["voicemail"] = True
        text = (state["transcripts"].get(event["provider_call_id"]) or [None])[0]
        if text:
            case["transcript"] = text

    def _answered(self, practice: Practice, state: dict, event: Mapping) -> None:
        case = state["case"]
        if event["occurred_at"] < case["missed_at"]:
            return  # an older call delivered late: it answers nothing
        if case["first_response_at"] is None:
            self._close(state, SUPPRESSED, "the caller reached staff before the first response (cancel if answered)")
        elif case["scenario"] != URGENT:
            # An urgent case needs its clinical callback, not a call that reached the front desk.
            self._convert(state, "answered_call", event["occurred_at"])

    def _transcript(self, practice: Practice, state: dict, ck: str, event: Mapping) -> None:
        text = event.get("transcript") or ""
        call_id = event["provider_call_id"]
        kept = dict(state["transcripts"])
        kept[call_id] = [text, event["received_at"]]
        state["transcripts"] = dict(sorted(kept.items(), key=lambda kv: kv[1][1])[-TRANSCRIPTS_MAX:])
        case = state["case"]
        if case is None or call_id not in case["call_ids"]:
            return
        case["transcript"] = text
        if case["first_response_at"] is not None and case["scenario"] == GENERAL and cls.reschedule_intent(text):
            # The transcript came after the general-inquiry response went out: the case
            # becomes a reschedule request and gets the reschedule steps too.
            case["scenario"] = RESCHEDULE
            case["reason"] = "voicemail asks to reschedule or cancel an appointment (transcript arrived late)"
            self._reschedule_steps(practice, state, ck, case)

    def _inbound_sms(self, practice: Practice, state: dict, ck: str, event: Mapping) -> None:
        body = event.get("sms_body") or ""
        intent = consent.sms_intent(body)
        c = state["consent"]
        if intent == consent.OPT_OUT:
            if c["opted_out"]:
                return
            by_keyword = _opt_out_keyword(body)
            c.update(opted_out=True, changed_at=event["occurred_at"], source="keyword" if by_keyword else "sentence")
            c["optouts"] += 1
            if not by_keyword:
                self._optout_confirmation(practice, state, event)
            return
        if intent == consent.OPT_IN:
            if c["opted_out"]:
                c.update(opted_out=False, changed_at=event["occurred_at"], source="keyword")
            return
        if intent == consent.HELP:
            return
        case = state["case"]
        if case is None or case["first_response_at"] is None:
            return  # a text that answers nothing of ours
        case["replied_at"] = event["occurred_at"]
        if case["scenario"] == NEW:
            self._convert(state, "sms_reply", event["occurred_at"])

    def _optout_confirmation(self, practice: Practice, state: dict, event: Mapping) -> None:
        """The single confirmation text a sentence opt-out may get (keyword opt-outs are
        confirmed by the carrier/Twilio itself)."""
        case = state["case"]
        n = state["consent"]["optouts"]
        if case is None:
            case = {
                "case_id": recipes.case_id(practice.id, state["caller"], event["event_id"]),
                "practice_id": practice.id,
                "caller": state["caller"],
                "scenario": GENERAL,
                "missed_at": None,
                "call_reported_at": None,
                "steps": {},
            }
            step = OPTOUT_CONFIRMATION
        else:
            step = OPTOUT_CONFIRMATION if n == 1 else f"{OPTOUT_CONFIRMATION}_{n}"
        command = recipes.action(
            case,
            "SEND_SMS",
            step,
            state["caller"],
            recipes.render(practice, "optout_confirmation"),
            "confirmation of an opt-out sent in a sentence",
            self.now,
            params={"consent_confirmation": "1", "template": "optout_confirmation"},
        )
        self._emit(case, command)

    def _appointment_conversion(self, case: dict, old: Mapping | None, new: Mapping) -> str | None:
        """How an appointment change converts the case, if it does (bookings after the call only)."""
        if (new.get("updated_at") or 0) <= case["missed_at"]:
            return None
        if old and old.get("start") == new.get("start") and old.get("status") == new.get("status"):
            return None  # the same record again
        status = new.get("status")
        was_booked = bool(old) and old.get("status") in BOOKED
        if status in BOOKED:
            if was_booked and old.get("start") == new.get("start"):
                return None  # booked -> arrived etc.: not a new booking
            kind = "reschedule" if was_booked else "booking"
        elif status == "cancelled" and was_booked:
            kind = "cancellation"
        else:
            return None
        scenario = case["scenario"]
        if scenario == RESCHEDULE:
            return "reschedule" if kind == "booking" else kind
        if scenario in (NEW, GENERAL) and kind in ("booking", "reschedule"):
            return "booking"
        return None  # urgent: only the clinical callback closes it

    # ================================================================== timers
    def _arm(self, ck: str, case: dict, name: str, due: int) -> None:
        case["gen"] += 1
        case["timers"][name] = [due, case["gen"]]

    def _save(self, ck: str, state: dict) -> None:
        """Write the caller; first index the case at its next due timer if it is not yet.

        One index entry per case (not per timer): it says "look at this case at that
        second"; the tick then fires whatever of the case is due and indexes it again."""
        case = state["case"]
        if case is not None and case["timers"]:
            due = min(t[0] for t in case["timers"].values())
            if case.get("indexed") != due:
                timers.index(self.tx, self.partition, ck, "case", due, due, self.now)
                case["indexed"] = due
        self.tx.set(ck, state)

    def _run_due(self, practice: Practice, state: dict, ck: str) -> None:
        """Fire this caller's timers that are due (a zero hold fires while the call is processed)."""
        for _ in range(20):
            case = state["case"]
            if case is None:
                return
            due = sorted((t[0], name) for name, t in case["timers"].items() if t[0] <= self.now)
            if not due:
                return
            self._fire(practice, state, ck, due[0][1])

    def _fire(self, practice: Practice, state: dict, ck: str, name: str) -> None:
        case = state["case"]
        due, _ = case["timers"].pop(name)
        self.tx.fired.append((name, self.now - due))
        handler = {
            FIRST_RESPONSE: self._first_response,
            FOLLOWUP: self._followup,
            ESCALATION: self._escalation,
            PROTECT: self._protect,
            EXPIRE: self._expire,
        }[name]
        handler(practice, state, ck, case)

    # ================================================================== recipes
    def _first_response(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        ehr = self._ehr(ehr_key(practice.id, state["caller"]))
        # Re-decided with what the tables and the transcript say now (the hold gives an
        # EHR sync or a voicemail transcription time to arrive).
        decided = cls.classify(ehr["patient"], ehr["flags"].values(), case["transcript"])
        case["scenario"], case["reason"] = decided.scenario, decided.reason
        if decided.scenario == NEW:
            self._new_patient_first(practice, state, ck, case)
        elif decided.scenario == URGENT:
            self._urgent_first(practice, state, ck, case, ehr, decided)
        elif decided.scenario == RESCHEDULE:
            self._reschedule_steps(practice, state, ck, case)
        else:
            self._general_first(practice, state, case)

    # -- 1. new patient
    def _new_patient_first(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        body = recipes.render(practice, "new_patient_first")
        blocked, send_at = self._sms_gate(practice, state, None, body)
        coordinator = recipes.route(practice, recipes.SCHEDULING_COORDINATOR)
        if blocked is None:
            self._sms(
                practice,
                state,
                case,
                FIRST_SMS,
                "new_patient_first",
                "missed call from a number not in the patient records",
                send_at,
            )
            note = (
                "Auto-SMS with the booking link already sent."
                if send_at <= self.now
                else f"Auto-SMS with the booking link scheduled for "
                f"{recipes.local_time(send_at, practice.time_zone)} (quiet hours)."
            )
            self._responded(case, send_at, "sms")
        else:
            self._blocked_sms_task(
                practice,
                case,
                FIRST_SMS,
                blocked,
                recipes.SCHEDULING_COORDINATOR,
                case["opened_at"] + recipes.window_ms(practice, "new_patient_window"),
                "HIGH",
            )
            note = f"Auto-SMS not sent ({blocked}); a callback task was created."
            self._responded(case, self.now, "task")
        self._emit(
            case,
            recipes.action(
                case,
                "NOTIFY_STAFF",
                NOTIFY_COORDINATOR,
                coordinator,
                f"New patient missed call. {note}",
                "new patient inquiry: scheduling coordinator informed",
                self.now,
                params=recipes.staff_params(
                    practice,
                    case,
                    recipes.SCHEDULING_COORDINATOR,
                    "Be ready to book this caller; call back if they do not reply.",
                ),
            ),
        )
        self._arm(ck, case, FOLLOWUP, case["opened_at"] + recipes.window_ms(practice, "new_patient_followup"))

    def _followup(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        """2 h without a reply or booking: second SMS + manual callback task due in 4 h."""
        emitted = 0
        if SECOND_SMS not in case["steps"] and FIRST_SMS in case["steps"]:
            body = recipes.render(practice, "new_patient_second")
            blocked, send_at = self._sms_gate(practice, state, None, body)
            if blocked is None:
                self._sms(
                    practice,
                    state,
                    case,
                    SECOND_SMS,
                    "new_patient_second",
                    "new patient: no reply or booking within the follow-up window",
                    send_at,
                )
                emitted += 1
            else:
                case["notes"].append(f"second SMS not sent: {blocked}")
        if CALLBACK_TASK not in case["steps"]:
            role = recipes.SCHEDULING_COORDINATOR
            self._emit(
                case,
                recipes.action(
                    case,
                    "CREATE_TASK",
                    CALLBACK_TASK,
                    recipes.route(practice, role),
                    "Call back a new patient who has not replied or booked.",
                    "new patient: no reply or booking within the follow-up window",
                    self.now,
                    priority="NORMAL",
                    due_at=self.now + recipes.window_ms(practice, "new_patient_callback_due"),
                    params=recipes.staff_params(practice, case, role, "Call the caller back and offer an appointment."),
                ),
            )
            emitted += 1
        if emitted:
            self._escalate(case)

    # -- 2. existing patient, urgent
    def _urgent_first(
        self, practice: Practice, state: dict, ck: str, case: dict, ehr: dict, decided: cls.Classification
    ) -> None:
        patient = ehr["patient"] or {}
        if patient.get("assigned_provider"):
            role, recipient = recipes.ASSIGNED_PROVIDER, patient["assigned_provider"]
        else:
            role, recipient = recipes.NURSE, recipes.route(practice, recipes.NURSE)
        reason = cls.urgency_reason(decided.urgent_flag) if decided.urgent_flag else "urgent"
        name = patient.get("display_name") or "patient (name not on file)"
        self._emit(
            case,
            recipes.action(
                case,
                "CREATE_TASK",
                CLINICAL_TASK,
                recipient,
                f"Urgent clinical callback: {name} ({reason}).",
                "existing patient with an urgent flag called and was missed",
                self.now,
                priority="URGENT",
                due_at=case["opened_at"] + recipes.window_ms(practice, "urgent_window"),
                params=recipes.staff_params(
                    practice,
                    case,
                    role,
                    "Call the patient back within the urgent window.",
                    patient_name=name,
                    urgency_reason=reason,
                ),
            ),
        )
        body = recipes.render(practice, "urgent_ack", urgent_minutes=recipes.urgent_minutes(practice))
        blocked, send_at = self._sms_gate(practice, state, patient, body)
        if blocked is None:
            self._sms(
                practice,
                state,
                case,
                ACK_SMS,
                "urgent_ack",
                "acknowledgement of an urgent missed call",
                send_at,
                urgent_minutes=recipes.urgent_minutes(practice),
            )
            self._responded(case, min(send_at, self.now), "sms" if send_at <= self.now else "task")
        else:
            case["notes"].append(f"acknowledgement SMS not sent: {blocked}")
            self._responded(case, self.now, "task")
        self._arm(ck, case, ESCALATION, case["opened_at"] + recipes.window_ms(practice, "urgent_escalation"))

    def _escalation(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        """45 min without the clinical callback marked complete: alert the department manager."""
        if CLINICAL_TASK in case["tasks_done"]:
            return
        role = recipes.DEPARTMENT_MANAGER
        minutes = round(recipes.window_ms(practice, "urgent_escalation") / 60_000)
        self._emit(
            case,
            recipes.action(
                case,
                "ALERT_MANAGER",
                MANAGER_ALERT,
                recipes.route(practice, role),
                f"An urgent clinical callback was not completed within {minutes} min of the missed call.",
                "urgent callback not completed in time",
                self.now,
                priority="URGENT",
                params=recipes.staff_params(
                    practice,
                    case,
                    role,
                    "Make sure the urgent callback happens now, or reassign it.",
                    task_id=recipes.action_id(case["case_id"], CLINICAL_TASK),
                ),
            ),
        )
        self._escalate(case)

    # -- 3. reschedule
    def _reschedule_steps(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        ehr = self._ehr(ehr_key(practice.id, state["caller"]))
        appointment = self._next_appointment(ehr)
        role = recipes.SCHEDULING_QUEUE
        link_horizon = recipes.window_ms(practice, "reschedule_link_horizon")
        due = case["opened_at"] + recipes.window_ms(practice, "reschedule_window")
        first_time = case["first_response_at"] is None
        responded_at, channel = self.now, "task"
        if appointment is not None:
            case["appointment"] = {"appointment_id": appointment["appointment_id"], "start": appointment["start"]}
        if appointment is not None and appointment["start"] - self.now <= link_horizon:
            body = recipes.render(practice, "reschedule_link")
            blocked, send_at = self._sms_gate(practice, state, ehr["patient"], body)
            if blocked is None:
                self._sms(
                    practice,
                    state,
                    case,
                    RESCHEDULE_SMS,
                    "reschedule_link",
                    "voicemail asks to reschedule; appointment within the link horizon",
                    send_at,
                )
                responded_at, channel = min(send_at, self.now), ("sms" if send_at <= self.now else "task")
            else:
                self._blocked_sms_task(practice, case, RESCHEDULE_SMS, blocked, role, due, "NORMAL")
        else:
            why = (
                "no upcoming appointment"
                if appointment is None
                else "the next appointment is beyond the reschedule-link horizon"
            )
            self._emit(
                case,
                recipes.action(
                    case,
                    "CREATE_TASK",
                    CALLBACK_TASK,
                    recipes.route(practice, role),
                    f"Reschedule request by voicemail; {why}.",
                    f"reschedule request: {why}",
                    self.now,
                    due_at=due,
                    params={
                        **recipes.staff_params(practice, case, role, "Call the patient back to reschedule."),
                        **recipes.appointment_params(practice, appointment),
                    },
                ),
            )
        if appointment is not None:
            self._emit(
                case,
                recipes.action(
                    case,
                    "NOTIFY_STAFF",
                    NOTIFY_SCHEDULING,
                    recipes.route(practice, role),
                    f"Reschedule request for the appointment on "
                    f"{recipes.local_time(appointment['start'], practice.time_zone)}.",
                    "reschedule request by voicemail",
                    self.now,
                    params={
                        **recipes.staff_params(
                            practice,
                            case,
                            role,
                            "Reschedule the appointment if the patient does not do it with the link.",
                        ),
                        **recipes.appointment_params(practice, appointment),
                    },
                ),
            )
            self._arm(ck, case, PROTECT, case["opened_at"] + recipes.window_ms(practice, "reschedule_gate"))
        if first_time:
            self._responded(case, responded_at, channel)

    def _protect(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        """4 h gate: not rescheduled and the appointment within 48 h: high-priority task + alert."""
        target = case.get("appointment") or {}
        ehr = self._ehr(ehr_key(practice.id, state["caller"]))
        appointment = ehr["appointments"].get(target.get("appointment_id", ""))
        if appointment is None or appointment.get("status") not in UPCOMING or appointment["start"] <= self.now:
            case["notes"].append("appointment gate: nothing left to protect")
            return
        if appointment["start"] - self.now > recipes.window_ms(practice, "reschedule_protect_horizon"):
            case["notes"].append("appointment gate: appointment beyond the protection horizon")
            return
        role = recipes.SCHEDULING_QUEUE
        due = min(appointment["start"], self.now + recipes.window_ms(practice, "reschedule_window"))
        details = recipes.appointment_params(practice, appointment)
        self._emit(
            case,
            recipes.action(
                case,
                "CREATE_TASK",
                PROTECT_TASK,
                recipes.route(practice, role),
                f"Not rescheduled yet: the appointment on {details['appointment_time']} is soon. Call the patient now.",
                "reschedule request not handled and the appointment is within the protection horizon",
                self.now,
                priority="HIGH",
                due_at=due,
                params={
                    **recipes.staff_params(practice, case, role, "Call the patient and reschedule or confirm."),
                    **details,
                },
            ),
        )
        manager = recipes.DEPARTMENT_MANAGER
        self._emit(
            case,
            recipes.action(
                case,
                "ALERT_MANAGER",
                PROTECT_ALERT,
                recipes.route(practice, manager),
                f"A reschedule request is not handled and the appointment on {details['appointment_time']} is soon.",
                "reschedule request not handled; appointment within the protection horizon",
                self.now,
                priority="HIGH",
                params=recipes.staff_params(
                    practice,
                    case,
                    manager,
                    "Make sure the patient is called back today.",
                    task_id=recipes.action_id(case["case_id"], PROTECT_TASK),
                ),
            ),
        )
        self._escalate(case)

    # -- 4. general inquiry
    def _general_first(self, practice: Practice, state: dict, case: dict) -> None:
        role = recipes.ADMIN_TEAM
        self._emit(
            case,
            recipes.action(
                case,
                "CREATE_TASK",
                ADMIN_TASK,
                recipes.route(practice, role),
                "A patient called and was missed (general inquiry: billing, records, ...).",
                "general inquiry from a known patient",
                self.now,
                due_at=case["opened_at"] + recipes.window_ms(practice, "general_task_due"),
                params=recipes.staff_params(practice, case, role, "Call the patient back or answer by e-mail."),
            ),
        )
        self._responded(case, self.now, "task")

    def _expire(self, practice: Practice, state: dict, ck: str, case: dict) -> None:
        if case["escalations"]:
            self._close(state, ESCALATED_AND_CLOSED, "escalated; case window ended without a conversion")
        else:
            self._close(state, EXPIRED, "case window ended without a conversion")

    # ================================================================== helpers
    def _next_appointment(self, ehr: dict) -> dict | None:
        upcoming = [
            a for a in ehr["appointments"].values() if a.get("status") in UPCOMING and (a.get("start") or 0) > self.now
        ]
        return min(upcoming, key=lambda a: a["start"]) if upcoming else None

    def _sms_gate(self, practice: Practice, state: dict, patient: Mapping | None, body: str) -> tuple[str | None, int]:
        """(why an SMS may not go, or None; when it may go). Quiet hours only defer it."""
        send_at = consent.next_allowed_send(
            self.now, practice.time_zone, practice.quiet_hours.start, practice.quiet_hours.end
        )
        if patient and patient.get("deceased"):
            return "the patient record is marked deceased", send_at
        if state["consent"]["opted_out"]:
            return "the caller opted out of SMS", send_at
        per_day, per_week = consent.caps_for(
            practice.sms_caps.per_day, practice.sms_caps.per_week, practice.sms_caps.fcc_healthcare_exemption
        )
        capped = consent.cap_blocks(state["sms_sent"], send_at, per_day, per_week)
        if capped:
            return capped, send_at
        check = getattr(consent, "fcc_profile_violation", None)
        if practice.sms_caps.fcc_healthcare_exemption and check is not None:
            violation = check(body, practice.name)
            if violation:
                return violation, send_at
        return None, send_at

    def _sms(
        self,
        practice: Practice,
        state: dict,
        case: dict,
        step: str,
        template: str,
        reason: str,
        send_at: int,
        **extra: str,
    ) -> None:
        if step in case["steps"]:
            return
        fallback = {ACK_SMS: recipes.NURSE, RESCHEDULE_SMS: recipes.SCHEDULING_QUEUE}.get(
            step, recipes.SCHEDULING_COORDINATOR
        )
        self._emit(
            case,
            recipes.sms(practice, case, step, template, reason, self.now, send_at, fallback_role=fallback, **extra),
        )
        state["sms_sent"] = consent.prune_sent(state["sms_sent"], self.now) + [send_at]

    def _blocked_sms_task(
        self, practice: Practice, case: dict, instead_of: str, blocked: str, role: str, due: int, priority: str
    ) -> None:
        """The staff callback task an SMS step becomes when consent or a cap blocks it."""
        if CALLBACK_TASK in case["steps"]:
            return
        self._emit(
            case,
            recipes.action(
                case,
                "CREATE_TASK",
                CALLBACK_TASK,
                recipes.route(practice, role),
                "Call the patient back: an automatic SMS could not be sent.",
                f"SMS not sent: {blocked}",
                self.now,
                priority=priority,
                due_at=due,
                params={
                    **recipes.staff_params(practice, case, role, "Call the caller back (no SMS was sent)."),
                    "instead_of": instead_of,
                    "blocked_reason": blocked,
                },
            ),
        )

    def _emit(self, case: dict, command: dict) -> None:
        steps = case.setdefault("steps", {})
        if command["step"] in steps:
            return  # one action per case and step, ever
        steps[command["step"]] = self.now
        self._flush_open(case)
        self.tx.actions.append((f"{case['practice_id']}|{case['caller']}".encode(), command))

    def _responded(self, case: dict, at: int, channel: str) -> None:
        if case["first_response_at"] is not None:
            return
        case["first_response_at"] = at
        case["channel"] = channel
        case["state"] = RESPONDED
        self._outcome(case, RESPONDED, final=False)

    def _escalate(self, case: dict) -> None:
        case["escalations"] += 1
        case["state"] = ESCALATED
        self._outcome(case, ESCALATED, final=False)

    def _convert(self, state: dict, channel: str, at: int) -> None:
        case = state["case"]
        case.update(converted=True, converted_at=at, conversion_channel=channel)
        self._close(state, CONVERTED, None)

    def _close(self, state: dict, final_state: str, reason: str | None) -> None:
        case = state["case"]
        case["state"] = final_state
        self.tx.cancelled.extend(case["timers"])
        case["timers"] = {}  # their index entries become stale and are skipped
        self._outcome(case, final_state, final=True, reason=reason)
        state["closed"] = (state["closed"] + [case["case_id"]])[-CLOSED_MAX:]
        state["case"] = None

    def _outcome(self, case: dict, state_name: str, final: bool, reason: str | None = None) -> None:
        seq = case["outcome_seq"].get(state_name, 0) + 1
        case["outcome_seq"][state_name] = seq
        practice = self.directory.by_id(case["practice_id"])
        first = case["first_response_at"]
        latency = first - case["missed_at"] if first is not None else None
        within = None
        if latency is not None and practice is not None:
            within = latency <= recipes.response_window_ms(practice, case["scenario"])
        record = {
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
            "channel": case["channel"],
            "reason": reason,
            "at": self.now,
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
        self._flush_open(case)
        self.tx.outcomes.append(record)

    def _flush_open(self, case: dict) -> None:
        record = case.pop("open_record", None)
        if record is not None:
            record["scenario"] = case["scenario"]  # as decided at the first response
            self.tx.outcomes.append(record)

    def _ehr(self, ek: str) -> dict:
        return self.tx.get(ek) or {"patient": None, "appointments": {}, "flags": {}}

    def _save_ehr(self, ek: str, ehr: dict) -> None:
        if ehr["patient"] is None and not ehr["appointments"] and not ehr["flags"]:
            if self.tx.get(ek) is not None:
                self.tx.delete(ek)
        else:
            self.tx.set(ek, ehr)

    def _seen(self, state: dict, event_id: str) -> bool:
        return any(e[0] == event_id for e in state["seen"])

    def _remember(self, state: dict, event_id: str) -> None:
        keep = [e for e in state["seen"] if self.now - e[1] < SEEN_MS]
        state["seen"] = (keep + [[event_id, self.now]])[-SEEN_MAX:]
