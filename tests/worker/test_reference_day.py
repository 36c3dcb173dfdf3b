"""The reference practice (docs/product.md), one day scaled down in time, on the real broker.

94 inbound calls, 18 of them missed: new patients (a reply, a booking, a caller who
gets through before the first SMS, a caller who calls twice, one who never answers,
one who opted out earlier, a redelivered webhook), urgent patients (called back in
time, late, never), reschedule requests (appointment tomorrow, in 5 days, in 20 days,
rescheduled), general inquiries and a blocked number; callbacks, replies, bookings.
Windows are seconds (tests/fixtures/practices.yaml, practice `reference-day`). The
test checks every expected action and outcome record, each exactly once, and nothing
else. Patients, appointments and flags are written straight to their topics, in the
partition of the caller they join with (the FHIR connector is not needed here).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ringback.config.settings import Settings
from ringback.domain import recipes
from ringback.kafka import topics
from ringback.schemas import codec
from tests.conftest import REPO, wait_for
from tests.support import kafka_tools

pytestmark = pytest.mark.integration

PRACTICE = "reference-day"
DID = "+13125550300"
BLOCKED = "+13125550399"
DAY_MS = 86_400_000
FIXTURE = REPO / "tests" / "fixtures" / "practices.yaml"


def now_ms() -> int:
    return int(time.time() * 1000)


class Feed:
    """Writes input records the way the gateway, the EHR connector and the console do."""

    def __init__(
        self, bootstrap: str, namespace: str, partitions: int = 4, practice: str = PRACTICE, did: str = DID
    ) -> None:
        self.env = Settings(
            kafka_bootstrap_servers=bootstrap, ringback_namespace=namespace, ringback_partitions=partitions
        )
        self.partitions = partitions
        self.practice = practice
        self.did = did
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "partitioner": "murmur2_random",
            }
        )

    def _send(self, spec, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        errors: list = []
        kwargs = {} if partition is None else {"partition": partition}
        self.producer.produce(
            topics.topic_name(spec, self.env),
            key=key,
            value=value,
            on_delivery=lambda err, msg: err and errors.append(err),
            **kwargs,
        )
        assert self.producer.flush(10) == 0 and not errors, errors

    def key(self, phone: str) -> bytes:
        return topics.join_key(self.practice, phone)

    def partition(self, phone: str) -> int:
        return topics.partition_for(self.key(phone), self.partitions)

    def call(
        self,
        caller: str,
        outcome: str = "MISSED",
        event_id: str | None = None,
        call_id: str | None = None,
        event_type: str = "CALL",
        **fields,
    ) -> dict:
        call_id = call_id or "CA" + uuid.uuid4().hex
        t = now_ms()
        event = {
            "event_id": event_id or f"twilio:{call_id}:{event_type.lower()}:{uuid.uuid4().hex[:6]}",
            "provider": "twilio",
            "event_type": event_type,
            "outcome": outcome,
            "provider_status": {"MISSED": "no-answer", "VOICEMAIL": "completed", "ANSWERED": "completed"}.get(
                outcome or "", "received"
            ),
            "practice_id": self.practice,
            "caller": caller,
            "called": self.did,
            "direction": "INBOUND",
            "provider_call_id": call_id,
            "occurred_at": t - 200,
            "received_at": t,
            **fields,
        }
        self._send(topics.CALL_EVENTS, self.key(caller), codec.encode("call_event", event))
        return event

    def voicemail(self, caller: str, transcript: str) -> dict:
        event = self.call(caller, "VOICEMAIL", recording_url="https://api.twilio.com/rec/RE1")
        self.call(caller, None, call_id=event["provider_call_id"], event_type="TRANSCRIPTION", transcript=transcript)
        return event

    def sms(self, caller: str, body: str) -> dict:
        return self.call(caller, None, event_type="SMS", sms_body=body, sms_id="SM" + uuid.uuid4().hex)

    def redeliver(self, event: dict) -> None:
        self._send(topics.CALL_EVENTS, self.key(event["caller"]), codec.encode("call_event", event))

    def patient(self, phone: str, name: str, assigned_provider: str | None = None) -> None:
        record = {
            "practice_id": self.practice,
            "phone": phone,
            "patient_id": "pat-" + phone[-4:],
            "display_name": name,
            "deceased": False,
            "assigned_provider": assigned_provider,
            "updated_at": now_ms() - 30 * DAY_MS,
        }
        self._send(topics.PATIENTS, self.key(phone), codec.encode("patient", record))

    def flag(
        self, phone: str, flag_id: str, code: str, display: str, priority: str = "PH", callback_requested: bool = False
    ) -> None:
        record = {
            "practice_id": self.practice,
            "flag_id": flag_id,
            "patient_id": "pat-" + phone[-4:],
            "phone": phone,
            "code": code,
            "display": display,
            "priority": priority,
            "status": "active",
            "callback_requested": callback_requested,
            "updated_at": now_ms() - 3_600_000,
        }
        self._send(
            topics.FLAGS,
            self.key(phone) + f"|{flag_id}".encode(),
            codec.encode("flag", record),
            partition=self.partition(phone),
        )

    def appointment(
        self, phone: str, appointment_id: str, start: int, status: str = "booked", updated_at: int | None = None
    ) -> None:
        record = {
            "practice_id": self.practice,
            "appointment_id": appointment_id,
            "patient_id": "pat-" + phone[-4:],
            "phone": phone,
            "start": start,
            "status": status,
            "updated_at": updated_at if updated_at is not None else now_ms(),
        }
        self._send(
            topics.APPOINTMENTS,
            self.key(phone) + f"|{appointment_id}".encode(),
            codec.encode("appointment", record),
            partition=self.partition(phone),
        )

    def complete(self, caller: str, task_id: str) -> None:
        case_id, _ = recipes.step_of(task_id)
        update = {
            "update_id": uuid.uuid4().hex,
            "task_id": task_id,
            "case_id": case_id,
            "practice_id": self.practice,
            "action": "COMPLETE",
            "actor": "staff-7",
            "outcome": "reached_patient",
            "new_role": None,
            "at": now_ms(),
        }
        self._send(topics.TASK_UPDATES, self.key(caller), codec.encode("task_update", update))


class Collector:
    """Reads the actions and outcomes topics from the start, in the background."""

    def __init__(self, bootstrap: str, namespace: str, partitions: int = 4) -> None:
        self.topics = {f"{namespace}.actions": "action_command", f"{namespace}.outcomes": "outcome"}
        self.records: dict[str, list[dict]] = {t: [] for t in self.topics}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"probe-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign([TopicPartition(t, p, 0) for t in self.topics for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            record = codec.decode(self.topics[msg.topic()], msg.value())
            record["_partition"] = msg.partition()
            record["_key"] = msg.key()
            record["_headers"] = dict(msg.headers() or [])
            record["_seen_at"] = now_ms()
            with self._lock:
                self.records[msg.topic()].append(record)

    def actions(self) -> list[dict]:
        with self._lock:
            return list(self.records[next(t for t in self.topics if t.endswith(".actions"))])

    def outcomes(self) -> list[dict]:
        with self._lock:
            return list(self.records[next(t for t in self.topics if t.endswith(".outcomes"))])

    def action(self, action_id: str, timeout: float = 30) -> dict:
        return wait_for(
            lambda: next((a for a in self.actions() if a["action_id"] == action_id), None),
            timeout,
            message=f"action {action_id.rsplit(':', 1)[-1]}",
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def worker_env(**extra: str) -> dict[str, str]:
    """Worker settings for the stream tests. STREAMS_TEST_PROCESSING_GUARANTEE=exactly_once
    reruns them under Faust's transactions (the evidence in docs/stream-app.md)."""
    env = {
        "RINGBACK_SESSION_TIMEOUT_S": "6",
        "RINGBACK_HEARTBEAT_INTERVAL_S": "1",
        "RINGBACK_PROCESSING_GUARANTEE": os.environ.get("STREAMS_TEST_PROCESSING_GUARANTEE", "at_least_once"),
    }
    return {**env, **extra}


