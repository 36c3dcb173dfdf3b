"""The CDR poller: following the file (truncated last line, rotation, restart from a checkpoint,
a partly acknowledged batch, recovery after a crash). No broker: a recording producer stands
in for AckedProducer."""

from __future__ import annotations

import os

import pytest

from ringback.clock import ManualClock
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from ringback.sources.cdr import checkpoints, files
from ringback.sources.cdr import poller as cdr_poller
from tests.sources.cdr.harness import ENV, append, drain, make_poller, started_on_empty_file
from tests.sources.cdr.master_csv import DIRECTORY, line
from tests.sources.recording_producer import RecordingProducer


async def test_first_start_reads_from_the_end_then_follows_the_file(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line(uniqueid="old.1") + b"\n" + line(uniqueid="old.2")[:30])  # history + a half line
    producer = RecordingProducer()
    poller = make_poller(tmp_path, producer)
    await poller.start()
    await drain(poller)
    assert producer.event_ids() == []
    assert producer.checkpoints()[-1]["offset"] == len(line(uniqueid="old.1")) + 1  # before the half line
    append(path, line(uniqueid="old.2")[30:] + b"\n", line(uniqueid="new.1") + b"\n")
    await drain(poller)
    assert producer.event_ids() == ["cdr:old.2:NO_ANSWER", "cdr:new.1:NO_ANSWER"]
    # Event records first, then the checkpoint past them; an intent before them.
    kinds = [t.rsplit(".", 1)[1] for t, *_ in producer.sent]
    assert kinds[-4:] == ["cdr-checkpoints", "call-events", "call-events", "cdr-checkpoints"]
    intent, commit = producer.checkpoints()[-2:]
    assert intent["pending"]["end"] == commit["offset"] == path.stat().st_size and commit["pending"] is None
    assert all(p == 0 for t, *_, p in producer.sent if t.endswith("cdr-checkpoints"))
    headers = [h for _, _, h in producer.records("call-events")]
    assert headers[0][checkpoints.HEADER].decode().startswith(f"maple-family|Master.csv|{path.stat().st_ino}|")


async def test_from_beginning_reads_history_and_dead_letters_malformed_lines(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line(uniqueid="a") + b"\nnot,a,cdr\n" + line(src="201", clid="") + b"\n")
    producer = RecordingProducer()
    poller = make_poller(tmp_path, producer, from_beginning=True)
    await poller.start()
    await drain(poller)
    assert producer.event_ids() == ["cdr:a:NO_ANSWER"]
    dead = [codec.decode("dead_letter", v) for _, v, _ in producer.records("dead-letters")]
    assert len(dead) == 1 and dead[0]["raw"] == b"not,a,cdr" and "3 columns" in dead[0]["reason"]
    assert dead[0]["source"] == "cdr" and dead[0]["practice_id"] == "maple-family"


async def test_restart_from_the_checkpoint_neither_re_emits_nor_skips(tmp_path):
    path, first, poller = await started_on_empty_file(tmp_path)
    append(path, line(uniqueid="1") + b"\n", line(uniqueid="2") + b"\n")
    await drain(poller)
    append(path, line(uniqueid="3") + b"\n")  # written while the poller is down
    second = RecordingProducer()
    again = make_poller(tmp_path, second, checkpoint=first.checkpoints()[-1])
    await again.start()
    await drain(again)
    assert first.event_ids() == ["cdr:1:NO_ANSWER", "cdr:2:NO_ANSWER"]
    assert second.event_ids() == ["cdr:3:NO_ANSWER"]
    assert "scan" not in again.scan_calls  # a clean checkpoint: no recovery scan


async def test_a_crash_mid_batch_is_recovered_without_duplicates(tmp_path):
    """The previous run wrote its intent and got some of the batch acknowledged, then died."""
    path = tmp_path / "Master.csv"
    raws = [line(uniqueid=str(i)) for i in range(4)]
    path.write_bytes(b"".join(r + b"\n" for r in raws))
    inode = path.stat().st_ino
    checkpoint = {
        "inode": inode,
        "offset": 0,
        "head_len": 0,
        "head": files.Position(0, 0).head,
        "pending": {
            "start": 0,
            "end": path.stat().st_size,
            "inode": inode,
            "started_at": 1_772_464_000_000,
            "attempt_at": 1_772_464_003_000,
        },
    }
    produced_before = {(inode, 0), (inode, len(raws[0]) + 1)}  # lines 0 and 1 reached the topic
    producer = RecordingProducer()
    poller = make_poller(tmp_path, producer, checkpoint=checkpoint, scanned=produced_before)
    await poller.start()
    await drain(poller)
    assert producer.event_ids() == ["cdr:2:NO_ANSWER", "cdr:3:NO_ANSWER"]
    started, until = poller.scan_calls["scan"]
    assert started == 1_772_464_000_000 and until == 1_772_464_003_000 + 6_000 + checkpoints.SCAN_AFTER_MARGIN_MS
    # The intent of the retried batch keeps the first attempt's start: a second crash still scans it.
    intent = producer.checkpoints()[0]
    assert intent["pending"]["started_at"] == 1_772_464_000_000
    assert producer.checkpoints()[-1]["offset"] == path.stat().st_size


