"""`ringback cdr poll` on the real broker: appended Master.csv lines become call events
within one poll interval; SIGKILLs (one at the worst moment, after a batch was
acknowledged and before its checkpoint, and one from outside mid-stream) plus a
rotation while down lose and duplicate nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from ringback.config.practices_file import parse_practices
from ringback.kafka.topics import join_key, partition_for
from ringback.schemas import codec
from ringback.sources.cdr import records
from tests.conftest import free_port, wait_for
from tests.sources.cdr.master_csv import line
from tests.sources.topic_records import read_topic

pytestmark = pytest.mark.integration

INTERVAL = 0.2
PARTITIONS = 4
PRACTICE = "cedar-clinic"
PRACTICES_YAML = """practices:
  - id: cedar-clinic
    name: Cedar Clinic
    time_zone: America/Denver
    phone_numbers: ["+1 720 555 0100", "+1 720 555 0101"]
    sms_from: "+17205550100"
    booking_link: https://book.example.org/cedar
"""


# The poller's view of the practice, to compute the ids of lines without uniqueid.
CTX = records.Context.of(parse_practices(yaml.safe_load(PRACTICES_YAML)).practices[0])


def events(bootstrap: str, ns: str) -> list[dict]:
    return [{**r, "event": codec.decode("call_event", r["value"])} for r in read_topic(bootstrap, f"{ns}.call-events")]


def dead_letters(bootstrap: str, ns: str) -> list[dict]:
    return [codec.decode("dead_letter", r["value"]) for r in read_topic(bootstrap, f"{ns}.dead-letters")]


def checkpoint(bootstrap: str, ns: str) -> dict | None:
    latest = None
    for r in read_topic(bootstrap, f"{ns}.cdr-checkpoints"):
        if r["key"] == f"{PRACTICE}|Master.csv".encode():
            latest = json.loads(r["value"])
    return latest


def append(path: Path, data: bytes) -> float:
    with open(path, "ab") as fh:
        fh.write(data)
    return time.time()


@pytest.fixture
def pbx(processes, tmp_path):
    practices = tmp_path / "practices.yaml"
    practices.write_text(PRACTICES_YAML)
    applied = processes.run("config", "apply", str(practices))
    assert applied.returncode == 0, applied.stderr
    folder = tmp_path / "cdr-csv"
    folder.mkdir()
    return folder


def log_since(processes, name: str, offset: int) -> str:
    """What process `name` logged in this run (log files of earlier runs are appended to)."""
    path = processes.log_dir / f"{name}.log"
    return processes.log(name)[offset:] if path.exists() else ""


def start_poller(processes, folder: Path, name: str, env: dict | None = None, *args: str):
    path = processes.log_dir / f"{name}.log"
    offset = len(processes.log(name)) if path.exists() else 0
    proc = processes.start(
        name, "cdr", "poll", str(folder), "--practice", PRACTICE, "--interval", str(INTERVAL), *args, env=env
    )
    wait_for(
        lambda: "cdr poller ready" in log_since(processes, name, offset) or proc.poll() is not None,
        60,
        message=f"{name} ready",
    )
    assert proc.poll() is None, log_since(processes, name, offset)
    proc.log_offset = offset
    return proc


def scrape(port: int):
    """The poller's /metrics page, parsed (as tests/observability/test_metrics_scrape.py does)."""
    from tests.observability.test_metrics_scrape import Scrape

    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200, response.status_code
    return Scrape(response.text)


def caller(n: int) -> str:
    return f"303555{n:04d}"


def test_appended_lines_become_events_within_one_poll_interval(pbx, processes, kafka_bootstrap, service_env):
    ns = service_env["RINGBACK_NAMESPACE"]
    master = pbx / "Master.csv"
    master.write_bytes(b"".join(line(src=caller(i), uniqueid=f"old.{i}") + b"\n" for i in range(3)))  # history
    metrics_port = free_port()
    start_poller(processes, pbx, "cdr", None, "--metrics-port", str(metrics_port))
    # The series is there at 0 before any dead letter (so that the first one is an increase()).
    assert {"source": "cdr"} in scrape(metrics_port).series("ringback_dead_letters_total")

    written: dict[str, float] = {}
    for i in range(5):
        written[f"cdr:live.{i}:NO_ANSWER"] = append(
            master, line(src=caller(100 + i), uniqueid=f"live.{i}", dst="7205550101") + b"\n"
        )
        wait_for(
            lambda i=i: f"cdr:live.{i}:NO_ANSWER" in {e["event"]["event_id"] for e in events(kafka_bootstrap, ns)},
            10,
            message=f"event live.{i}",
        )
    # A voicemail, an internal call (skipped), a malformed line, and a line still being written.
    vm = line(src=caller(200), uniqueid="vm.1", disposition="ANSWERED", lastapp="VoiceMail", billsec="20")
    half = line(src=caller(201), uniqueid="half.1", disposition="BUSY")
    written["cdr:vm.1:VOICEMAIL"] = append(
        master, vm + b"\n" + line(src="201", clid="", uniqueid="int.1") + b"\n" + b"garbage,line\n" + half[:57]
    )
    wait_for(
        lambda: "cdr:vm.1:VOICEMAIL" in {e["event"]["event_id"] for e in events(kafka_bootstrap, ns)},
        10,
        message="the voicemail event",
    )
    wait_for(lambda: dead_letters(kafka_bootstrap, ns), 10, message="the dead letter")
    assert "cdr:half.1:BUSY" not in {e["event"]["event_id"] for e in events(kafka_bootstrap, ns)}
    written["cdr:half.1:BUSY"] = append(master, half[57:] + b"\n")
    wait_for(
        lambda: "cdr:half.1:BUSY" in {e["event"]["event_id"] for e in events(kafka_bootstrap, ns)},
        10,
        message="the completed half line",
    )

    got = {e["event"]["event_id"]: e for e in events(kafka_bootstrap, ns)}
    assert set(got) == set(written)  # no history, no internal call
    latencies = sorted(got[eid]["timestamp"] / 1000 - t for eid, t in written.items())
    print(
        f"append → event acknowledged: min {latencies[0] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
        f"(interval {INTERVAL * 1000:.0f} ms)"
    )
    assert latencies[-1] < INTERVAL + 0.5
    first = got["cdr:live.0:NO_ANSWER"]
    key = join_key(PRACTICE, "+13035550100")
    assert first["key"] == key and first["partition"] == partition_for(key, PARTITIONS)
    assert first["event"]["called"] == "+17205550101" and first["event"]["outcome"] == "MISSED"
    assert first["event"]["provider"] == "cdr" and first["event"]["practice_id"] == PRACTICE
    assert got["cdr:vm.1:VOICEMAIL"]["event"]["outcome"] == "VOICEMAIL"
    dead = dead_letters(kafka_bootstrap, ns)
    assert len(dead) == 1 and dead[0]["raw"] == b"garbage,line" and "2 columns" in dead[0]["reason"]
    # The dead letter is counted in the counter every process shares, on the poller's /metrics.
    wait_for(
        lambda: scrape(metrics_port).value("ringback_dead_letters_total", source="cdr") >= 1,
        10,
        message="ringback_dead_letters_total{source=cdr} on the poller's /metrics",
    )
    page = scrape(metrics_port)
    assert page.value("ringback_dead_letters_total", source="cdr") == 1
    assert page.value("ringback_dead_letters_total") == 1  # no other source
    assert page.value("ringback_cdr_lines_total", result="dead_letter") == 1
    cp = checkpoint(kafka_bootstrap, ns)
    assert cp["offset"] == master.stat().st_size and cp["inode"] == master.stat().st_ino and cp["pending"] is None


