"""CDR poller: parsing Master.csv lines, mapping them to call events, following the file
(truncated last line, rotation, restart from a checkpoint, a partly acknowledged batch,
recovery after a crash). No broker: a recording producer stands in for AckedProducer."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ringback.clock import ManualClock
from ringback.config.practices_file import parse_practices
from ringback.config.settings import Settings
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from ringback.sources import cdr

PRACTICES = parse_practices(
    {
        "practices": [
            {
                "id": "maple-family",
                "name": "Maple Family Practice",
                "time_zone": "America/Chicago",
                "phone_numbers": ["(312) 555-0100", "+1 312 555 0101"],
                "sms_from": "+13125550100",
                "booking_link": "https://book.example.org/maple",
            },
            {
                "id": "lakeside-peds",
                "name": "Lakeside Pediatrics",
                "time_zone": "America/New_York",
                "phone_numbers": ["+16175550142"],
                "sms_from": "+16175550142",
                "booking_link": "https://book.example.org/lakeside",
            },
        ]
    }
).practices
DIRECTORY = PracticeDirectory(PRACTICES)
CTX = cdr.Context.of(PRACTICES[0], DIRECTORY)


def line(
    src="4155550123",
    dst="3125550100",
    dcontext="from-trunk",
    clid='"Jane Roe" <4155550123>',
    channel="SIP/trunk-00000001",
    dstchannel="SIP/201-00000002",
    lastapp="Dial",
    lastdata="SIP/201,30",
    start="2026-03-02 09:15:00",
    answer="",
    end="2026-03-02 09:15:30",
    duration="30",
    billsec="0",
    disposition="NO ANSWER",
    amaflags="DOCUMENTATION",
    uniqueid="1772464500.17",
    userfield="",
    extra: tuple[str, ...] = (),
) -> bytes:
    """A line as Asterisk's cdr_csv writes it: text quoted (quotes doubled), numbers bare."""

    def q(v: str) -> str:
        return '"' + v.replace('"', '""') + '"'

    cols = [q(accountcode) for accountcode in [""]] + [
        q(v) for v in (src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end)
    ]
    cols += [duration, billsec, q(disposition), q(amaflags)]
    if uniqueid is not None:
        cols.append(q(uniqueid))
        if userfield is not None:
            cols.append(q(userfield))
    cols += [q(v) for v in extra]
    return ",".join(cols).encode()


# ---------------------------------------------------------------------------------- parsing
def test_parses_a_standard_line_with_quoted_commas_and_doubled_quotes():
    raw = line(lastdata="SIP/201&SIP/202,30,tT", clid='"Roe, Jane" <4155550123>')
    assert b'"""Roe, Jane"" <4155550123>"' in raw  # as cdr_csv writes it
    rec = cdr.parse_line(raw)
    assert rec.lastdata == "SIP/201&SIP/202,30,tT"
    assert rec.clid == '"Roe, Jane" <4155550123>'
    assert rec.disposition == "NO ANSWER"
    assert rec.start == datetime(2026, 3, 2, 9, 15, 0)
    assert rec.answer is None
    assert rec.duration == 30 and rec.billsec == 0
    assert rec.uniqueid == "1772464500.17"


def test_sixteen_columns_without_uniqueid_and_extra_columns_are_read():
    assert cdr.parse_line(line(uniqueid=None)).uniqueid == ""
    assert cdr.parse_line(line(userfield=None)).userfield == ""
    assert cdr.parse_line(line(extra=("1772464500.17", "42"))).uniqueid == "1772464500.17"
    assert cdr.parse_line(line() + b"\r").uniqueid == "1772464500.17"  # CRLF files


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'"","4155550123","3125550100"', "3 columns"),
        (line(start="02/03/2026 09:15"), "start is not"),
        (line(start=""), "start is empty"),
        (line(answer="yesterday"), "answer is not"),
        (line(duration="thirty"), "duration is not an integer"),
        (line(billsec="-4"), "billsec is negative"),
        (line(disposition="RINGING"), "unknown disposition"),
        (line() + b',"' + b"x" * 5, "not CSV"),
        (line(extra=tuple("x" * 10)), "28 columns"),
    ],
)
def test_malformed_lines_say_why(raw, reason):
    with pytest.raises(cdr.MalformedLine, match=reason):
        cdr.parse_line(raw)


