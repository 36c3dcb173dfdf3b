"""A whole simulated day through the real code, without Kafka: every planned input is
rendered, read by the real gateway / CDR mapping / FHIR mapping / Google Voice watcher's
reading of an e-mail / audit-log importer, and handed to the real
workflow (`ringback.workflow.inputs.Workflow`) on a manual clock that ticks like a worker. The
SMS steps the workflow emits and the way each case ends are what the plan expects, so
the demo's check against the Twilio stand-in compares with the right numbers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from functools import partial
from operator import methodcaller

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.dev.simulator import plan as sim
from ringback.dev.simulator import render
from ringback.dev.simulator.hl7_feed import TO_HL7, Hl7Writer, ack_code
from ringback.dev.simulator.practices import SECRET_NAMES
from ringback.dev.simulator.webhooks import Webhook
from ringback.domain.phones import normalize
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas import codec
from ringback.sources.cdr import records as cdr_records
from ringback.sources.ehr.fhir import appointment_facts, flag_facts, patient_facts
from ringback.sources.ehr.hl7 import listener
from ringback.sources.ehr.hl7.listener import Hl7Feed
from ringback.sources.ehr.hl7.received import ReceivedLog
from ringback.sources.ehr.publisher import EhrProjector, empty_state
from ringback.sources.gateway import Gateway
from ringback.sources.gvoice import audit_log
from ringback.sources.gvoice.mailbox import Fetched, MailboxConfig
from ringback.sources.gvoice.watcher import GVoiceWatcher
from ringback.workflow.inputs import Workflow
from ringback.workflow.state import DELETE, Tx
from tests.dev.simulator.test_plan import day_plan
from tests.dev.simulator.test_render import PUBLIC, SECRETS, MemoryProducer

pytestmark = pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")

PARTITIONS = 4
T0 = 1_795_000_000.0  # the day's start (wall clock of the run)
TICK_S = 0.25


def _json(value):
    return None if value is None else json.loads(json.dumps(value))


class OfflineDay:
    """The connectors and one stream worker, in-process, on a manual clock. `ehr_path`
    "hl7": patients and appointments as the demo sends them, HL7 v2 messages handled by the
    HL7 listener's own code (`Hl7Feed.handle`: mapping, projector, ACK), flags by the FHIR
    mapping of a projector that only learns the flagged patients' phones (`hl7_feed.py`)."""

    def __init__(self, plan: sim.Plan, secrets_dir, ehr_path: str = "fhir") -> None:
        self.plan = plan
        self.ehr_path = ehr_path
        practices = [s.practice for s in plan.sites]
        self.directory = PracticeDirectory(practices)
        for provider, (_, name) in SECRET_NAMES.items():
            (secrets_dir / name).write_text(SECRETS.of(provider))
        env = Settings(
            kafka_bootstrap_servers="127.0.0.1:1",
            ringback_namespace="sim",
            ringback_secrets_dir=secrets_dir,
            ringback_public_url=PUBLIC,
            twilio_auth_token=None,
            ringback_state_dir=secrets_dir / "state",
        )
        self.env = env
        self.call_topic = topics.topic_name(topics.CALL_EVENTS, env)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
        self.producer = MemoryProducer()
        self.clock = ManualClock(T0)
        self.hl7_writer = Hl7Writer()
        self.hl7_feeds = {
            p.id: Hl7Feed(
                env,
                self.producer,
                p,
                "US",
                listener.state_store(env, p.id),
                empty_state(p.id),
                ReceivedLog(env, self.producer, p.id),
                self.clock,
            )
            for p in practices
        }
        self.ehr_topics = {topics.topic_name(spec, env): spec.suffix for spec in (topics.PATIENTS, topics.APPOINTMENTS)}
        self.hl7_acks: Counter = Counter()
        self.gateway = Gateway(env, self.directory, self.producer, self.clock)
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start())
        self.projectors = {p.id: EhrProjector(p.id) for p in practices}
        self.cdr_ctx = {p.id: cdr_records.Context.of(p, self.directory) for p in practices}
        self.table: dict[str, object] = {}
        self.actions: list[dict] = []
        self.outcomes: list[dict] = []
        self.now = T0
        self.next_tick = T0
        self.missing_tasks: list[str] = []
        # Google Voice: a watcher per practice (its reading of one message), rows not imported yet.
        mailbox = MailboxConfig(host="127.0.0.1", user="frontdesk", password="unused")
        self.watchers = {
            s.practice.id: GVoiceWatcher(env, self.directory, self.producer, mailbox, s.practice.id, clock=self.clock)
            for s in plan.sites
            if s.provider == sim.GVOICE
        }
        self.audit_rows: dict[str, list[tuple[str, ...]]] = {}
        self.gvoice_dead_letters = 0

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.gateway.app()))
        await client.start_server()
        return client

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()

    # -- the worker
    def run(self, partition: int, fn) -> None:
        tx = Tx(lambda k: _json(self.table.get(k)))
        fn(Workflow(tx, self.directory, int(self.now * 1000), partition))
        self.actions += [a for _, a in tx.actions]
        self.outcomes += tx.outcomes
        for k, v in tx.writes.items():
            if v is DELETE:
                self.table.pop(k, None)
            else:
                self.table[k] = _json(v)

    def partition(self, practice_id: str, phone: str) -> int:
        return topics.partition_for(topics.join_key(practice_id, phone), PARTITIONS)

    def advance(self, until: float) -> None:
        while self.next_tick <= until:
            self.now = self.next_tick
            for p in range(PARTITIONS):
                self.run(p, lambda wf: wf.on_tick())
            self.next_tick += TICK_S
        self.now = until
        self.clock.set(until)

    # -- inputs
    def call_event(self, record: dict) -> None:
        self.run(self.partition(record["practice_id"], record["caller"]), lambda wf: wf.on_call_event(record))

    def webhook(self, event: sim.SimEvent, hook: Webhook) -> None:
        async def post() -> int:
            async with self.client.post(hook.path, data=hook.body, headers=hook.headers) as resp:
                return resp.status

        before = len(self.producer.sent)
        status = self.loop.run_until_complete(post())
        assert status == event.expect_status if event.expect_status else status < 300, (event, status)
        for topic, _, value in self.producer.sent[before:]:
            if topic == self.call_topic:
                self.call_event(codec.decode("call_event", value))

    def produced(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        for topic, _, value in records:
            if topic == self.call_topic and value is not None:
                self.call_event(codec.decode("call_event", value))
            elif topic == self.dead_topic:
                self.gvoice_dead_letters += 1

    def gvoice(self, event: sim.SimEvent) -> None:
        """An e-mail as `gvoice watch` reads it, or an audit-log row kept for the next export."""
        pid = event.practice_id
        if event.kind == sim.IMPORT:
            rows = self.audit_rows.pop(pid, [])
            ctx = audit_log.Practiced.of(self.directory.by_id(pid))
            text = render.gvoice_audit_csv(rows)
            before = len(self.producer.sent)
            self.loop.run_until_complete(
                audit_log.publish(self.producer, self.env, text, "export.csv", ctx, int(self.now * 1000))
            )
            self.produced(self.producer.sent[before:])
        elif event.row:
            self.audit_rows.setdefault(pid, []).append(event.row)
        else:
            raw = render.gvoice_email(event, self.directory.by_id(pid), self.now)
            if raw is not None:
                outputs, _ = self.watchers[pid]._outputs(Fetched(event.seq, raw, int(self.now * 1000)))
                self.produced([(o.topic, o.key, o.value) for o in outputs])

    def cdr_line(self, event: sim.SimEvent) -> None:
        practice = self.directory.by_id(event.practice_id)
        mapped = cdr_records.map_line(
            render.cdr_line(event, practice, self.now)[:-1], self.cdr_ctx[event.practice_id], int(self.now * 1000)
        )
        if mapped.kind == "event":
            self.call_event(mapped.record)

    def ehr(self, event: sim.SimEvent) -> None:
        projector = self.projectors[event.practice_id]
        now_ms = int(self.now * 1000)
        resources = render.fhir_resources(event, self.now)
        if self.ehr_path == "hl7":
            self.hl7(event.practice_id, [r for r in resources if r["resourceType"] in TO_HL7])
            resources = [r for r in resources if r["resourceType"] not in TO_HL7]
            subjects = {flag["subject"]["reference"].split("/")[1] for flag in resources}
            for pid in sorted(subjects):  # their phones only: the patient records are the HL7 feed's
                projector.patient(patient_facts(self.hl7_writer.patients[(event.practice_id, pid)], "US", now_ms))
        for resource in resources:
            kind = resource["resourceType"]
            if kind == "Patient":
                ops = projector.patient(patient_facts(resource, "US", now_ms))
            elif kind == "Appointment":
                ops = projector.appointment(appointment_facts(resource, now_ms))
            else:
                ops = projector.flag(flag_facts(resource, now_ms, now_ms))
            for op in ops:
                self.ehr_record(event.practice_id, op.schema, op.key.decode(), op.value)

    def ehr_record(self, practice_id: str, schema: str, key: str, record: dict | None) -> None:
        _, phone, *rid = key.split("|")
        part = self.partition(practice_id, phone)
        if schema == "patient":
            self.run(part, methodcaller("on_patient", practice_id, phone, record))
        elif schema == "appointment":
            self.run(part, methodcaller("on_appointment", practice_id, phone, rid[0], record))
        else:
            self.run(part, methodcaller("on_flag", practice_id, phone, rid[0], record))

    def hl7(self, practice_id: str, resources: list[dict]) -> None:
        """Each message through the listener's handler; its records to the workflow once it answered AA."""
        for message in self.hl7_writer.messages(practice_id, "US", resources):
            before = len(self.producer.sent)
            reply = self.loop.run_until_complete(self.hl7_feeds[practice_id].handle(message.text.encode()))
            assert reply is not None and ack_code(reply)[:2] == ("AA", message.control_id), reply
            self.hl7_acks[message.kind] += 1
            for topic, key, value in self.producer.sent[before:]:
                if topic in self.ehr_topics:
                    schema = {"patients": "patient", "appointments": "appointment"}[self.ehr_topics[topic]]
                    record = codec.decode(schema, value) if value is not None else None
                    self.ehr_record(practice_id, schema, key.decode(), record)

    def staff(self, event: sim.SimEvent) -> None:
        case = next(c for c in self.plan.cases if c.case == event.case)
        task_id = case.task_id(event.step)
        if not any(a["action_id"] == task_id for a in self.actions):  # the console shows only tasks that exist
            self.missing_tasks.append(task_id)
            return
        update = {
            "update_id": uuid.uuid4().hex,
            "task_id": task_id,
            "case_id": case.case_id,
            "practice_id": case.practice_id,
            "action": "COMPLETE",
            "actor": "demo",
            "outcome": "reached_patient",
            "new_role": None,
            "at": int(self.now * 1000),
        }
        self.run(self.partition(case.practice_id, case.caller), lambda wf: wf.on_task_update(case.caller, update))

    def play(self) -> None:
        for event in self.plan.preload:
            self.ehr(event)
        # Every input at its wall time: a forwarded Twilio call's callbacks each at their own.
        inputs: list[tuple[float, int, int, Callable[[], None]]] = []
        for n, event in enumerate(self.plan.events):
            if event.provider == "cdr":
                inputs.append((event.at, n, 0, partial(self.cdr_line, event)))
            elif event.provider == sim.GVOICE:
                inputs.append((event.at, n, 0, partial(self.gvoice, event)))
            elif event.kind == sim.EHR:
                inputs.append((event.at, n, 0, partial(self.ehr, event)))
            elif event.kind == sim.STAFF:
                inputs.append((event.at, n, 0, partial(self.staff, event)))
            else:
                timed = render.timeline(event, PUBLIC, SECRETS, T0 + event.at, self.plan.day.speed)
                for k, (at, hook) in enumerate(timed):
                    inputs.append((event.at + at, n, k, partial(self.webhook, event, hook)))
        for at, _, _, play in sorted(inputs, key=lambda i: i[:3]):
            self.advance(T0 + at)
            play()
        expiry = max(s.practice.windows.case_expiry for s in self.plan.sites)
        self.advance(T0 + self.plan.length_s + expiry + 2)


@pytest.mark.parametrize(
    "seed, speed, practices, gvoice_via, ehr_path",
    [
        (7, 600.0, 6, sim.GV_EMAIL, "fhir"),
        (11, 1200.0, 6, sim.GV_AUDIT, "fhir"),
        (3, 300.0, 6, sim.GV_EMAIL, "fhir"),
        (13, 600.0, 6, sim.GV_AUDIT, "fhir"),
        (5, 15.0, 1, sim.GV_EMAIL, "fhir"),
        (7, 600.0, 6, sim.GV_EMAIL, "hl7"),
    ],
)
def test_the_real_workflow_sends_the_planned_sms_and_ends_each_case_as_planned(
    seed, speed, practices, gvoice_via, ehr_path, tmp_path
):
    """Speed 15 keeps a 3 s hold: transcripts arrive within it, one caller gets through during it.
    The Google Voice practice reads its e-mails, or its audit log in batches (the day starting at T0).
    "hl7": the EHR as the demo sends it (patients and appointments over the HL7 feed)."""
    plan = day_plan(seed=seed, n=practices, speed=speed, gvoice_via=gvoice_via, start=T0)
    day = OfflineDay(plan, tmp_path, ehr_path)
    try:
        day.play()
    finally:
        day.close()
    assert day.missing_tasks == []
    if practices == 6:  # the unreadable e-mail or the broken row: a dead letter, no call
        assert day.gvoice_dead_letters == 1
    sms = Counter(a["action_id"] for a in day.actions if a["kind"] == "SEND_SMS")
    assert max(sms.values()) == 1
    expected = Counter(f"{c.case_id}:{step}" for c in plan.cases for step in c.sms_steps)
    assert Counter(sms) == expected
    finals = {o["case_id"]: (o["state"], o["conversion_channel"]) for o in day.outcomes if o["final"]}
    planned = {c.case_id: (c.final_state, c.channel) for c in plan.cases}
    wrong = {
        c.case: (planned[c.case_id], finals.get(c.case_id))
        for c in plan.cases
        if finals.get(c.case_id) != planned[c.case_id]
    }
    assert wrong == {}
    assert set(finals) == set(planned)  # no case the plan did not open (spam, answered calls, junk)
    scenarios = {o["case_id"]: o["scenario"] for o in day.outcomes if o["final"]}
    assert {c.case_id: c.scenario for c in plan.cases} == scenarios
    # The patients whose EHR record prefers Spanish get their SMS in Spanish, the others in English.
    spanish = {
        (event.practice_id, normalize(r["telecom"][0]["value"], "US"))
        for event in plan.preload
        for r in event.resources
        if r["resourceType"] == "Patient" and r.get("communication")
    }
    sms_languages = {
        (a["practice_id"], a["recipient"], a["params"]["language"]) for a in day.actions if a["kind"] == "SEND_SMS"
    }
    assert {(practice, phone) for practice, phone, lang in sms_languages if lang == "es"} == spanish != set()
    assert {lang for _, _, lang in sms_languages} == {"en", "es"}
    if ehr_path == "hl7":  # every kind of message the demo sends was answered AA
        assert set(day.hl7_acks) == {"ADT^A28", "SIU^S12", "SIU^S13"}, day.hl7_acks