def test_sigkill_and_rotation_lose_and_duplicate_nothing(pbx, processes, kafka_bootstrap, service_env):
    ns = service_env["RINGBACK_NAMESPACE"]
    master = pbx / "Master.csv"
    master.write_bytes(b"")
    expected: set[str] = set()
    malformed: list[bytes] = []
    counter = iter(range(100_000))

    def lines(count: int) -> bytes:
        out = []
        for _ in range(count):
            n = next(counter)
            if n % 25 == 24:
                raw = f'"","{caller(n)}","broken'.encode() + str(n).encode()
                malformed.append(raw)
            elif n % 10 == 9:
                raw = line(src=caller(n), uniqueid=None, start=f"2026-03-02 10:{n // 60 % 60:02d}:{n % 60:02d}")
                expected.add(records.map_line(raw, CTX, 0).record["event_id"])
            else:
                disposition = ("NO ANSWER", "BUSY", "FAILED")[n % 3]
                raw = line(src=caller(n), uniqueid=f"1772470000.{n}", disposition=disposition)
                expected.add(f"cdr:1772470000.{n}:{disposition.replace(' ', '_')}")
            out.append(raw + b"\n")
        return b"".join(out)

    # 1. The poller dies right after its first batch was acknowledged, before the checkpoint.
    proc = start_poller(processes, pbx, "cdr-1", env={"RINGBACK_CDR_FAULT_KILL_AFTER_BATCHES": "1"})
    append(master, lines(60))
    proc.wait(timeout=30)
    processes.procs.pop("cdr-1")
    assert proc.returncode == -signal.SIGKILL
    assert "fault injection" in log_since(processes, "cdr-1", proc.log_offset)
    assert events(kafka_bootstrap, ns)  # the batch got out ...
    assert checkpoint(kafka_bootstrap, ns)["pending"] is not None  # ... but was not checkpointed

    # 2. While it is down: more lines, the old file rotated away with lines still unread, a new file.
    append(master, lines(20))
    os.rename(master, pbx / "Master.csv.1")
    append(master, lines(20))

    # 3. Restart; a writer keeps appending (lines split over two writes) and the poller is
    #    SIGKILLed from outside mid-stream, then restarted.
    second = start_poller(processes, pbx, "cdr-2")
    done = threading.Event()

    def writer() -> None:
        for _ in range(40):
            chunk = lines(5)
            append(master, chunk[: len(chunk) // 2 + 3])
            time.sleep(0.01)  # pacing the writer, not waiting for a result
            append(master, chunk[len(chunk) // 2 + 3 :])
            time.sleep(0.02)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(events(kafka_bootstrap, ns)) > len(expected) * 0.5, 30, message="half the events")
    processes.kill("cdr-2")
    start_poller(processes, pbx, "cdr-3")
    thread.join(timeout=60)
    assert done.is_set()

    size, inode = master.stat().st_size, master.stat().st_ino
    wait_for(
        lambda: (lambda cp: cp and cp["inode"] == inode and cp["offset"] == size and not cp["pending"])(
            checkpoint(kafka_bootstrap, ns)
        ),
        30,
        message="the poller checkpointed the end of the new file",
    )
    ids = Counter(e["event"]["event_id"] for e in events(kafka_bootstrap, ns))
    duplicated = {k: n for k, n in ids.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} event ids more than once"
    assert set(ids) == expected, f"missing {len(expected - set(ids))}, unexpected {len(set(ids) - expected)}"
    dead = Counter(d["raw"] for d in dead_letters(kafka_bootstrap, ns))
    assert dead == Counter(malformed)
    print(
        f"{len(expected)} events and {len(malformed)} dead letters, each exactly once, across 2 SIGKILLs and a rotation"
    )
    recovered = log_since(processes, "cdr-2", second.log_offset)
    assert "already on the topics and will not be produced again" in recovered