def test_malformed_reasons_never_echo_the_numbers():
    with pytest.raises(cdr.MalformedLine) as exc:
        cdr.parse_line(line(src="4155550123", duration="x4155550123"))
    assert "4155550123" not in str(exc.value)


@pytest.mark.parametrize(
    "disposition, lastapp, dstchannel, billsec, expected",
    [
        ("NO ANSWER", "Dial", "SIP/201-1", "0", ("MISSED", "NO_ANSWER")),
        ("BUSY", "Dial", "SIP/201-1", "0", ("MISSED", "BUSY")),
        ("FAILED", "Dial", "", "0", ("MISSED", "FAILED")),
        ("CONGESTION", "Dial", "", "0", ("MISSED", "CONGESTION")),
        ("ANSWERED", "VoiceMail", "", "25", ("VOICEMAIL", "VOICEMAIL")),
        ("ANSWERED", "VoiceMail", "SIP/201-1", "25", ("VOICEMAIL", "VOICEMAIL")),
        ("ANSWERED", "Dial", "SIP/201-1", "95", ("ANSWERED", "ANSWERED")),
        ("ANSWERED", "Dial", "SIP/201-1", "2", ("MISSED", "ANSWERED")),  # hung up on pickup
        ("ANSWERED", "Queue", "", "60", ("MISSED", "ABANDONED")),
        ("ANSWERED", "BackGround", "", "12", None),  # an IVR menu answered, nobody reached
        ("ANSWERED", "Playback", "", "5", None),
    ],
)
def test_outcome_of_a_call_leg(disposition, lastapp, dstchannel, billsec, expected):
    rec = cdr.parse_line(line(disposition=disposition, lastapp=lastapp, dstchannel=dstchannel, billsec=billsec))
    assert cdr.classify(rec) == expected


# ---------------------------------------------------------------------------------- mapping
def test_missed_inbound_call_becomes_a_call_event_keyed_by_practice_and_caller():
    mapped = cdr.map_line(line(), CTX, received_ms=1_772_464_600_000)
    assert mapped.kind == "event"
    assert mapped.key == b"maple-family|+14155550123"
    ev = mapped.record
    assert ev["event_id"] == "cdr:1772464500.17:NO_ANSWER"
    assert ev["provider"] == "cdr" and ev["event_type"] == "CALL" and ev["outcome"] == "MISSED"
    assert ev["caller"] == "+14155550123" and ev["called"] == "+13125550100"
    assert ev["direction"] == "INBOUND" and ev["provider_status"] == "NO ANSWER"
    assert ev["provider_call_id"] == "1772464500.17" and ev["duration_s"] == 30
    # 09:15 in Chicago on 2 March 2026 (CST, UTC-6) is 15:15 UTC.
    assert ev["occurred_at"] == int(datetime(2026, 3, 2, 15, 15, tzinfo=UTC).timestamp() * 1000)
    assert ev["received_at"] == 1_772_464_600_000
    codec.encode("call_event", ev)  # valid against the schema


def test_pbx_local_time_follows_daylight_saving():
    summer = cdr.map_line(line(start="2026-07-01 09:15:00"), CTX, 0).record
    assert summer["occurred_at"] == int(datetime(2026, 7, 1, 14, 15, tzinfo=UTC).timestamp() * 1000)
    utc_ctx = cdr.Context.of(PRACTICES[0], DIRECTORY, time_zone="UTC")
    assert cdr.map_line(line(start="2026-07-01 09:15:00"), utc_ctx, 0).record["occurred_at"] == int(
        datetime(2026, 7, 1, 9, 15, tzinfo=UTC).timestamp() * 1000
    )


def test_voicemail_and_answered_calls_are_ingested_too():
    vm = cdr.map_line(line(disposition="ANSWERED", lastapp="VoiceMail", lastdata="201@default,u"), CTX, 0)
    assert vm.record["outcome"] == "VOICEMAIL" and vm.record["event_id"].endswith(":VOICEMAIL")
    assert vm.record["provider_status"] == "ANSWERED/VoiceMail"
    answered = cdr.map_line(line(disposition="ANSWERED", billsec="80"), CTX, 0)
    assert answered.record["outcome"] == "ANSWERED" and answered.record["event_id"].endswith(":ANSWERED")