async def test_a_partly_acknowledged_batch_is_retried_for_the_rest_only(tmp_path):
    path, producer, poller = await started_on_empty_file(tmp_path)
    append(path, *(line(uniqueid=str(i), src=f"41555501{i:02d}") + b"\n" for i in range(3)))
    producer.refuse = lambda topic, key, value: key == b"maple-family|+14155550101"
    with pytest.raises(BrokerUnavailable):
        await poller.poll_once()
    assert producer.checkpoints()[-1]["pending"] is not None  # not moved past the batch
    producer.refuse = lambda topic, key, value: False
    await drain(poller)
    assert sorted(producer.event_ids()) == ["cdr:0:NO_ANSWER", "cdr:1:NO_ANSWER", "cdr:2:NO_ANSWER"]
    assert producer.checkpoints()[-1] == {**producer.checkpoints()[-1], "offset": path.stat().st_size, "pending": None}


async def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path):
    clock = ManualClock(1_772_464_600.0)
    path, producer, poller = await started_on_empty_file(tmp_path, clock=clock)
    append(path, line(uniqueid="old-1") + b"\n")
    await drain(poller)
    # logrotate renames; the PBX had one more line (and half of another) in the old file,
    # then opens a new Master.csv.
    append(path, line(uniqueid="old-2") + b"\n", line(uniqueid="old-3")[:50])
    os.rename(path, tmp_path / "Master.csv.1")
    path.write_bytes(line(uniqueid="new-1") + b"\n")
    clock.set(os.stat(tmp_path / "Master.csv.1").st_mtime)  # the rotation just happened
    await drain(poller)
    assert producer.event_ids() == ["cdr:old-1:NO_ANSWER", "cdr:old-2:NO_ANSWER"]  # waits for old-3
    append(tmp_path / "Master.csv.1", line(uniqueid="old-3")[50:] + b"\n")
    await drain(poller)
    assert producer.event_ids()[2:] == ["cdr:old-3:NO_ANSWER", "cdr:new-1:NO_ANSWER"]
    assert producer.checkpoints()[-1]["inode"] == path.stat().st_ino


async def test_rotated_file_with_an_unterminated_last_line_is_finished_after_the_grace(tmp_path):
    clock = ManualClock(1_772_464_600.0)
    path, producer, poller = await started_on_empty_file(tmp_path, clock=clock)
    append(path, line(uniqueid="last"))  # no newline, ever
    os.rename(path, tmp_path / "Master.csv.1")
    path.write_bytes(line(uniqueid="new") + b"\n")
    clock.set(os.stat(tmp_path / "Master.csv.1").st_mtime + 0.5)
    await drain(poller)
    assert producer.event_ids() == []
    clock.advance(cdr_poller.MIN_ROTATION_GRACE_S)
    await drain(poller)
    assert producer.event_ids() == ["cdr:last:NO_ANSWER", "cdr:new:NO_ANSWER"]


async def test_rotation_while_down_is_found_by_inode(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line(uniqueid="1") + b"\n")
    first = RecordingProducer()
    poller = make_poller(tmp_path, first, from_beginning=True)
    await poller.start()
    await drain(poller)
    append(path, line(uniqueid="2") + b"\n")
    os.rename(path, tmp_path / "Master.csv-20260302")
    path.write_bytes(line(uniqueid="3") + b"\n")
    second = RecordingProducer()
    again = make_poller(tmp_path, second, checkpoint=first.checkpoints()[-1])
    await again.start()
    await drain(again)
    assert first.event_ids() + second.event_ids() == ["cdr:1:NO_ANSWER", "cdr:2:NO_ANSWER", "cdr:3:NO_ANSWER"]


async def test_nothing_is_read_while_the_practice_is_unknown(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line() + b"\n")
    producer = RecordingProducer()
    poller = cdr_poller.CdrPoller(
        ENV,
        PracticeDirectory([]),
        producer,
        "maple-family",
        tmp_path,
        load=lambda *a: None,
        scan=lambda *a: set(),
        from_beginning=True,
    )
    await poller.start()
    assert await poller.poll_once() is False
    assert producer.sent == []


def test_a_poller_id_may_not_contain_the_key_separator():
    with pytest.raises(ValueError):
        cdr_poller.CdrPoller(ENV, DIRECTORY, RecordingProducer(), "maple-family", "pbx", poller_id="a|b")
