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
from ringback.dev.simulator.practices import SECRET_NAMES
from ringback.dev.simulator.webhooks import Webhook
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas import codec
from ringback.sources.cdr import records as cdr_records
from ringback.sources.ehr.fhir import appointment_facts, flag_facts, patient_facts
from ringback.sources.ehr.publisher import EhrProjector
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
    """The connectors and one stream worker, in-process, on a manual clock."""

    def __init__(self, plan: sim.Plan, secrets_dir) -> None:
        self.plan = plan
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
        )
        self.env = env
        self.call_topic = topics.topic_name(topics.CALL_EVENTS, env)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
        self.producer = MemoryProducer()
        self.clock = ManualClock(T0)
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
        for resource in render.fhir_resources(event, self.now):
            kind = resource["resourceType"]
            if kind == "Patient":
                ops = projector.patient(patient_facts(resource, "US", now_ms))
            elif kind == "Appointment":
                ops = projector.appointment(appointment_facts(resource, now_ms))
            else:
                ops = projector.flag(flag_facts(resource, now_ms, now_ms))
            for op in ops:
                pid, phone = event.practice_id, op.phone
                record = op.value
                part = self.partition(pid, phone)
                if op.schema == "patient":
                    self.run(part, methodcaller("on_patient", pid, phone, record))
                elif op.schema == "appointment":
                    rid = op.key.decode().rsplit("|", 1)[1]
                    self.run(part, methodcaller("on_appointment", pid, phone, rid, record))
                else:
                    rid = op.key.decode().rsplit("|", 1)[1]
                    self.run(part, methodcaller("on_flag", pid, phone, rid, record))

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
    "seed, speed, practices, gvoice_via",
    [
        (7, 600.0, 6, sim.GV_EMAIL),
        (11, 1200.0, 6, sim.GV_AUDIT),
        (3, 300.0, 6, sim.GV_EMAIL),
        (13, 600.0, 6, sim.GV_AUDIT),
        (5, 15.0, 1, sim.GV_EMAIL),
    ],
)
def test_the_real_workflow_sends_the_planned_sms_and_ends_each_case_as_planned(
    seed, speed, practices, gvoice_via, tmp_path
):
    """Speed 15 keeps a 3 s hold: transcripts arrive within it, one caller gets through during it.
    The Google Voice practice reads its e-mails, or its audit log in batches (the day starting at T0)."""
    plan = day_plan(seed=seed, n=practices, speed=speed, gvoice_via=gvoice_via, start=T0)
    day = OfflineDay(plan, tmp_path)
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
