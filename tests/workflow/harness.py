"""What the workflow tests share: a practice, and `Harness`, which plays the agent.

`Harness`: one dict is the state table (every write goes through a JSON round trip, as
the changelog does), a manual clock, TICKs to every partition when time moves on.
Default windows (domain/practice.py: Windows) unless a test overrides them.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from ringback.domain import recipes
from ringback.domain.practice import Practice
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.workflow.inputs import Workflow
from ringback.workflow.state import DELETE, Tx, caller_key

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
# Tue 24 Nov 2026 15:00 UTC = 09:00 in Chicago: inside the SMS hours.
T0 = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1000)
PRACTICE_ID = "maple-family"
NEW_CALLER = "+14155550123"
KNOWN = "+14155550188"
PARTITIONS = 4


def practice(**overrides) -> Practice:
    base = {
        "id": PRACTICE_ID,
        "name": "Maple Family Practice",
        "time_zone": "America/Chicago",
        "phone_numbers": ["+13125550100"],
        "sms_from": "+13125550100",
        "booking_link": "https://book.example.org/maple",
        "reschedule_link": "https://book.example.org/maple/reschedule",
        "routing": {
            "scheduling_coordinator": "email:desk@maple.example.org",
            "nurse": "email:nurse@maple.example.org",
            "department_manager": "slack:MAPLE_SLACK",
            "admin_team": "email:admin@maple.example.org",
        },
        "blocked_numbers": ["+13125550199"],
    }
    windows = overrides.pop("windows", {})
    return Practice.model_validate({**base, **overrides, "windows": windows})


def as_json(value):
    return None if value is None else json.loads(json.dumps(value))


class Harness:
    def __init__(self, **practice_overrides) -> None:
        self.practice = practice(**practice_overrides)
        self.directory = PracticeDirectory([self.practice])
        self.table: dict[str, object] = {}
        self.now = T0
        self.actions: list[dict] = []
        self.keys: list[bytes] = []
        self.outcomes: list[dict] = []
        self.ignored: list[str] = []
        self.fired: list[tuple[str, int]] = []
        self._ids = itertools.count(1)

    # -- plumbing
    def partition(self, caller: str) -> int:
        return topics.partition_for(topics.join_key(PRACTICE_ID, caller), PARTITIONS)

    def run(self, partition: int, fn) -> Tx:
        tx = Tx(lambda k: as_json(self.table.get(k)))
        fn(Workflow(tx, self.directory, self.now, partition))
        for key, action in tx.actions:
            self.keys.append(key)
            self.actions.append(action)
        self.outcomes += tx.outcomes
        self.ignored += tx.ignored
        self.fired += tx.fired
        for k, v in tx.writes.items():
            if v is DELETE:
                self.table.pop(k, None)
            else:
                self.table[k] = as_json(v)
        return tx

    def tick(self) -> None:
        for p in range(PARTITIONS):
            self.run(p, lambda wf: wf.on_tick())

    def next_due(self) -> int | None:
        dues = [
            t[0]
            for k, v in self.table.items()
            if k.startswith("c|") and v["case"]
            for t in v["case"]["timers"].values()
        ]
        return min(dues) if dues else None

    def advance(self, ms: int, step: int | None = None) -> None:
        """Let time pass. Workers tick every 250 ms; to keep tests fast the harness
        ticks at every due time (and at the end), or every `step` ms when given."""
        end = self.now + ms
        while self.now < end:
            if step:
                self.now = min(end, self.now + step)
            else:
                due = self.next_due()
                self.now = min(end, max(due, self.now + 1)) if due is not None else end
            self.tick()

    def at(self, ms_after_t0: int) -> None:
        self.advance(T0 + ms_after_t0 - self.now)

    # -- inputs
    def event(
        self,
        caller: str,
        event_type: str = "CALL",
        outcome: str | None = "MISSED",
        event_id: str | None = None,
        call_id: str | None = None,
        **fields,
    ) -> dict:
        n = next(self._ids)
        call_id = call_id or f"CA{n:032d}"
        event = {
            "event_id": event_id or f"twilio:{call_id}:{event_type}:{n}",
            "provider": "twilio",
            "event_type": event_type,
            "outcome": outcome,
            "provider_status": "no-answer",
            "practice_id": PRACTICE_ID,
            "caller": caller,
            "called": "+13125550100",
            "direction": "INBOUND",
            "provider_call_id": call_id,
            "occurred_at": self.now - 1000,
            "received_at": self.now,
            "duration_s": None,
            "recording_url": None,
            "transcript": None,
            "sms_body": None,
            "sms_id": None,
        }
        event.update(fields)
        self.run(self.partition(caller), lambda wf: wf.on_call_event(event))
        return event

    def missed(self, caller: str = NEW_CALLER, **kw) -> dict:
        return self.event(caller, **kw)

    def voicemail(self, caller: str, transcript: str | None = None, **kw) -> dict:
        call = self.event(caller, outcome="VOICEMAIL", **kw)
        if transcript is not None:
            self.transcript(caller, call["provider_call_id"], transcript)
        return call

    def transcript(self, caller: str, call_id: str, text: str) -> dict:
        return self.event(caller, "TRANSCRIPTION", None, call_id=call_id, transcript=text)

    def answered(self, caller: str = NEW_CALLER) -> dict:
        return self.event(caller, outcome="ANSWERED", provider_status="completed")

    def sms(self, caller: str, body: str) -> dict:
        return self.event(caller, "SMS", None, sms_body=body)

    def task(
        self,
        caller: str,
        step: str,
        action: str = "COMPLETE",
        case_id: str | None = None,
        outcome: str = "reached_patient",
    ) -> None:
        cid = case_id or self.case_id(caller)
        update = {
            "update_id": f"u{next(self._ids)}",
            "task_id": f"{cid}:{step}",
            "case_id": cid,
            "practice_id": PRACTICE_ID,
            "action": action,
            "actor": "staff-1",
            "outcome": outcome,
            "new_role": None,
            "at": self.now,
        }
        self.run(self.partition(caller), lambda wf: wf.on_task_update(caller, update))

    def patient(self, caller: str = KNOWN, **kw) -> None:
        record = {
            "practice_id": PRACTICE_ID,
            "phone": caller,
            "patient_id": "pat-1",
            "display_name": "Ann Example",
            "deceased": False,
            "assigned_provider": None,
            "updated_at": self.now - DAY,
            **kw,
        }
        self.run(self.partition(caller), lambda wf: wf.on_patient(PRACTICE_ID, caller, record))

    def flag(self, caller: str = KNOWN, flag_id: str = "f1", **kw) -> None:
        record = {
            "practice_id": PRACTICE_ID,
            "flag_id": flag_id,
            "patient_id": "pat-1",
            "phone": caller,
            "code": "callback-requested",
            "display": "Nurse line: call back",
            "priority": "PH",
            "status": "active",
            "callback_requested": True,
            "updated_at": self.now - HOUR,
            **kw,
        }
        self.run(self.partition(caller), lambda wf: wf.on_flag(PRACTICE_ID, caller, flag_id, record))

    def appointment(
        self,
        caller: str = KNOWN,
        appointment_id: str = "a1",
        start: int | None = None,
        status: str = "booked",
        updated_at: int | None = None,
    ) -> None:
        record = {
            "practice_id": PRACTICE_ID,
            "appointment_id": appointment_id,
            "patient_id": "pat-1",
            "phone": caller,
            "start": start if start is not None else self.now + DAY,
            "status": status,
            "updated_at": updated_at if updated_at is not None else self.now,
        }
        self.run(self.partition(caller), lambda wf: wf.on_appointment(PRACTICE_ID, caller, appointment_id, record))

    # -- reading
    def state(self, caller: str) -> dict:
        return self.table.get(caller_key(PRACTICE_ID, caller))

    def case_id(self, caller: str) -> str:
        ids = {a["case_id"] for a in self.actions if a["recipient"] == caller or a["params"].get("caller") == caller}
        ids |= {o["case_id"] for o in self.outcomes}
        state = self.state(caller)
        if state and state["case"]:
            return state["case"]["case_id"]
        assert len(ids) == 1, ids
        return ids.pop()

    def steps(self) -> list[str]:
        """The case steps emitted, without the notices that go with each task (`notices`)."""
        return [a["step"] for a in self.actions if not a["step"].endswith(recipes.NOTICE)]

    def notices(self) -> list[dict]:
        """The NOTIFY_STAFF that told a task's role about the task (recipes.task_notice)."""
        return [a for a in self.actions if a["step"].endswith(recipes.NOTICE)]

    def states(self) -> list[str]:
        return [o["state"] for o in self.outcomes]

    def action(self, step: str) -> dict:
        found = [a for a in self.actions if a["step"] == step]
        assert len(found) == 1, (step, self.steps())
        return found[0]

    def final(self) -> dict:
        finals = [o for o in self.outcomes if o["final"]]
        assert len(finals) == 1, self.states()
        return finals[0]


def hold() -> int:
    return 45_000


def urgent_harness(**kw) -> Harness:
    """An existing patient with an assigned provider and an active callback flag."""
    h = Harness(**kw)
    h.patient(KNOWN, display_name="Ann Example", assigned_provider="email:dr.lee@maple.example.org")
    h.flag(KNOWN)
    return h


def reschedule_harness(start_in: int, **kw) -> Harness:
    """An existing patient with an appointment `start_in` ms after T0."""
    h = Harness(**kw)
    h.patient(KNOWN)
    h.appointment(KNOWN, "a1", start=T0 + start_in, updated_at=T0 - 10 * DAY)
    return h
