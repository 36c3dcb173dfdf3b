"""`ringback ehr hl7` on the real broker, driven by a real MLLP client (python-hl7's
`mllp_send` command and its asyncio client): records on the patients / appointments topics
with the caller's keys and partitions, AA only after the broker's acknowledgement, AE/AR
with a dead letter, a control id sent twice published once, and end to end with the stream
worker: an SIU^S13 converts the reschedule case a voicemail opened."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import pytest
from hl7.mllp import open_hl7_connection

from ringback.config.settings import Settings
from ringback.domain import recipes
from ringback.kafka import topics
from ringback.schemas import codec
from tests.conftest import REPO, free_port, wait_for
from tests.sources.ehr.hl7.test_messages import VENDOR
from tests.sources.topic_records import read_topic
from tests.support import kafka_tools
from tests.worker.test_reference_day import Collector, Feed, start_worker

pytestmark = pytest.mark.integration

PRACTICE = "maple-family"  # tests/fixtures/practices.yaml
DID = "+13125550100"
FIXTURE = REPO / "tests" / "fixtures" / "practices.yaml"
PARTITIONS = 4


# ---------------------------------------------------------------------------------- helpers
def mllp_send(port: int, *texts: str, tmp: Path) -> list[hl7.Message | None]:
    """Send messages with python-hl7's `mllp_send` (one connection, each waits for its ACK);
    the ACKs, None where the listener answered nothing."""
    path = tmp / f"batch-{len(list(tmp.glob('batch-*')))}.hl7"
    path.write_text("\n".join(texts))
    cli = shutil.which("mllp_send") or str(Path(sys.executable).with_name("mllp_send"))
    done = subprocess.run(
        [cli, "--port", str(port), "--file", str(path), "--loose", "127.0.0.1"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    acks: list[hl7.Message | None] = []
    for line in done.stdout.split(b"\n")[: len(texts)]:
        frame = line.strip(b"\x0b\x1c\r")
        acks.append(hl7.parse(frame.decode()) if frame else None)
    return acks


def msa(reply: hl7.Message | None) -> tuple[str, str]:
    assert reply is not None, "no ACK"
    return str(reply["MSA.F1"]), str(reply["MSA.F2"])


def text(name: str, **replace: str) -> str:
    body = (VENDOR / name).read_text()
    for old, new in replace.items():
        body = body.replace(old, new)
    return body


def dtm(moment: datetime) -> str:
    """HL7 DTM in UTC with milliseconds (a change in the second of the missed call is after it)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%d%H%M%S") + f".{moment.microsecond // 1000:03d}+0000"


def env_of(service_env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"],
        ringback_namespace=service_env["RINGBACK_NAMESPACE"],
        ringback_partitions=PARTITIONS,
    )


def view(bootstrap: str, ns: str, suffix: str) -> dict[bytes, dict | None]:
    """Last value per key, after checking each record sits in its caller's partition."""
    out: dict[bytes, dict | None] = {}
    schema = {"patients": "patient", "appointments": "appointment"}[suffix]
    for r in read_topic(bootstrap, f"{ns}.{suffix}"):
        practice, phone = r["key"].decode().split("|")[:2]
        assert r["partition"] == topics.partition_for(topics.join_key(practice, phone), PARTITIONS), r["key"]
        out[r["key"]] = codec.decode(schema, r["value"]) if r["value"] is not None else None
    return out


def count(bootstrap: str, ns: str, suffix: str) -> int:
    return len(read_topic(bootstrap, f"{ns}.{suffix}"))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_listener(processes, name: str = "hl7", env: dict[str, str] | None = None) -> int:
    port = free_port()
    proc = processes.start(
        name, "ehr", "hl7", "--port", str(port), "--host", "127.0.0.1", "--practice", PRACTICE, env=env
    )
    wait_for(lambda: port_open(port) or proc.poll() is not None, 90, message="the HL7 listener's port")
    assert proc.poll() is None, processes.log(name)[-3000:]
    return port


@pytest.fixture
def practices(processes):
    applied = processes.run("config", "apply", str(FIXTURE))
    assert applied.returncode == 0, applied.stderr


# ---------------------------------------------------------------------------------- tests
def test_adt_and_siu_become_keyed_records_acked_aa(practices, processes, kafka_bootstrap, service_env, tmp_path):
    ns = service_env["RINGBACK_NAMESPACE"]
    port = start_listener(processes)
    acks = mllp_send(port, text("adt_a04.hl7"), text("siu_s12.hl7"), tmp=tmp_path)
    assert [msa(a) for a in acks] == [("AA", "ADT0001"), ("AA", "SIU0001")]

    phones = ["+13125550142", "+13125550143", "+13125550144"]
    patients = view(kafka_bootstrap, ns, "patients")
    assert set(patients) == {topics.join_key(PRACTICE, p) for p in phones}
    record = patients[topics.join_key(PRACTICE, "+13125550142")]
    assert record is not None
    assert (record["patient_id"], record["display_name"], record["language"]) == ("E1001", "Lucia M Rivera", "es")
    appointments = view(kafka_bootstrap, ns, "appointments")
    assert set(appointments) == {f"{PRACTICE}|{p}|A55001".encode() for p in phones}
    booked = appointments[f"{PRACTICE}|+13125550142|A55001".encode()]
    assert booked is not None and booked["status"] == "booked"
    assert booked["start"] == int(datetime.fromisoformat("2026-11-27T09:30:00-06:00").timestamp() * 1000)

    # An update without the home phone: its keys are tombstoned, the rest re-published.
    assert msa(mllp_send(port, text("adt_a08.hl7"), tmp=tmp_path)[0]) == ("AA", "ADT0002")
    patients = view(kafka_bootstrap, ns, "patients")
    assert patients[topics.join_key(PRACTICE, "+13125550142")] is None
    assert patients[topics.join_key(PRACTICE, "+13125550143")] is not None
    appointments = view(kafka_bootstrap, ns, "appointments")
    assert appointments[f"{PRACTICE}|+13125550142|A55001".encode()] is None
    assert appointments[f"{PRACTICE}|+13125550143|A55001".encode()] is not None

    # Cancelled: every key of the appointment tombstoned.
    assert msa(mllp_send(port, text("siu_s15.hl7"), tmp=tmp_path)[0]) == ("AA", "SIU0004")
    assert all(v is None for v in view(kafka_bootstrap, ns, "appointments").values())


def test_malformed_gets_ae_unsupported_gets_ar_each_with_a_dead_letter(
    practices, processes, kafka_bootstrap, service_env, tmp_path
):
    ns = service_env["RINGBACK_NAMESPACE"]
    port = start_listener(processes)
    malformed, unsupported = text("siu_s12_malformed.hl7"), text("adt_a01_unsupported.hl7")
    acks = mllp_send(port, malformed, unsupported, tmp=tmp_path)
    assert [msa(a) for a in acks] == [("AE", "SIU0999"), ("AR", "ADT0099")]
    assert "appointment start" in str(acks[0]["MSA.F3"])
    dead = [codec.decode("dead_letter", r["value"]) for r in read_topic(kafka_bootstrap, f"{ns}.dead-letters")]
    assert [(d["source"], d["practice_id"], d["content_type"]) for d in dead] == [
        ("hl7", PRACTICE, "application/hl7-v2")
    ] * 2
    assert dead[0]["raw"].decode().replace("\r", "\n") == malformed.strip()  # the message as received
    assert dead[0]["reason"].startswith("SIU^S12: ") and dead[1]["reason"].startswith("ADT^A01: ")
    assert count(kafka_bootstrap, ns, "appointments") == 0 and count(kafka_bootstrap, ns, "patients") == 0

    # Sent again: the same answers, no second dead letter. Not HL7 at all: AE as well.
    again = mllp_send(port, malformed, unsupported, tmp=tmp_path)
    assert [msa(a)[0] for a in again] == ["AE", "AR"]
    assert count(kafka_bootstrap, ns, "dead-letters") == 2


def test_the_same_control_id_twice_publishes_once_also_after_a_restart(
    practices, processes, kafka_bootstrap, service_env, tmp_path
):
    ns = service_env["RINGBACK_NAMESPACE"]
    port = start_listener(processes)
    assert [msa(a)[0] for a in mllp_send(port, text("siu_s12.hl7"), text("siu_s13.hl7"), tmp=tmp_path)] == ["AA"] * 2
    before = (count(kafka_bootstrap, ns, "appointments"), count(kafka_bootstrap, ns, "patients"))
    assert before[0] > 0
    assert [msa(a) for a in mllp_send(port, text("siu_s13.hl7"), tmp=tmp_path)] == [("AA", "SIU0002")]
    assert (count(kafka_bootstrap, ns, "appointments"), count(kafka_bootstrap, ns, "patients")) == before

    # The memory is on the broker: a new listener process (and a lost state file) still knows it.
    processes.kill("hl7", signal.SIGTERM)
    shutil.rmtree(Path(service_env["RINGBACK_STATE_DIR"]) / "ehr")
    port = start_listener(processes, "hl7-again")
    assert [msa(a) for a in mllp_send(port, text("siu_s13.hl7"), tmp=tmp_path)] == [("AA", "SIU0002")]
    assert (count(kafka_bootstrap, ns, "appointments"), count(kafka_bootstrap, ns, "patients")) == before
    # A new control id with the same content is a new message.
    assert msa(mllp_send(port, text("siu_s14.hl7"), tmp=tmp_path)[0]) == ("AA", "SIU0003")
    assert count(kafka_bootstrap, ns, "appointments") > before[0]


def test_no_aa_while_the_broker_does_not_acknowledge(processes, service_env, tmp_path):
    """A broker of its own, paused (SIGSTOP) under the listener: the message gets no ACK and
    the connection closes (the engine resends); resent after the broker is back: AA."""
    from ringback.dev.local_kafka import LocalKafka

    broker = LocalKafka(port=free_port(), home=tmp_path / "kafka")
    broker.start()
    try:
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
        applied = processes.run("config", "apply", str(FIXTURE), env=env)
        assert applied.returncode == 0, applied.stderr
        port = start_listener(processes, env=env)
        message = text("siu_s12.hl7").replace("\n", "\r")
        pid = broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            answer = asyncio.run(send_async(port, message, timeout=60))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert answer is None  # closed without an answer
        assert "broker did not acknowledge" in processes.log("hl7")
        answer = asyncio.run(send_async(port, message, timeout=60))
        assert answer is not None and msa(answer) == ("AA", "SIU0001")
        ns = service_env["RINGBACK_NAMESPACE"]
        appointments = view(broker.bootstrap, ns, "appointments")
        assert f"{PRACTICE}|+13125550142|A55001".encode() in appointments
    finally:
        processes.stop_all()
        broker.stop()


async def send_async(port: int, message: str, timeout: float) -> hl7.Message | None:
    """python-hl7's asyncio MLLP client: the ACK, or None when the connection closed without one."""
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    try:
        writer.writemessage(hl7.parse(message))
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readmessage(), timeout)
        except asyncio.IncompleteReadError:
            return None
    finally:
        writer.close()