def test_called_number_is_the_dialled_did_or_else_the_practice_main_number():
    assert cdr.map_line(line(dst="+1 312 555 0101"), CTX, 0).record["called"] == "+13125550101"
    # FreePBX writes the extension or "s" as dst: the PBX belongs to the practice anyway.
    assert cdr.map_line(line(dst="201"), CTX, 0).record["called"] == "+13125550100"
    assert cdr.map_line(line(dst="s"), CTX, 0).record["practice_id"] == "maple-family"
    assert cdr.map_line(line(dst="8005550199"), CTX, 0).record["called"] == "+13125550100"


def test_a_did_of_another_practice_is_dead_lettered_not_misattributed():
    mapped = cdr.map_line(line(dst="6175550142"), CTX, 0)
    assert mapped.kind == "dead" and "lakeside-peds" in mapped.reason


def test_caller_comes_from_clid_when_src_is_empty():
    mapped = cdr.map_line(line(src="", clid='"Jane Roe" <+1 (415) 555-0199>'), CTX, 0)
    assert mapped.record["caller"] == "+14155550199"


@pytest.mark.parametrize(
    "over, reason",
    [
        ({"src": "201", "clid": '"Front desk" <201>'}, "no_external_caller"),  # extension to extension
        ({"src": "", "clid": "anonymous"}, "no_external_caller"),
        ({"src": "5550123", "clid": ""}, "no_external_caller"),  # 7 digits: no area code, cannot be texted
        ({"dcontext": "from-internal", "dst": "4155550999"}, "outbound_not_answered"),
        (
            {"dcontext": "outrt-1", "disposition": "ANSWERED", "billsec": "40", "dst": "201"},
            "outbound_not_to_an_outside_number",
        ),
        ({"src": "201", "clid": "", "dst": "4155550123", "dcontext": "custom-out"}, "outbound_not_answered"),
        ({"src": "3125550101"}, "caller_is_practice"),
        ({"disposition": "ANSWERED", "lastapp": "BackGround", "dstchannel": ""}, "answered_by_pbx"),
    ],
)
def test_lines_that_are_not_inbound_calls_from_a_reachable_number_are_skipped(over, reason):
    mapped = cdr.map_line(line(**over), CTX, 0)
    assert (mapped.kind, mapped.reason) == ("skip", reason)


@pytest.mark.parametrize(
    "over",
    [
        {"dcontext": "from-internal", "src": "201", "clid": '"Front desk" <201>'},
        {"dcontext": "outrt-2", "src": "+13125550101"},  # the practice's outbound caller id
        {"dcontext": "macro-dialout-trunk", "src": "201", "clid": ""},
        {"dcontext": "custom-out", "src": "201", "clid": ""},  # an extension dialling out
    ],
)
def test_an_answered_outbound_call_is_the_practice_reaching_the_patient(over):
    mapped = cdr.map_line(line(dst="14155550188", disposition="ANSWERED", billsec="64", **over), CTX, 0)
    ev = mapped.record
    assert (ev["direction"], ev["outcome"], ev["caller"]) == ("OUTBOUND", "ANSWERED", "+14155550188")
    assert ev["called"] == ("+13125550101" if over["src"] == "+13125550101" else "+13125550100")
    assert mapped.key == b"maple-family|+14155550188" and ev["event_id"] == "cdr:1772464500.17:ANSWERED"
    short = cdr.map_line(line(dst="14155550188", disposition="ANSWERED", billsec="3", **over), CTX, 0)
    assert (short.kind, short.reason) == ("skip", "outbound_not_answered")


def test_without_uniqueid_the_event_id_is_a_stable_hash_of_the_line():
    raw = line(uniqueid=None)
    first = cdr.map_line(raw, CTX, 1).record["event_id"]
    assert first == cdr.map_line(raw, CTX, 2).record["event_id"] == cdr.map_line(raw + b"\r", CTX, 3).record["event_id"]
    assert first.startswith("cdr:h") and first.endswith(":NO_ANSWER")
    assert first != cdr.map_line(line(uniqueid=None, start="2026-03-02 09:16:00"), CTX, 1).record["event_id"]


def test_blank_and_malformed_lines():
    assert cdr.map_line(b"", CTX, 0).kind == "skip"
    dead = cdr.map_line(b"this is not a cdr", CTX, 0)
    assert dead.kind == "dead" and "columns" in dead.reason


