"""A CDR poller on a folder of the test's, producing to a RecordingProducer (no broker)."""

from __future__ import annotations

from pathlib import Path

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.sources.cdr import poller as cdr_poller
from tests.sources.cdr.master_csv import DIRECTORY
from tests.sources.recording_producer import RecordingProducer

ENV = Settings(ringback_namespace="unit", kafka_bootstrap_servers="127.0.0.1:1")


def make_poller(
    folder: Path,
    producer: RecordingProducer,
    checkpoint: dict | None = None,
    scanned: set | None = None,
    clock: ManualClock | None = None,
    **kw,
) -> cdr_poller.CdrPoller:
    calls = {}

    def scan(env, poller_id, file_name, started, until):
        calls["scan"] = (started, until)
        return set(scanned or ())

    poller = cdr_poller.CdrPoller(
        ENV,
        DIRECTORY,
        producer,
        "maple-family",
        folder,
        interval=0.2,
        clock=clock or ManualClock(1_772_464_600.0),
        load=lambda env, poller_id, file_name: checkpoint,
        scan=scan,
        **kw,
    )
    poller.scan_calls = calls
    return poller


async def drain(poller: cdr_poller.CdrPoller) -> None:
    while await poller.poll_once():
        pass


async def started_on_empty_file(tmp_path: Path, producer: RecordingProducer | None = None, **poller_args):
    """An empty Master.csv and a poller started and drained on it: (path, producer, poller)."""
    path = tmp_path / "Master.csv"
    path.write_bytes(b"")
    producer = producer or RecordingProducer()
    poller = make_poller(tmp_path, producer, **poller_args)
    await poller.start()
    await drain(poller)
    return path, producer, poller


def append(path: Path, *raws: bytes) -> None:
    with open(path, "ab") as fh:
        for raw in raws:
            fh.write(raw)
