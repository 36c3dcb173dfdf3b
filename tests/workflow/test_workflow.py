"""The four recipes, step by step and gate by gate (streams/agents/workflow.py), without Kafka.

`Harness` plays the agent: one dict is the state table (every write goes through a JSON
round trip, as the changelog does), a manual clock, TICKs to every partition when time
moves on. Default windows (SPEC section 6) unless a test overrides them.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from ringback.domain import recipes
from ringback.domain.practice import Practice
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.workflow.engine import DELETE, Tx, Workflow, caller_key

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


def _json(value):
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
        tx = Tx(lambda k: _json(self.table.get(k)))
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
                self.table[k] = _json(v)
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
        return [a["step"] for a in self.actions]

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


# ====================================================================== new patient
def test_new_patient_first_sms_waits_the_hold_then_goes_with_a_coordinator_notification():
    h = Harness()
    h.missed()
    # Opening a case writes state only; its OPEN record goes out with the first response.
    assert h.outcomes == [] and h.actions == []
    assert h.state(NEW_CALLER)["case"]["open_record"]["at"] == T0
    h.at(44_000)
    assert h.actions == []
    h.at(45_000)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert h.states() == ["OPEN", "RESPONDED"] and h.outcomes[0]["at"] == T0
    sms = h.action("first_sms")
    cid = h.case_id(NEW_CALLER)
    assert sms["action_id"] == f"{cid}:first_sms" and sms["kind"] == "SEND_SMS"
    assert sms["recipient"] == NEW_CALLER and sms["scenario"] == "NEW_PATIENT"
    assert "https://book.example.org/maple" in sms["body"] and "Maple Family Practice" in sms["body"]
    assert sms["call_reported_at"] == T0 and sms["missed_at"] == T0 - 1000 and sms["due_at"] is None
    assert sms["params"] == {"template": "new_patient_first", "fallback_role": "scheduling_coordinator"}
    note = h.action("notify_coordinator")
    assert note["kind"] == "NOTIFY_STAFF" and note["recipient"] == "email:desk@maple.example.org"
    assert "already sent" in note["body"]
    assert note["params"]["caller"] == NEW_CALLER and note["params"]["role"] == "scheduling_coordinator"
    assert h.keys[0] == f"{PRACTICE_ID}|{NEW_CALLER}".encode()
    responded = h.outcomes[-1]
    assert responded["state"] == "RESPONDED" and responded["channel"] == "sms"
    assert responded["first_response_at"] == T0 + 45_000
    assert responded["response_latency_ms"] == 46_000 and responded["within_window"] is True
    # The timer fired within one tick of its due time.
    assert h.fired == [("first_response", 0)]


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


def test_a_reply_stops_the_two_hour_follow_up():
    h = Harness()
    h.missed()
    h.at(HOUR)
    h.sms(NEW_CALLER, "Yes please, can I come Thursday?")
    h.at(5 * HOUR)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    final = h.final()
    assert final["state"] == "CONVERTED" and final["converted"] is True
    assert final["conversion_channel"] == "sms_reply" and final["converted_at"] == T0 + HOUR - 1000


def test_no_reply_within_two_hours_second_sms_and_callback_task_due_in_four_hours():
    h = Harness()
    h.missed()
    h.at(2 * HOUR - 1000)
    assert "second_sms" not in h.steps()
    h.at(2 * HOUR)
    assert h.steps() == ["first_sms", "notify_coordinator", "second_sms", "callback_task"]
    task = h.action("callback_task")
    assert task["kind"] == "CREATE_TASK" and task["due_at"] == T0 + 2 * HOUR + 4 * HOUR
    assert task["recipient"] == "email:desk@maple.example.org"
    assert h.outcomes[-1]["state"] == "ESCALATED" and h.outcomes[-1]["escalations"] == 1
    # Nobody books: the case ends after case_expiry (24 h) as escalated-and-closed.
    h.at(DAY)
    final = h.final()
    assert final["state"] == "ESCALATED_AND_CLOSED" and final["converted"] is False and final["escalations"] == 1
    assert h.steps().count("second_sms") == 1


def test_completing_the_callback_task_converts_the_case():
    h = Harness()
    h.missed()
    h.at(2 * HOUR)
    h.at(3 * HOUR)
    h.task(NEW_CALLER, "callback_task")
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "callback"
    assert final["escalations"] == 1


def test_a_booking_after_the_missed_call_converts_and_closes_the_gates():
    h = Harness()
    h.missed()
    h.at(30 * MIN)
    h.appointment(NEW_CALLER, "a9", start=h.now + 3 * DAY, updated_at=h.now)
    h.at(DAY)
    assert h.steps() == ["first_sms", "notify_coordinator"]
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "booking"
    assert final["converted_at"] == T0 + 30 * MIN


def test_a_booking_made_before_the_missed_call_does_not_count():
    h = Harness()
    h.missed()
    h.at(30 * MIN)
    h.appointment(NEW_CALLER, "a9", start=h.now + 3 * DAY, updated_at=T0 - HOUR)  # an older booking synced now
    h.at(2 * HOUR)
    assert "second_sms" in h.steps()
    assert not [o for o in h.outcomes if o["final"]]


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
    h.sms(NEW_CALLER, "thanks")  # converts the first case
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


def test_an_answered_call_after_the_first_response_converts():
    h = Harness()
    h.missed()
    h.at(10 * MIN)
    h.answered()
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "answered_call"


# ====================================================================== urgent
def urgent_harness(**kw) -> Harness:
    h = Harness(**kw)
    h.patient(KNOWN, display_name="Ann Example", assigned_provider="email:dr.lee@maple.example.org")
    h.flag(KNOWN)
    return h


def test_urgent_task_to_the_assigned_provider_and_patient_acknowledgement():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(hold())
    assert h.steps() == ["clinical_task", "ack_sms"]
    task = h.action("clinical_task")
    assert task["kind"] == "CREATE_TASK" and task["priority"] == "URGENT"
    assert task["recipient"] == "email:dr.lee@maple.example.org"
    assert task["params"]["role"] == "assigned_provider"
    assert task["params"]["patient_name"] == "Ann Example"
    assert task["params"]["urgency_reason"] == "Nurse line: call back"
    assert task["due_at"] == T0 + 30 * MIN
    ack = h.action("ack_sms")
    assert ack["params"]["fallback_role"] == "nurse"
    assert "clinical team" in ack["body"] and "30 minutes" in ack["body"]
    assert "Nurse line" not in ack["body"] and "Ann" not in ack["body"]  # no clinical detail, no name
    assert h.outcomes[-1]["state"] == "RESPONDED" and h.outcomes[-1]["within_window"] is True


def test_urgent_without_an_assigned_provider_goes_to_the_nurse_route():
    h = Harness()
    h.patient(KNOWN)
    h.flag(KNOWN, code="refill-request", callback_requested=False, priority=None, display=None)
    h.missed(KNOWN)
    h.at(hold())
    task = h.action("clinical_task")
    assert task["recipient"] == "email:nurse@maple.example.org" and task["params"]["role"] == "nurse"
    assert task["params"]["urgency_reason"] == "refill-request"


def test_urgent_acknowledgement_never_waits_longer_than_five_minutes():
    h = urgent_harness(windows={"first_response_hold": 600})
    h.missed(KNOWN)
    h.at(5 * MIN - 1000)
    assert h.actions == []
    h.at(5 * MIN)
    assert h.steps() == ["clinical_task", "ack_sms"]


def test_urgent_task_completed_at_44_minutes_prevents_the_manager_alert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(44 * MIN)
    h.task(KNOWN, "clinical_task")
    h.at(2 * HOUR)
    assert "manager_alert" not in h.steps()
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "callback"
    assert final["escalations"] == 0


def test_urgent_task_wrong_number_closes_without_conversion_or_alert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(20 * MIN)
    h.task(KNOWN, "clinical_task", outcome="wrong_number")
    h.at(2 * HOUR)
    assert "manager_alert" not in h.steps()
    final = h.final()
    assert final["state"] == "ESCALATED_AND_CLOSED" and final["converted"] is False


def test_urgent_task_left_message_prevents_the_alert_but_does_not_convert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(20 * MIN)
    h.task(KNOWN, "clinical_task", outcome="left_message")
    h.at(2 * HOUR)
    assert "manager_alert" not in h.steps()
    assert h.state(KNOWN)["case"]["converted"] is False  # still open: a reply or booking may follow
    h.at(2 * DAY)
    final = h.final()
    assert final["converted"] is False and final["state"] != "CONVERTED"


def test_urgent_task_completed_at_46_minutes_does_not_prevent_the_manager_alert():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(45 * MIN - 1000)
    assert "manager_alert" not in h.steps()
    h.at(45 * MIN)
    alert = h.action("manager_alert")
    assert alert["kind"] == "ALERT_MANAGER" and alert["recipient"] == "slack:MAPLE_SLACK"
    assert "Nurse line" not in alert["body"] and "Ann" not in alert["body"]
    assert alert["params"]["task_id"] == f"{h.case_id(KNOWN)}:clinical_task"
    h.at(46 * MIN)
    h.task(KNOWN, "clinical_task")
    assert h.steps() == ["clinical_task", "ack_sms", "manager_alert"]
    final = h.final()
    assert final["state"] == "CONVERTED" and final["escalations"] == 1


def test_urgent_case_is_not_closed_by_a_front_desk_call_or_a_booking():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(10 * MIN)
    h.answered(KNOWN)
    h.appointment(KNOWN, "a5", start=h.now + DAY, updated_at=h.now)
    h.at(45 * MIN)
    assert "manager_alert" in h.steps()


def test_a_deceased_patient_gets_no_sms():
    h = urgent_harness()
    h.patient(KNOWN, deceased=True, assigned_provider=None)
    h.missed(KNOWN)
    h.at(hold())
    assert h.steps() == ["clinical_task"]
    assert h.outcomes[-1]["channel"] == "task"


# ====================================================================== reschedule
def reschedule_harness(start_in: int, **kw) -> Harness:
    h = Harness(**kw)
    h.patient(KNOWN)
    h.appointment(KNOWN, "a1", start=T0 + start_in, updated_at=T0 - 10 * DAY)
    return h


def test_reschedule_within_48_hours_link_then_the_four_hour_gate_protects_it():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "Hi, I need to reschedule my appointment tomorrow")
    h.at(hold())
    assert h.steps() == ["reschedule_sms", "notify_scheduling"]
    assert "https://book.example.org/maple/reschedule" in h.action("reschedule_sms")["body"]
    note = h.action("notify_scheduling")
    assert note["params"]["appointment_id"] == "a1" and note["params"]["appointment_start"] == str(T0 + DAY)
    assert note["recipient"] == "email:desk@maple.example.org"  # scheduling queue -> coordinator
    assert note["params"]["role"] == "scheduling_coordinator"
    assert h.action("reschedule_sms")["params"]["fallback_role"] == "scheduling_coordinator"
    h.at(4 * HOUR - 1000)
    assert "protect_task" not in h.steps()
    h.at(4 * HOUR)
    assert h.steps() == ["reschedule_sms", "notify_scheduling", "protect_task", "protect_alert"]
    task = h.action("protect_task")
    assert task["priority"] == "HIGH" and task["kind"] == "CREATE_TASK"
    assert h.action("protect_alert")["kind"] == "ALERT_MANAGER"
    assert h.outcomes[-1]["state"] == "ESCALATED"


def test_reschedule_gate_does_nothing_for_an_appointment_beyond_48_hours():
    h = reschedule_harness(5 * DAY)
    h.voicemail(KNOWN, "I can't make it on Monday")
    h.at(4 * HOUR)
    assert h.steps() == ["reschedule_sms", "notify_scheduling"]
    h.at(DAY)
    assert h.final()["state"] == "EXPIRED"


def test_no_reschedule_link_for_an_appointment_beyond_14_days():
    h = reschedule_harness(20 * DAY)
    h.voicemail(KNOWN, "I'd like to move my appointment")
    h.at(hold())
    assert h.steps() == ["callback_task", "notify_scheduling"]
    assert "beyond" in h.action("callback_task")["reason"]
    h.at(5 * HOUR)
    assert "protect_task" not in h.steps()


def test_reschedule_link_is_sent_at_14_days_but_not_after():
    inside = reschedule_harness(14 * DAY)
    inside.voicemail(KNOWN, "need to reschedule")
    inside.at(hold())
    assert "reschedule_sms" in inside.steps()
    outside = reschedule_harness(14 * DAY + hold() + 1000)
    outside.voicemail(KNOWN, "need to reschedule")
    outside.at(hold())
    assert "reschedule_sms" not in outside.steps()


def test_reschedule_without_an_upcoming_appointment_is_a_callback_task():
    h = Harness()
    h.patient(KNOWN)
    h.voicemail(KNOWN, "I want to cancel my appointment")
    h.at(hold())
    assert h.steps() == ["callback_task"]
    assert "no upcoming appointment" in h.action("callback_task")["reason"]


def test_a_rescheduled_appointment_converts_and_closes_the_gate():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to reschedule")
    h.at(HOUR)
    h.appointment(KNOWN, "a1", start=T0 + 3 * DAY, updated_at=h.now)
    h.at(5 * HOUR)
    assert "protect_task" not in h.steps()
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "reschedule"


def test_a_transcript_arriving_before_its_call_is_used():
    h = reschedule_harness(DAY)
    h.transcript(KNOWN, "CA-early", "Please reschedule my appointment")
    h.event(KNOWN, outcome="VOICEMAIL", call_id="CA-early")
    h.at(hold())
    assert h.steps()[0] == "reschedule_sms"


def test_a_transcript_arriving_after_the_general_response_upgrades_the_case():
    h = reschedule_harness(DAY)
    call = h.voicemail(KNOWN)
    h.at(hold())
    assert h.steps() == ["admin_task"]
    h.transcript(KNOWN, call["provider_call_id"], "I have to cancel tomorrow's appointment")
    assert h.steps() == ["admin_task", "reschedule_sms", "notify_scheduling"]
    assert h.state(KNOWN)["case"]["scenario"] == "RESCHEDULE"
    h.at(4 * HOUR)
    assert "protect_task" in h.steps()


# ====================================================================== general inquiry
def test_general_inquiry_admin_task_due_in_four_hours_then_completed():
    h = Harness()
    h.patient(KNOWN)
    h.voicemail(KNOWN, "I'm not cancelling, I have a question about my bill")
    h.at(hold())
    assert h.steps() == ["admin_task"]
    task = h.action("admin_task")
    assert task["recipient"] == "email:admin@maple.example.org" and task["due_at"] == T0 + 4 * HOUR
    assert task["scenario"] == "GENERAL_INQUIRY"
    h.at(HOUR)
    h.task(KNOWN, "admin_task")
    assert h.final()["state"] == "CONVERTED"


def test_general_inquiry_nobody_acts_the_case_expires():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(DAY)
    assert h.steps() == ["admin_task"]
    final = h.final()
    assert final["state"] == "EXPIRED" and final["escalations"] == 0 and final["within_window"] is True


def test_updates_of_other_tasks_or_closed_cases_change_nothing():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(hold())
    h.task(KNOWN, "admin_task", action="CLAIM")
    h.task(KNOWN, "admin_task", case_id=f"{PRACTICE_ID}:someothercase")
    assert not [o for o in h.outcomes if o["final"]]
    assert "task_update_closed_case" in h.ignored


# ====================================================================== consent
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


def test_a_reply_before_the_first_response_does_not_close_the_case():
    h = Harness()
    h.missed()
    h.sms(NEW_CALLER, "hello?")
    h.at(hold())
    assert h.steps() == ["first_sms", "notify_coordinator"]


# ====================================================================== reclassification and outcomes
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


# ====================================================================== more branches
def test_a_cancelled_appointment_closes_a_reschedule_request():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "I need to cancel tomorrow")
    h.at(HOUR)
    h.appointment(KNOWN, "a1", start=T0 + DAY, status="cancelled", updated_at=h.now)
    h.at(5 * HOUR)
    assert "protect_task" not in h.steps()
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "cancellation"


def test_the_protect_gate_has_nothing_to_do_when_the_appointment_is_gone():
    h = reschedule_harness(DAY)
    h.voicemail(KNOWN, "please reschedule")
    h.at(HOUR)
    h.run(h.partition(KNOWN), lambda wf: wf.on_appointment("maple-family", KNOWN, "a1", None))  # deleted in the EHR
    h.at(5 * HOUR)
    assert h.steps() == ["reschedule_sms", "notify_scheduling"]
    assert "nothing left to protect" in " ".join(h.state(KNOWN)["case"]["notes"])


def test_a_general_inquiry_converts_on_a_new_booking():
    h = Harness()
    h.patient(KNOWN)
    h.missed(KNOWN)
    h.at(HOUR)
    h.appointment(KNOWN, "a7", start=h.now + 3 * DAY, updated_at=h.now)
    final = h.final()
    assert final["state"] == "CONVERTED" and final["conversion_channel"] == "booking"


def test_an_appointment_arriving_changes_nothing():
    h = Harness()
    h.patient(KNOWN)
    h.appointment(KNOWN, "a7", start=T0 + HOUR, updated_at=T0 - DAY)
    h.missed(KNOWN)
    h.at(10 * MIN)
    h.appointment(KNOWN, "a7", start=T0 + HOUR, status="arrived", updated_at=h.now)
    assert not [o for o in h.outcomes if o["final"]]


def test_cancel_if_answered_applies_to_urgent_calls_too():
    h = urgent_harness()
    h.missed(KNOWN)
    h.at(10_000)
    h.answered(KNOWN)
    h.at(HOUR)
    assert h.actions == [] and h.final()["state"] == "SUPPRESSED"


def test_help_and_opt_in_texts_are_not_replies():
    h = Harness()
    h.missed()
    h.at(hold())
    h.sms(NEW_CALLER, "HELP")
    h.sms(NEW_CALLER, "START")
    assert not [o for o in h.outcomes if o["final"]]
    assert h.state(NEW_CALLER)["consent"]["opted_out"] is False


def test_a_transcript_of_another_call_does_not_change_the_case():
    h = reschedule_harness(DAY)
    h.missed(KNOWN)
    h.at(hold())
    h.transcript(KNOWN, "CA-some-older-call", "I need to reschedule")
    assert h.steps() == ["admin_task"] and h.state(KNOWN)["case"]["scenario"] == "GENERAL_INQUIRY"


def test_tx_reads_its_own_writes_and_orders_writes_by_the_last_one():
    store = {"a": {"v": 1}}
    tx = Tx(store.get)
    got = tx.get("a")
    got["v"] = 99  # a read is a copy: the store is untouched
    assert store["a"] == {"v": 1}
    tx.set("b", 1)
    tx.set("a", {"v": 2})
    tx.delete("c")
    tx.set("b", 3)
    assert list(tx.writes) == ["a", "c", "b"] and tx.get("b") == 3 and tx.get("c") is None