# ---------------------------------------------------------------------------------- files
def test_read_lines_waits_for_a_truncated_last_line(tmp_path):
    path = tmp_path / "Master.csv"
    a, b = line(uniqueid="1.1"), line(uniqueid="1.2")
    path.write_bytes(a + b"\n" + b[:40])
    lines, end = cdr.read_lines(path, 0)
    assert lines == [(0, a)] and end == len(a) + 1
    assert cdr.read_lines(path, end) == ([], end)  # the half line is not parsed
    with open(path, "ab") as fh:
        fh.write(b[40:] + b"\n")
    assert cdr.read_lines(path, end) == ([(end, b)], end + len(b) + 1)
    # A rotated file nobody writes any more: its unterminated last line is taken as final.
    path.write_bytes(a + b"\n" + b)
    assert cdr.read_lines(path, len(a) + 1, final=True) == ([(len(a) + 1, b)], len(a) + 1 + len(b))


def test_read_lines_respects_the_batch_limit(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(b"".join(line(uniqueid=f"1.{i}") + b"\n" for i in range(10)))
    lines, end = cdr.read_lines(path, 0, max_lines=4)
    assert len(lines) == 4 and end == sum(len(raw) + 1 for _, raw in lines)


def test_last_line_end(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(b"one\ntwo\nthr")
    assert cdr.last_line_end(path, path.stat().st_size) == 8
    path.write_bytes(b"partial")
    assert cdr.last_line_end(path, path.stat().st_size) == 0
    assert cdr.last_line_end(path, 0) == 0


# ---------------------------------------------------------------------------------- the poller
class RecordingProducer:
    """AckedProducer's interface; records what was sent; can refuse some records."""

    timeout_s = 5.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict | None, int | None]] = []
        self.refuse = lambda topic, key, value: False

    async def send(self, topic, key, value, headers=None, partition=None):
        await asyncio.sleep(0)
        if self.refuse(topic, key, value):
            raise BrokerUnavailable("refused by the test")
        self.sent.append((topic, key, value, headers, partition))
        return (partition or 0, len(self.sent))

    def records(self, suffix: str) -> list[tuple[bytes | None, bytes | None, dict | None]]:
        return [(k, v, h) for t, k, v, h, _ in self.sent if t.endswith("." + suffix)]

    def event_ids(self) -> list[str]:
        return [codec.decode("call_event", v)["event_id"] for _, v, _ in self.records("call-events")]

    def checkpoints(self) -> list[dict]:
        return [json.loads(v) for _, v, _ in self.records("cdr-checkpoints")]


ENV = Settings(ringback_namespace="unit", kafka_bootstrap_servers="127.0.0.1:1")


def make_poller(
    folder: Path,
    producer: RecordingProducer,
    checkpoint: dict | None = None,
    scanned: set | None = None,
    clock: ManualClock | None = None,
    **kw,
) -> cdr.CdrPoller:
    calls = {}

    def scan(env, poller_id, file_name, started, until):
        calls["scan"] = (started, until)
        return set(scanned or ())

    poller = cdr.CdrPoller(
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


async def drain(poller: cdr.CdrPoller) -> None:
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
    assert headers[0][cdr.HEADER].decode().startswith(f"maple-family|Master.csv|{path.stat().st_ino}|")


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
        "head": cdr.Position(0, 0).head,
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
    assert started == 1_772_464_000_000 and until == 1_772_464_003_000 + 6_000 + cdr.SCAN_AFTER_MARGIN_MS
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
    clock.advance(cdr.MIN_ROTATION_GRACE_S)
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


async def test_a_replaced_file_with_a_reused_inode_is_not_mistaken_for_the_old_one(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line(uniqueid="1") + b"\n")
    st = path.stat()
    pos = cdr.Position(
        st.st_ino, st.st_size, min(cdr.HEAD_BYTES, st.st_size), cdr.head_digest(path, min(cdr.HEAD_BYTES, st.st_size))
    )
    assert pos.same_file(path, st)
    with open(path, "r+b") as fh:  # same inode, other content: what inode reuse looks like
        fh.write(line(uniqueid="9", src="6505550000"))
    assert not pos.same_file(path, path.stat())


async def test_nothing_is_read_while_the_practice_is_unknown(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(line() + b"\n")
    producer = RecordingProducer()
    poller = cdr.CdrPoller(
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


def test_checkpoint_key_and_topic():
    assert cdr.checkpoint_key("maple-family", "Master.csv") == b"maple-family|Master.csv"
    assert topics.CDR_CHECKPOINTS.compacted and topics.CDR_CHECKPOINTS.partitions == 1
    with pytest.raises(ValueError):
        cdr.CdrPoller(ENV, DIRECTORY, RecordingProducer(), "maple-family", "/tmp", poller_id="a|b")