def start_worker(processes, name: str, **extra: str):
    return processes.start(name, "worker", env=worker_env(RINGBACK_STORE="memory://", **extra))


@pytest.fixture
def out(service_env, kafka_bootstrap):
    collector = Collector(kafka_bootstrap, service_env["RINGBACK_NAMESPACE"])
    yield collector
    collector.close()


def test_a_scaled_down_practice_day(processes, service_env, kafka_bootstrap, out):
    ns = service_env["RINGBACK_NAMESPACE"]
    applied = processes.run("config", "apply", str(FIXTURE))
    assert applied.returncode == 0, applied.stderr
    feed = Feed(kafka_bootstrap, ns)
    start_worker(processes, "worker")
    number = iter(range(1000, 2000))

    def phone() -> str:
        return f"+1773555{next(number):04d}"

    # ---- the EHR as it is in the morning: patients, flags, appointments
    u_fast, u_late, u_never = phone(), phone(), phone()
    r_soon, r_later, r_far, r_done = phone(), phone(), phone(), phone()
    g_done, g_answered = phone(), phone()
    for p, name in (
        (u_fast, "Ann A"),
        (u_late, "Bob B"),
        (r_soon, "Cy C"),
        (r_later, "Di D"),
        (r_far, "Ed E"),
        (r_done, "Flo F"),
        (g_done, "Gus G"),
        (g_answered, "Hal H"),
    ):
        feed.patient(p, name)
    feed.patient(u_never, "Ivy I", assigned_provider="email:dr.lee@reference.example.org")
    feed.flag(u_fast, "fl1", "callback-requested", "Nurse line: call back", callback_requested=True)
    feed.flag(u_late, "fl2", "urgent", "Post-op follow-up", priority="PH")
    feed.flag(u_never, "fl3", "refill-request", "Open refill request", priority="PM")
    feed.flag(g_done, "fl4", "billing-hold", "Billing hold", priority="PL")  # not urgent
    t = now_ms()
    feed.appointment(r_soon, "ap1", t + DAY_MS, updated_at=t - 20 * DAY_MS)
    feed.appointment(r_later, "ap2", t + 5 * DAY_MS, updated_at=t - 20 * DAY_MS)
    feed.appointment(r_far, "ap3", t + 20 * DAY_MS, updated_at=t - 20 * DAY_MS)
    feed.appointment(r_done, "ap4", t + DAY_MS, updated_at=t - 20 * DAY_MS)
    for spec in (topics.PATIENTS, topics.FLAGS, topics.APPOINTMENTS):
        wait_for(
            lambda spec=spec: kafka_tools.caught_up(
                kafka_bootstrap, f"{ns}-streams", topics.topic_name(spec, feed.env)
            ),
            90,
            message=f"the worker read {spec.suffix}",
        )

    # ---- the day: 76 answered calls around 18 missed ones
    answered = 0

    def answered_calls(n: int) -> None:
        nonlocal answered
        for _ in range(n):
            feed.call(phone(), "ANSWERED")
            answered += 1

    np_optout = phone()
    optout_sms = feed.sms(np_optout, "Please stop texting me")  # a sentence: one confirmation allowed
    answered_calls(20)
    missed: dict[str, dict] = {}
    np_reply, np_booked, np_answered, np_twice, np_silent, np_dup = (phone() for _ in range(6))
    missed["np_reply"] = feed.call(np_reply)
    missed["np_booked"] = feed.call(np_booked)
    missed["np_answered"] = feed.call(np_answered)
    feed.call(np_answered, "ANSWERED")  # called again and got through before the first SMS
    answered += 1
    missed["np_twice"] = feed.call(np_twice)
    feed.call(np_twice)  # a second missed call joins the case
    missed["np_silent"] = feed.call(np_silent)
    missed["np_optout"] = feed.call(np_optout)
    missed["np_dup"] = feed.call(np_dup)
    feed.redeliver(missed["np_dup"])  # the provider retried the webhook: same event id
    answered_calls(20)
    missed["u_fast"] = feed.call(u_fast)
    missed["u_late"] = feed.voicemail(u_late, "It's Bob, my wound looks worse, please call me back")
    missed["u_never"] = feed.call(u_never)
    missed["r_soon"] = feed.voicemail(r_soon, "Hi, I need to reschedule my appointment tomorrow")
    missed["r_later"] = feed.voicemail(r_later, "Can I move my appointment to another week?")
    missed["r_far"] = feed.voicemail(r_far, "I need to cancel my appointment next month")
    missed["r_done"] = feed.voicemail(r_done, "I'd like a different time for tomorrow's visit")
    missed["g_done"] = feed.voicemail(g_done, "I'm not cancelling anything, I have a question about my bill")
    missed["g_answered"] = feed.call(g_answered)
    feed.call(BLOCKED)  # spam: ignored, counted
    answered_calls(20)

    cid = {name: recipes.case_id(PRACTICE, e["caller"], e["event_id"]) for name, e in missed.items()}

    def aid(name: str, step: str) -> str:
        return f"{cid[name]}:{step}"

    # ---- what people do once the first responses are out
    out.action(aid("np_reply", "first_sms"))
    feed.sms(np_reply, "Yes! Can I come in tomorrow morning?")
    out.action(aid("np_booked", "first_sms"))
    feed.appointment(np_booked, "ap9", now_ms() + 2 * DAY_MS)
    out.action(aid("np_dup", "first_sms"))
    feed.sms(np_dup, "STOP")  # keyword opt-out: the carrier confirms, we do not
    out.action(aid("u_fast", "clinical_task"))
    feed.complete(u_fast, aid("u_fast", "clinical_task"))
    out.action(aid("r_done", "reschedule_sms"))
    feed.appointment(r_done, "ap4", now_ms() + 3 * DAY_MS)  # moved with the link
    out.action(aid("g_done", "admin_task"))
    feed.complete(g_done, aid("g_done", "admin_task"))
    out.action(aid("g_answered", "admin_task"))
    feed.call(g_answered, "ANSWERED")  # called again, reached the office
    answered += 1
    answered_calls(94 - 18 - answered - 1)
    out.action(aid("u_late", "manager_alert"))
    feed.complete(u_late, aid("u_late", "clinical_task"))  # called back, but after the alert
    out.action(aid("np_twice", "callback_task"))
    feed.complete(np_twice, aid("np_twice", "callback_task"))
    feed.call(phone(), "ANSWERED")
    answered += 1
    assert answered == 76

    # ---- the expected records, each exactly once
    expected_steps = {
        "np_reply": ["first_sms", "notify_coordinator", "patient_replied"],
        "np_booked": ["first_sms", "notify_coordinator"],
        "np_answered": [],
        "np_twice": ["first_sms", "notify_coordinator", "second_sms", "callback_task"],
        "np_silent": ["first_sms", "notify_coordinator", "second_sms", "callback_task"],
        "np_optout": ["callback_task", "notify_coordinator"],
        "np_dup": ["first_sms", "notify_coordinator", "callback_task"],
        "u_fast": ["clinical_task", "ack_sms"],
        "u_late": ["clinical_task", "ack_sms", "manager_alert"],
        "u_never": ["clinical_task", "ack_sms", "manager_alert"],
        "r_soon": ["reschedule_sms", "notify_scheduling", "protect_task", "protect_alert"],
        "r_later": ["reschedule_sms", "notify_scheduling"],
        "r_far": ["callback_task", "notify_scheduling"],
        "r_done": ["reschedule_sms", "notify_scheduling"],
        "g_done": ["admin_task"],
        "g_answered": ["admin_task"],
    }
    confirmation = recipes.case_id(PRACTICE, np_optout, optout_sms["event_id"]) + ":optout_confirmation"
    expected_actions = {aid(n, s) for n, steps in expected_steps.items() for s in steps} | {confirmation}
    # Every task goes with its notice to the role (recipes.task_notice).
    tasks = recipes.CALLBACK_STEPS | {"patient_replied"}
    expected_actions |= {a + recipes.NOTICE for a in expected_actions if a.rpartition(":")[2] in tasks}
    expected_finals = {
        "np_reply": ("EXPIRED", None),  # a reply is read by a person (a task); a response, not a conversion
        "np_booked": ("CONVERTED", "booking"),
        "np_answered": ("SUPPRESSED", None),
        "np_twice": ("CONVERTED", "callback"),
        "np_silent": ("ESCALATED_AND_CLOSED", None),
        "np_optout": ("EXPIRED", None),
        "np_dup": ("ESCALATED_AND_CLOSED", None),
        "u_fast": ("CONVERTED", "callback"),
        "u_late": ("CONVERTED", "callback"),
        "u_never": ("ESCALATED_AND_CLOSED", None),
        "r_soon": ("ESCALATED_AND_CLOSED", None),
        "r_later": ("EXPIRED", None),
        "r_far": ("EXPIRED", None),
        "r_done": ("CONVERTED", "reschedule"),
        "g_done": ("CONVERTED", "callback"),
        "g_answered": ("EXPIRED", None),  # reached the office: a response, not a conversion
    }
    scenario = {
        n: (
            "NEW_PATIENT"
            if n.startswith("np")
            else "URGENT_EXISTING"
            if n.startswith("u_")
            else "RESCHEDULE"
            if n.startswith("r_")
            else "GENERAL_INQUIRY"
        )
        for n in cid
    }

    def finals() -> dict[str, dict]:
        return {o["case_id"]: o for o in out.outcomes() if o["final"]}

    wait_for(
        lambda: len(finals()) == len(cid) and expected_actions <= {a["action_id"] for a in out.actions()},
        120,
        interval=0.25,
        message="every case closed and every expected action emitted",
    )
    # Everything the worker read is committed: no late record can still be on its way.
    for spec in (topics.CALL_EVENTS, topics.TASK_UPDATES, topics.APPOINTMENTS):
        wait_for(
            lambda spec=spec: kafka_tools.caught_up(
                kafka_bootstrap, f"{ns}-streams", topics.topic_name(spec, feed.env)
            ),
            30,
            message=f"the worker committed {spec.suffix}",
        )

    actions = out.actions()
    counts = Counter(a["action_id"] for a in actions)
    assert {i: n for i, n in counts.items() if n > 1} == {}, "an action was emitted twice"
    assert set(counts) == expected_actions
    for a in actions:
        key = topics.join_key(PRACTICE, a["recipient"] if a["kind"] == "SEND_SMS" else a["params"]["caller"])
        assert a["_key"] == key and a["_partition"] == topics.partition_for(key, 4)
        assert a["practice_id"] == PRACTICE and a["created_at"] >= (a["call_reported_at"] or 0)
    by_id = {a["action_id"]: a for a in actions}
    assert by_id[aid("u_never", "clinical_task")]["recipient"] == "email:dr.lee@reference.example.org"
    assert by_id[aid("u_fast", "clinical_task")]["params"]["urgency_reason"] == "Nurse line: call back"
    assert "wound" not in by_id[aid("u_late", "ack_sms")]["body"]
    assert by_id[aid("np_optout", "callback_task")]["params"]["blocked_reason"] == "the caller opted out of SMS"
    assert by_id[confirmation]["params"]["consent_confirmation"] == "1"
    assert by_id[aid("r_soon", "notify_scheduling")]["params"]["appointment_id"] == "ap1"

    outcomes = out.outcomes()
    assert {i: n for i, n in Counter(o["outcome_id"] for o in outcomes).items() if n > 1} == {}
    assert {o["case_id"] for o in outcomes} == set(cid.values())
    final = finals()
    for name, (state, channel) in expected_finals.items():
        record = final[cid[name]]
        assert (record["state"], record["conversion_channel"]) == (state, channel), name
        assert record["scenario"] == scenario[name], name
        assert record["converted"] is (state == "CONVERTED"), name
    middle = {
        "np_answered": [],
        "np_twice": ["RESPONDED", "ESCALATED"],
        "np_silent": ["RESPONDED", "ESCALATED"],
        "np_dup": ["RESPONDED", "ESCALATED"],
        "u_late": ["RESPONDED", "ESCALATED"],
        "u_never": ["RESPONDED", "ESCALATED"],
        "r_soon": ["RESPONDED", "ESCALATED"],
    }
    expected_outcomes = {
        f"{cid[n]}:{state}" for n in cid for state in ["OPEN", *middle.get(n, ["RESPONDED"]), expected_finals[n][0]]
    }
    assert len(expected_actions) == 39 + 12 and len(expected_outcomes) == 53  # 12 tasks, 12 notices
    assert {o["outcome_id"] for o in outcomes} == expected_outcomes
    for name in cid:
        if name != "np_answered":
            responded = next(o for o in outcomes if o["case_id"] == cid[name] and o["state"] == "RESPONDED")
            assert responded["within_window"] is True and responded["response_latency_ms"] >= 1000, name
    assert final[cid["np_twice"]]["escalations"] == 1 and final[cid["u_fast"]]["escalations"] == 0
    assert by_id[aid("np_reply", "patient_replied")]["params"]["reply_text"] == "Yes! Can I come in tomorrow morning?"
    assert (final[cid["np_reply"]]["responded"], final[cid["np_reply"]]["response_channel"]) == (True, "sms_reply")
    assert final[cid["g_answered"]]["response_channel"] == "answered_call"

    # What we measured: how long after its due time each gate fired (printed with -s).
    windows = {
        "first_sms": 1000,
        "clinical_task": 1000,
        "reschedule_sms": 1000,
        "admin_task": 1000,
        "second_sms": 5000,
        "manager_alert": 5000,
        "protect_task": 5000,
    }
    lags = sorted(
        a["created_at"] - a["call_reported_at"] - windows[a["step"]]
        for a in actions
        if a["step"] in windows and a["action_id"] in expected_actions and a["call_reported_at"]
    )
    print(f"\ngate lag after due (ms): n={len(lags)} p50={lags[len(lags) // 2]} max={lags[-1]}")
    assert lags[0] >= 0 and lags[-1] < 2000, lags
