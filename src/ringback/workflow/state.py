"""The state table of the stream worker: its keys, the records stored under them, and `Tx`.

One changelog-backed table, `state`, so one changelog partition per partition and a
crash keeps a consistent prefix of every kind of write:

  c|<practice>|<caller>   `CallerState`: the open case, consent, SMS send times, seen event ids, call verdicts
  e|<practice>|<phone>    `Ehr`: the patient, appointments by id, flags by id (workflow/ehr.py)
  t|<partition>|<second>  due-index of gate timers (workflow/timers.py)
  m|<partition>           partition meta: timer cursor, offsets of the last emitted records

Values are stored as JSON. The records below are TypedDicts: they name the fields of
that JSON and change nothing in it, so a worker reads the state an older one wrote.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

SEEN_MAX, SEEN_MS = 256, 7 * 86_400_000  # the seen-set of a caller: last 256 ids, 7 days


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()  # a buffered write that deletes the key


def caller_key(practice_id: str, phone: str) -> str:
    return f"c|{practice_id}|{phone}"


def ehr_key(practice_id: str, phone: str) -> str:
    return f"e|{practice_id}|{phone}"


# ------------------------------------------------------------------ records
class Consent(TypedDict):
    opted_out: bool
    changed_at: int | None
    optouts: int  # how many opt-outs so far (names the n-th confirmation step)
    source: str | None  # keyword, sentence, carrier_21610


Timer = list[int]  # [due_ms, generation]: a pending timer of a case (workflow/timers.py)


class AppointmentRef(TypedDict):
    appointment_id: str
    start: int


class Case(TypedDict):
    """One open case of a practice + caller (workflow/cases.py)."""

    case_id: str
    practice_id: str
    caller: str
    scenario: str
    reason: str
    state: str
    opened_at: int
    missed_at: int
    call_reported_at: int
    calls: int
    call_ids: list[str]  # the last 10 calls that joined
    voicemail: bool
    transcript: str | None
    steps: dict[str, int]  # step -> when its action was emitted (one action per step, ever)
    timers: dict[str, Timer]
    gen: int
    first_response_at: int | None
    channel: str | None
    escalations: int
    appointment: AppointmentRef | None  # the appointment a reschedule request is about
    tasks_done: dict[str, int]  # step -> when staff completed its task
    replied_at: int | None  # when the caller first responded: an SMS reply, or a call that reached staff
    converted: bool
    converted_at: int | None
    conversion_channel: str | None
    outcome_seq: dict[str, int]  # outcome state -> how many were emitted
    notes: list[str]
    indexed: NotRequired[int | None]  # the due time of its due-index entry
    open_record: NotRequired[dict[str, Any]]  # the OPEN outcome (outcome.avsc), sent with the case's next record
    response_channel: NotRequired[str | None]  # how the caller responded: sms_reply, answered_call


class ReplyTask(TypedDict):
    """The caller's open "patient replied" task (workflow/sms.py): further replies add to it."""

    task_id: str
    replies: int


class CallVerdict(TypedDict):
    """What one call was, decided from all its signals (workflow/calls.py)."""

    outcome: str | None  # MISSED | VOICEMAIL | ANSWERED; None before any usable signal
    rank: int  # the strongest signal heard so far
    answered_leg: str | None  # the leg a person answered on
    machine_legs: list[str]  # legs an answering machine or fax picked up
    at: int  # when the last signal arrived (expiry)


class CallerState(TypedDict):
    practice_id: str
    caller: str
    case: Case | None
    seen: list[list[Any]]  # [event id, at_ms]
    sms_sent: list[int]  # send times of our SMS (the caps)
    consent: Consent
    transcripts: dict[str, list[Any]]  # provider call id -> [text, received_at]
    closed: list[str]  # ids of the last closed cases
    calls: NotRequired[dict[str, CallVerdict]]  # provider call id -> verdict, for calls decided from several signals
    reply_task: NotRequired[ReplyTask | None]  # the open task the caller's SMS replies go to


class Patient(TypedDict):  # the fields of schemas/patient.avsc the rules read
    patient_id: str
    display_name: str | None
    deceased: bool
    assigned_provider: str | None
    updated_at: int
    language: NotRequired[str | None]  # preferred language (BCP 47 primary tag); absent in older state


class Flag(TypedDict):  # schemas/flag.avsc
    flag_id: str
    code: str
    display: str | None
    priority: str | None
    status: str
    callback_requested: bool
    updated_at: int


class Appointment(TypedDict):  # schemas/appointment.avsc
    appointment_id: str
    start: int
    status: str
    updated_at: int


class Ehr(TypedDict):
    patient: Patient | None
    appointments: dict[str, Appointment]
    flags: dict[str, Flag]


def new_caller(practice_id: str, caller: str) -> CallerState:
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


def seen(state: CallerState, event_id: str) -> bool:
    """Whether this input was handled before (a redelivered webhook, a replayed update)."""
    return any(e[0] == event_id for e in state["seen"])


def remember(state: CallerState, event_id: str, now_ms: int) -> None:
    keep = [e for e in state["seen"] if now_ms - e[1] < SEEN_MS]
    state["seen"] = (keep + [[event_id, now_ms]])[-SEEN_MAX:]


# ------------------------------------------------------------------ the table as one input sees it
class Tx:
    """The state table as one input sees it: reads through, writes buffered; and what the
    input emitted.

    `writes` is ordered by each key's *last* write, which is the order the agent
    writes them to the table after the emitted records are acknowledged."""

    def __init__(self, read: Callable[[str], Any], copy_reads: bool = True) -> None:
        self._read = read
        self._copy = copy_reads
        self.writes: dict[str, Any] = {}
        self.actions: list[tuple[bytes, dict]] = []  # (record key practice|caller, action command)
        self.outcomes: list[dict] = []  # case outcome records (schemas/outcome.avsc)
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