def test_siu_s13_over_mllp_converts_the_reschedule_case(practices, processes, kafka_bootstrap, service_env, tmp_path):
    ns = service_env["RINGBACK_NAMESPACE"]
    out = Collector(kafka_bootstrap, ns)
    try:
        start_worker(processes, "worker")
        port = start_listener(processes)
        now = datetime.now(UTC)
        phone = "+13125550142"
        booked_at, old_start = now - timedelta(hours=1), now + timedelta(days=2)
        s12 = text("siu_s12.hl7", **{"20261123090000-0600": dtm(booked_at), "20261127093000-0600": dtm(old_start)})
        a04 = text("adt_a04.hl7", **{"20261123083000-0600": dtm(booked_at - timedelta(minutes=5))})
        assert [msa(a)[0] for a in mllp_send(port, a04, s12, tmp=tmp_path)] == ["AA", "AA"]

        feed = Feed(kafka_bootstrap, ns, practice=PRACTICE, did=DID)
        # The worker has read the patient and the appointment before the call comes in (another topic).
        for suffix in ("patients", "appointments"):
            wait_for(
                lambda suffix=suffix: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-streams", f"{ns}.{suffix}"),
                90,
                message=f"the worker read {suffix}",
            )
        missed = feed.voicemail(phone, "Hi, I need to reschedule my appointment on Friday")
        case_id = recipes.case_id(PRACTICE, phone, missed["event_id"])
        sms = out.action(f"{case_id}:reschedule_sms", timeout=90)
        assert sms["recipient"] == phone

        new_start = now + timedelta(days=5)
        s13 = text(
            "siu_s13.hl7",
            **{
                "20261124140000-0600": dtm(datetime.now(UTC)),
                "20261201110000-0600": dtm(new_start),
            },
        )
        assert msa(mllp_send(port, s13, tmp=tmp_path)[0]) == ("AA", "SIU0002")
        final = wait_for(
            lambda: next((o for o in out.outcomes() if o["case_id"] == case_id and o["final"]), None),
            90,
            message="the reschedule case's final outcome",
        )
        assert (final["state"], final["conversion_channel"]) == ("CONVERTED", "reschedule")
    finally:
        out.close()
