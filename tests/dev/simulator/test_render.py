"""The simulator's inputs are what the real connectors accept: every planned webhook through
the real gateway (in-process, in-memory producer), every CDR line through the CDR mapping,
every FHIR resource through the EHR connector's mapping, every Google Voice e-mail through
the watcher's reading and every audit-log row through the importer; each gives the planned records. A
forwarded Twilio call's several signals give the planned verdict as the worker decides it
(workflow/calls.py), each posted to the URL the ready-made flow's TwiML names."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections import Counter
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.dev.simulator import plan as sim
from ringback.dev.simulator import render
from ringback.dev.simulator.practices import SECRET_NAMES
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas import codec
from ringback.sources.cdr import records as cdr_records
from ringback.sources.ehr.fhir import appointment_facts, flag_facts, patient_facts
from ringback.sources.ehr.publisher import EhrProjector
from ringback.sources.gateway import Gateway
from ringback.sources.gvoice import audit_log
from ringback.sources.gvoice.notifications import Unreadable, call_events, read_notification
from ringback.workflow import calls
from ringback.workflow.state import new_caller
from tests.dev.simulator.test_plan import day_plan

pytestmark = pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")

PUBLIC = "https://gateway.example.org"
NOW = 1_790_000_000.0
SECRETS = render.Secrets(
    twilio="sim-twilio-token",
    ringcentral="sim-rc-token",
    dialpad="sim-dialpad-secret",
    vonage="sim-vonage-signature-secret-0123456789",
)


class MemoryProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic, key, value, headers=None, partition=None):
        self.sent.append((topic, key, value))
        return 0, len(self.sent) - 1


@pytest.fixture(scope="module")
def plan():
    return day_plan(seed=11)  # its Twilio practice's day has every shape of forwarded call


@pytest.fixture(scope="module")
def gateway(plan, tmp_path_factory):
    secrets_dir = tmp_path_factory.mktemp("secrets")
    for provider, (_, name) in SECRET_NAMES.items():
        (secrets_dir / name).write_text(SECRETS.of(provider))
    env = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        ringback_namespace="sim",
        ringback_secrets_dir=secrets_dir,
        ringback_public_url=PUBLIC,
        twilio_auth_token=None,
    )
    producer = MemoryProducer()
    gw = Gateway(env, PracticeDirectory([s.practice for s in plan.sites]), producer, ManualClock(NOW))
    loop = asyncio.new_event_loop()

    async def start() -> TestClient:
        client = TestClient(TestServer(gw.app()))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())

    def post(hook):
        before = len(producer.sent)

        async def go():
            async with client.post(hook.path, data=hook.body, headers=hook.headers) as resp:
                return resp.status, await resp.text()

        status, text = loop.run_until_complete(go())
        return status, producer.sent[before:], text

    yield post, env
    loop.run_until_complete(client.close())
    loop.close()


def verdict(events: list[dict]) -> tuple[str | None, str | None]:
    """What the worker makes of one call's signals: (its outcome, the event id that first made it
    a miss, which opens the case)."""
    state = new_caller(events[0]["practice_id"], events[0]["caller"])
    outcome = opening = None
    for e in events:
        changed = calls.decide(state, e, int(NOW * 1000))
        if changed is not None:
            outcome = changed
            if changed != sim.ANSWERED and opening is None:
                opening = e["event_id"]
    return outcome, opening


def test_every_planned_webhook_is_authentic_and_gives_the_planned_event(plan, gateway):
    post, env = gateway
    call_topic = topics.topic_name(topics.CALL_EVENTS, env)
    dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
    statuses: Counter = Counter()
    opening = {c.opening_event_id for c in plan.cases}
    produced_ids: set[str] = set()
    forwarded: Counter = Counter()
    for event in plan.events:
        hooks = render.webhooks(event, PUBLIC, SECRETS, NOW)
        if event.provider in ("cdr", sim.GVOICE) or event.kind in (sim.STAFF, sim.EHR):
            assert hooks == []
            continue
        records = []
        for hook in hooks:
            status, sent, _ = post(hook)
            statuses[status] += 1
            expected = event.expect_status
            assert status == expected if expected else status in (200, 204), (event, status)
            records += sent
        if event.junk in ("forged", "unknown_number"):
            assert records == []
            continue
        if event.junk == "malformed":
            assert [t for t, _, _ in records] == [dead_topic]
            continue
        events = [codec.decode("call_event", v) for t, _, v in records if t == call_topic]
        assert events, event
        assert all(e["practice_id"] == event.practice_id and e["caller"] == event.caller for e in events)
        if event.kind == sim.CALL and event.forward is not None:
            # Several signals of one call (leg, machine, parent), decided per call as the worker does.
            assert {e["provider_call_id"] for e in events} == {event.call_id}
            assert {e["signal"] for e in events} <= {"parent", "leg", "machine"}
            assert all(e["occurred_at"] // 1000 == int(NOW) for e in events)
            outcome, opened_by = verdict(events)
            assert outcome == event.outcome, (event, [(e["event_id"], e["outcome"]) for e in events])
            if opened_by is not None:
                assert outcome != sim.ANSWERED and opened_by == event.opening_event_id
                produced_ids.add(opened_by)
            forwarded[event.forward.front, event.forward.parent_first] += 1
            continue
        assert len({e["event_id"] for e in events}) == 1  # a call's several callbacks collapse to one id
        got = events[-1]
        produced_ids.add(got["event_id"])
        if event.kind == sim.CALL:
            assert (got["event_type"], got["outcome"], got["direction"]) == ("CALL", event.outcome, "INBOUND")
            assert got["event_id"] == event.opening_event_id
            assert got["occurred_at"] // 1000 == int(NOW)  # the provider's own time of the call
        elif event.kind == sim.TRANSCRIPT:
            assert got["event_type"] == "TRANSCRIPTION" and got["transcript"] == event.text
        elif event.kind == sim.SMS:
            assert got["event_type"] == "SMS" and got["sms_body"] == event.text
    webhook_cases = {c.opening_event_id for c in plan.cases if not c.opening_event_id.startswith(("cdr:", "google"))}
    assert webhook_cases <= produced_ids and webhook_cases <= opening
    assert statuses[403] and statuses[404] and statuses[400]
    shapes = {sim.FORWARD_MISSED, sim.FORWARD_MACHINE, sim.FORWARD_ANSWERED}
    assert {front for front, _ in forwarded} == shapes and forwarded[sim.FORWARD_MISSED, True]


def _named_urls(twiml: str) -> set[str]:
    """The callback URLs a TwiML answer gives Twilio (Dial / Record actions, leg callbacks)."""
    names = ("action", "statusCallback", "amdStatusCallback", "transcribeCallback")
    return {el.get(name) for el in ET.fromstring(twiml).iter() for name in names if el.get(name)}


def test_a_forwarded_call_posts_each_callback_to_the_url_the_call_flows_twiml_names(plan, gateway):
    post, _ = gateway
    transcripts = {e.call_id: e for e in plan.events if e.kind == sim.TRANSCRIPT and e.forward is not None}
    checked: Counter = Counter()
    for event in plan.events:
        if event.kind != sim.CALL or event.forward is None:
            continue
        hooks = render.webhooks(event, PUBLIC, SECRETS, NOW)
        if event.call_id in transcripts:
            hooks += render.webhooks(transcripts[event.call_id], PUBLIC, SECRETS, NOW)
        assert hooks[0].path == "/webhooks/twilio/voice/incoming"
        named: set[str] = set()
        for hook in hooks:
            status, _, answer = post(hook)
            assert status in (200, 204), (hook.path, status, answer)
            if status == 200:  # TwiML: the incoming call's <Dial>, the Dial action's voicemail fallback
                named |= _named_urls(answer)
            if "?" not in hook.path:
                assert hook.path in ("/webhooks/twilio/voice/incoming", "/webhooks/twilio/voice/status")
                continue  # the number's own webhooks, configured in the Twilio console
            assert PUBLIC + hook.path in named, (hook.path, named)
            checked[urlsplit(hook.path).path] += 1
    assert set(checked) == {
        "/webhooks/twilio/voice/status",
        "/webhooks/twilio/voice/amd",
        "/webhooks/twilio/voice/dial",
        "/webhooks/twilio/voice/voicemail",
        "/webhooks/twilio/voice/transcription",
    }


def test_every_planned_cdr_line_maps_to_the_planned_event(plan):
    site = next(s for s in plan.sites if s.provider == "cdr")
    ctx = cdr_records.Context.of(site.practice, PracticeDirectory([s.practice for s in plan.sites]))
    events = [e for e in plan.events if e.practice_id == site.practice.id and e.kind in (sim.CALL, sim.JUNK)]
    assert events
    for event in events:
        line = render.cdr_line(event, site.practice, NOW)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        mapped = cdr_records.map_line(line[:-1], ctx, int(NOW * 1000))
        if event.kind == sim.JUNK:
            assert mapped.kind == "dead"
            continue
        assert mapped.kind == "event", (event, mapped.reason)
        record = mapped.record
        assert (record["caller"], record["called"], record["outcome"]) == (event.caller, event.called, event.outcome)
        assert record["event_id"] == event.opening_event_id
        assert abs(record["occurred_at"] - NOW * 1000) < 1000


def test_fhir_resources_map_to_the_callers_records(plan):
    projector: dict[str, EhrProjector] = {}
    kinds: Counter = Counter()
    now_ms = int(NOW * 1000)
    for event in plan.preload + [e for e in plan.events if e.kind == sim.EHR]:
        p = projector.setdefault(event.practice_id, EhrProjector(event.practice_id))
        site = next(s for s in plan.sites if s.practice.id == event.practice_id)
        for resource in render.fhir_resources(event, NOW):
            kind = resource["resourceType"]
            kinds[kind] += 1
            if kind == "Patient":
                facts = patient_facts(resource, "US", now_ms)
                assert facts.phones and not facts.rejected
                ops = p.patient(facts)
            elif kind == "Appointment":
                facts = appointment_facts(resource, now_ms)
                assert facts.live and facts.start > now_ms
                ops = p.appointment(facts)
            else:
                facts = flag_facts(resource, now_ms, now_ms)
                assert facts.live
                ops = p.flag(facts)
            assert all(op.value is not None for op in ops)
        assert site.practice.id == event.practice_id
    assert kinds["Patient"] > kinds["Appointment"] > 0 and kinds["Flag"] > 0
    # Every known caller of a case has a patient record under the key its calls carry.
    for case in plan.cases:
        if case.scenario != sim.NEW:
            assert projector[case.practice_id].owner(case.caller) is not None, case.case
        elif case.behaviour != "book":
            assert projector[case.practice_id].owner(case.caller) is None, case.case


def test_every_google_voice_email_reads_as_the_planned_notification(plan):
    site = next(s for s in plan.sites if s.provider == sim.GVOICE)
    gv, number = site.practice.id, site.practice.phone_numbers[0]
    kinds: Counter = Counter()
    for event in (e for e in plan.events if e.practice_id == gv):
        raw = render.gvoice_email(event, site.practice, NOW)
        if event.kind == sim.CALL and event.outcome == sim.ANSWERED or event.kind in (sim.STAFF, sim.EHR):
            assert raw is None  # Google Voice sends no e-mail for an answered call
            continue
        assert raw is not None, event
        note = read_notification(raw)
        if event.junk == "unreadable":
            assert isinstance(note, Unreadable)
            kinds["unreadable"] += 1
            continue
        assert not isinstance(note, Unreadable), (event, note)
        assert note.caller == event.caller and note.occurred_at_ms == int(NOW) * 1000
        events = call_events(note, gv, number, 0)
        if event.kind == sim.SMS:
            assert note.kind == "text" and note.text == event.text and note.numbers == (number,)
            assert [e["event_type"] for e in events] == ["SMS"]
        else:
            assert events[-1]["event_id"] == event.event_id  # a redelivery: the id of the call it repeats
            assert event.kind == sim.JUNK or event.opening_event_id == event.event_id
            assert note.text == (event.text if event.outcome == sim.VOICEMAIL else None)
            if note.text:  # the transcript first, so the case is classified with it
                assert [e["event_type"] for e in events] == ["TRANSCRIPTION", "CALL"]
        kinds[note.kind] += 1
    assert set(kinds) == {"missed_call", "voicemail", "text", "unreadable"}


def test_every_audit_log_export_imports_as_the_planned_events():
    start = NOW
    plan = day_plan(seed=11, gvoice_via=sim.GV_AUDIT, start=start)
    site = next(s for s in plan.sites if s.provider == sim.GVOICE)
    ctx = audit_log.Practiced.of(site.practice)
    rows = [e for e in plan.events if e.practice_id == site.practice.id and e.row]
    text = render.gvoice_audit_csv(e.row for e in rows)
    columns, data = audit_log.rows(text)
    assert len(data) == len(rows)
    outcomes: Counter = Counter()
    for event, (row, _) in zip(rows, data, strict=True):
        mapped = audit_log.map_row(row, columns, ctx, 0)
        if event.junk == "bad_row":
            assert mapped.kind == "dead"
            continue
        assert mapped.kind == "event" and mapped.record["event_id"] == event.event_id
        assert (mapped.record["caller"], mapped.record["outcome"]) == (event.caller, event.outcome)
        outcomes[event.outcome] += 1
    assert set(outcomes) == {sim.MISSED, sim.VOICEMAIL, sim.ANSWERED}
