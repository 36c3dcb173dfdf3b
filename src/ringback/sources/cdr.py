"""CDR poller for legacy PBXs (`ringback cdr poll DIR --practice ID`).

Asterisk / FreePBX `cdr_csv` appends one line per call leg to `Master.csv` (no
header; columns below). This follows that file as it grows, turns inbound calls
into canonical call events (provider "cdr") and checkpoints how far it has read in
the compacted CDR checkpoint topic, so that a restart resumes where the last
acknowledged batch ended. Design notes, the mapping and what is unverified:
docs/sources-cdr-fhir.md.

Exactly-once across crashes, in short: before a batch is produced an *intent*
checkpoint records the byte range being produced; every produced record carries a
header naming its line (`poller|file|inode|offset`); after every record is
acknowledged the checkpoint moves past the batch. A poller that restarts with an
intent pending reads back the few seconds of the call-event and dead-letter topics
in which that batch can have landed and skips the lines it finds there.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import hashlib
import io
import json
import logging
import os
import re
import signal
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Gauge

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.domain.phones import PhoneRejected, normalize, region_of
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import AckedProducer, BrokerUnavailable
from ringback.observability.metrics import DEAD_LETTERS, declare_dead_letter_sources
from ringback.schemas import codec

log = logging.getLogger(__name__)

# cdr_csv's column order (Asterisk `cdr_csv.c`); `uniqueid` and `userfield` are there when
# `loguniqueid` / `loguserfield` are on (the default), later Asterisks may append more.
COLUMNS = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
)
MIN_COLUMNS = 16
MAX_COLUMNS = 24
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# Dispositions Asterisk writes; CONGESTION only with `congestion=yes` in cdr.conf.
MISSED_DISPOSITIONS = {"NO ANSWER", "BUSY", "FAILED", "CONGESTION"}
KNOWN_DISPOSITIONS = MISSED_DISPOSITIONS | {"ANSWERED"}
# Destination contexts of calls placed by the practice (FreePBX names); such lines are not inbound.
DEFAULT_OUTBOUND_CONTEXTS = ("from-internal", "outrt", "outbound", "macro-dialout")
# An answered call this short is a hang-up on the greeting, not a conversation (as for Twilio).
SHORT_ANSWER_S = 5
HEADER = "ringback-cdr-line"
DEFAULT_FILE = "Master.csv"
MAX_READ_BYTES = 4 * 1024 * 1024
MAX_BATCH_LINES = 2000
HEAD_BYTES = 64
DEAD_LETTER_RAW_MAX = 64 * 1024
# A rotated file whose last line has no newline is taken as complete once it has not
# changed for this long (the PBX writes whole lines; this only guards a write in flight).
MIN_ROTATION_GRACE_S = 2.0
# How far around a pending batch's start the recovery scan reads the topics.
SCAN_BEFORE_MS = 5_000
SCAN_AFTER_MARGIN_MS = 10_000
# `source` of the poller's dead letters: also their `ringback_dead_letters_total{source}` label.
DEAD_LETTER_SOURCE = "cdr"

LINES = Counter("ringback_cdr_lines_total", "CDR lines read, by what became of them", ["result"])
EVENTS = Counter("ringback_cdr_events_total", "Call events produced from CDR lines", ["outcome"])
LAG = Gauge("ringback_cdr_unread_bytes", "Bytes of the followed CDR file not yet checkpointed")
CHECKPOINTS = Counter("ringback_cdr_checkpoints_total", "Checkpoint records written", ["kind"])


class MalformedLine(ValueError):
    """A CDR line that cannot be read (dead letter); the message never echoes numbers."""


# ---------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class CdrRecord:
    accountcode: str
    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime  # naive: the PBX's local time (or UTC with `usegmtime`)
    answer: datetime | None
    end: datetime | None
    duration: int
    billsec: int
    disposition: str
    amaflags: str
    uniqueid: str
    userfield: str


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # caller names from old PBXs; never fails


def _time(value: str, column: str, required: bool) -> datetime | None:
    if not value:
        if required:
            raise MalformedLine(f"{column} is empty")
        return None
    if _TIME.fullmatch(value):  # fromisoformat is 20x faster than strptime, but lenient: check first
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise MalformedLine(f"{column} is not a '{TIME_FORMAT}' time")


def _int(value: str, column: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise MalformedLine(f"{column} is not an integer") from None
    if number < 0:
        raise MalformedLine(f"{column} is negative")
    return number


def parse_line(raw: bytes) -> CdrRecord:
    """One `Master.csv` line (without its newline) → CdrRecord, or MalformedLine."""
    text = _decode(raw).rstrip("\r")
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise MalformedLine(f"not CSV: {exc}") from None
    if len(rows) != 1:
        raise MalformedLine("not one CSV row")
    row = rows[0]
    if not MIN_COLUMNS <= len(row) <= MAX_COLUMNS:
        raise MalformedLine(f"{len(row)} columns, expected {MIN_COLUMNS} to {MAX_COLUMNS}")
    row = [c.strip() for c in row] + [""] * (len(COLUMNS) - len(row))
    f = dict(zip(COLUMNS, row))
    disposition = f["disposition"].upper()
    if disposition not in KNOWN_DISPOSITIONS:
        raise MalformedLine("unknown disposition (expected ANSWERED, NO ANSWER, BUSY, FAILED or CONGESTION)")
    return CdrRecord(
        accountcode=f["accountcode"],
        src=f["src"],
        dst=f["dst"],
        dcontext=f["dcontext"],
        clid=f["clid"],
        channel=f["channel"],
        dstchannel=f["dstchannel"],
        lastapp=f["lastapp"],
        lastdata=f["lastdata"],
        start=_time(f["start"], "start", True),
        answer=_time(f["answer"], "answer", False),
        end=_time(f["end"], "end", False),
        duration=_int(f["duration"], "duration"),
        billsec=_int(f["billsec"], "billsec"),
        disposition=disposition,
        amaflags=f["amaflags"],
        uniqueid=f["uniqueid"],
        userfield=f["userfield"],
    )


def classify(rec: CdrRecord) -> tuple[str, str] | None:
    """(outcome, event-id token) of a call leg, or None when the PBX itself answered
    (an IVR menu, an announcement) and nobody was reached: neither missed nor answered."""
    if rec.disposition in MISSED_DISPOSITIONS:
        return "MISSED", rec.disposition.replace(" ", "_")
    app = rec.lastapp.lower()
    if app == "voicemail":
        return "VOICEMAIL", "VOICEMAIL"
    if rec.dstchannel:  # bridged to a phone
        return ("MISSED" if rec.billsec < SHORT_ANSWER_S else "ANSWERED"), "ANSWERED"
    if app == "queue":  # the queue answered, no agent did: the caller gave up waiting
        return "MISSED", "ABANDONED"
    return None


# ---------------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class Context:
    """What a line is read against: the practice the PBX belongs to."""

    practice_id: str
    numbers: frozenset[str]
    main_number: str
    region: str
    tz: ZoneInfo
    owner_of: Callable[[str], str | None]  # E.164 → id of the practice owning that DID
    outbound_contexts: tuple[str, ...] = DEFAULT_OUTBOUND_CONTEXTS

    @classmethod
    def of(
        cls,
        practice: Practice,
        directory: PracticeDirectory | None = None,
        time_zone: str | None = None,
        outbound_contexts: tuple[str, ...] = DEFAULT_OUTBOUND_CONTEXTS,
    ) -> Context:
        def owner(e164: str) -> str | None:
            found = directory.by_number(e164) if directory is not None else None
            return found.id if found else None

        return cls(
            practice_id=practice.id,
            numbers=frozenset(practice.phone_numbers),
            main_number=practice.phone_numbers[0],
            region=region_of(practice.phone_numbers[0]),
            tz=ZoneInfo(time_zone or practice.time_zone),
            owner_of=owner,
            outbound_contexts=tuple(c.lower() for c in outbound_contexts),
        )


@dataclass(frozen=True)
class Mapped:
    kind: str  # "event" | "skip" | "dead"
    reason: str = ""
    key: bytes | None = None
    record: dict | None = None


def line_id(raw: bytes) -> str:
    """A stable id for a line without `uniqueid`: the same bytes give the same id."""
    return "h" + hashlib.sha256(raw.rstrip(b"\r")).hexdigest()[:24]


@functools.lru_cache(maxsize=8192)  # PBX numbers repeat (DIDs, regular callers); parsing is the cost
def _full_number(value: str, region: str) -> str | None:
    try:
        return normalize(value, region)
    except PhoneRejected:
        return None


def _caller(rec: CdrRecord, region: str) -> str | None:
    number = _full_number(rec.src, region) if rec.src else None
    if number is None and "<" in rec.clid and rec.clid.endswith(">"):
        number = _full_number(rec.clid.rsplit("<", 1)[1][:-1], region)
    return number


def _extension(value: str) -> bool:
    return value.isdigit() and len(value) <= 6


def map_line(raw: bytes, ctx: Context, received_ms: int) -> Mapped:
    """A line → a call event (with its key), a reason to skip it, or a reason to dead-letter it.

    Inbound calls from a reachable number become MISSED / VOICEMAIL / ANSWERED events;
    outbound calls that a patient answered become ANSWERED OUTBOUND events (the practice
    reached the patient: that closes a callback), as the webhook adapters do. `caller`
    is always the patient's side."""
    if not raw.strip():
        return Mapped("skip", "blank")
    try:
        rec = parse_line(raw)
    except MalformedLine as exc:
        return Mapped("dead", str(exc))
    caller = _caller(rec, ctx.region)
    dialled = _full_number(rec.dst, ctx.region) if rec.dst else None
    outbound = rec.dcontext.lower().startswith(ctx.outbound_contexts) or (
        caller is None and _extension(rec.src) and dialled is not None and dialled not in ctx.numbers
    )
    if outbound:
        return _outbound(rec, raw, ctx, received_ms, dialled)
    if caller is None:
        # An extension (internal call), "anonymous", or an empty caller id: nobody to call back.
        return Mapped("skip", "no_external_caller")
    if caller in ctx.numbers:
        return Mapped("skip", "caller_is_practice")
    if dialled is not None and dialled not in ctx.numbers:
        owner = ctx.owner_of(dialled)
        if owner is not None and owner != ctx.practice_id:
            return Mapped("dead", f"called number belongs to practice {owner!r}, not {ctx.practice_id!r}")
    called = dialled if dialled in ctx.numbers else ctx.main_number
    decided = classify(rec)
    if decided is None:
        return Mapped("skip", "answered_by_pbx")
    outcome, token = decided
    status = rec.disposition if token != "VOICEMAIL" else f"{rec.disposition}/VoiceMail"
    return _event(rec, raw, ctx, received_ms, outcome, token, status, caller, called, "INBOUND")


def _outbound(rec: CdrRecord, raw: bytes, ctx: Context, received_ms: int, dialled: str | None) -> Mapped:
    if dialled is None or dialled in ctx.numbers:
        return Mapped("skip", "outbound_not_to_an_outside_number")
    if rec.disposition != "ANSWERED" or not rec.dstchannel or rec.billsec < SHORT_ANSWER_S:
        return Mapped("skip", "outbound_not_answered")
    source = _full_number(rec.src, ctx.region) if rec.src else None
    called = source if source in ctx.numbers else ctx.main_number
    return _event(rec, raw, ctx, received_ms, "ANSWERED", "ANSWERED", rec.disposition, dialled, called, "OUTBOUND")


def _event(
    rec: CdrRecord,
    raw: bytes,
    ctx: Context,
    received_ms: int,
    outcome: str,
    token: str,
    status: str,
    caller: str,
    called: str,
    direction: str,
) -> Mapped:
    call_id = rec.uniqueid or line_id(raw)
    occurred = rec.start.replace(tzinfo=ctx.tz)
    record = {
        "event_id": f"cdr:{call_id}:{token}",
        "provider": "cdr",
        "event_type": "CALL",
        "outcome": outcome,
        "provider_status": status,
        "practice_id": ctx.practice_id,
        "caller": caller,
        "called": called,
        "direction": direction,
        "provider_call_id": call_id,
        "occurred_at": int(occurred.timestamp() * 1000),
        "received_at": received_ms,
        "duration_s": min(rec.duration, 2**31 - 1),
        "recording_url": None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
    }
    return Mapped("event", key=topics.join_key(ctx.practice_id, caller), record=record)


# ---------------------------------------------------------------------------------- files
def read_lines(
    path: Path, offset: int, final: bool = False, max_lines: int = MAX_BATCH_LINES, max_bytes: int = MAX_READ_BYTES
) -> tuple[list[tuple[int, bytes]], int]:
    """Complete lines from `offset`: [(line start, bytes without newline)], and the offset
    after the last one. A last line without its newline is left for later, unless `final`
    (a rotated file nobody writes any more) or it alone fills `max_bytes`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(max_bytes)
    lines: list[tuple[int, bytes]] = []
    pos = 0
    while len(lines) < max_lines:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        lines.append((offset + pos, data[pos:nl]))
        pos = nl + 1
    rest = len(data) - pos
    if rest and len(lines) < max_lines and (final or (not lines and rest >= max_bytes)):
        lines.append((offset + pos, data[pos:]))
        pos = len(data)
    return lines, offset + pos


def last_line_end(path: Path, size: int) -> int:
    """The offset after the last newline at or before `size` (where "the end" is, to start from)."""
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        block = 64 * 1024
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            end = start
    return 0


def head_digest(path: Path, length: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read(length)).hexdigest()


@dataclass(frozen=True)
class Position:
    """Where the poller is: a file by inode (plus a digest of its first bytes, because an
    inode number is reused once a file is deleted) and a byte offset in it."""

    inode: int
    offset: int
    head_len: int = 0
    head: str = hashlib.sha1(b"").hexdigest()

    def same_file(self, path: Path, st: os.stat_result) -> bool:
        if st.st_ino != self.inode or st.st_size < self.head_len:
            return False
        try:
            return head_digest(path, self.head_len) == self.head
        except OSError:
            return False


# ---------------------------------------------------------------------------------- checkpoints
def checkpoint_key(poller_id: str, file_name: str) -> bytes:
    return f"{poller_id}|{file_name}".encode()


def load_checkpoint(env: Settings, poller_id: str, file_name: str, timeout: float = 30.0) -> dict | None:
    """The latest checkpoint of this poller and file: the compacted topic read to its end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    name = topics.topic_name(topics.CDR_CHECKPOINTS, env)
    wanted = checkpoint_key(poller_id, file_name)
    consumer = Consumer(
        {
            "bootstrap.servers": env.kafka_bootstrap_servers,
            "group.id": f"{env.ringback_namespace}.cdr-checkpoint-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=timeout)
        if high <= low:
            return None
        consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
        latest: dict | None = None
        position = low
        give_up = time.monotonic() + timeout
        while position < high:
            if time.monotonic() > give_up:
                raise RuntimeError(f"could not read {name} to its end offset {high} within {timeout:.0f}s")
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            position = msg.offset() + 1
            if msg.key() == wanted:
                latest = json.loads(msg.value()) if msg.value() is not None else None
        return latest
    finally:
        consumer.close()


def scan_produced(
    env: Settings, poller_id: str, file_name: str, started_at_ms: int, until_ms: int, timeout: float = 60.0
) -> set[tuple[int, int]]:
    """(inode, offset) of every line of this poller and file that reached the call-event or
    dead-letter topic between `started_at - 5 s` and `until` (record timestamps): the lines of
    a batch that was being produced when the previous run died."""
    from confluent_kafka import Consumer, TopicPartition

    prefix = f"{poller_id}|{file_name}|"
    consumer = Consumer(
        {
            "bootstrap.servers": env.kafka_bootstrap_servers,
            "group.id": f"{env.ringback_namespace}.cdr-recovery-scan",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    found: set[tuple[int, int]] = set()
    try:
        parts = []
        for spec in (topics.CALL_EVENTS, topics.DEAD_LETTERS):
            name = topics.topic_name(spec, env)
            meta = consumer.list_topics(name, timeout=timeout).topics.get(name)
            if meta is None or meta.error is not None:
                continue
            parts += [TopicPartition(name, p, started_at_ms - SCAN_BEFORE_MS) for p in meta.partitions]
        if not parts:
            return found
        starts = consumer.offsets_for_times(parts, timeout=timeout)
        ends = {}
        assign = []
        for tp in starts:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
            if tp.offset < 0 or tp.offset >= high:
                continue  # nothing written at or after the batch start
            ends[(tp.topic, tp.partition)] = high
            assign.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        if not assign:
            return found
        consumer.assign(assign)
        stop_at = until_ms
        give_up = time.monotonic() + timeout
        while ends:
            if time.monotonic() > give_up:
                log.error(
                    "cdr recovery scan stopped after %.0fs with %d partitions unread: lines of the "
                    "interrupted batch not found may be produced a second time (same event ids)",
                    timeout,
                    len(ends),
                )
                break
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            where = (msg.topic(), msg.partition())
            if where not in ends:
                continue
            for k, v in msg.headers() or ():
                if k == HEADER and v is not None:
                    text = v.decode(errors="replace")
                    if text.startswith(prefix):
                        inode, offset = text[len(prefix) :].split("|")
                        found.add((int(inode), int(offset)))
            if msg.offset() + 1 >= ends[where] or msg.timestamp()[1] > stop_at:
                del ends[where]  # later records of this partition are ignored
        return found
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------- poller
class CdrPoller:
    """Follows DIR/FILE (default Master.csv) for one practice; see the module doc."""

    def __init__(
        self,
        env: Settings,
        directory: PracticeDirectory,
        producer: AckedProducer,
        practice_id: str,
        folder: str | Path,
        file_name: str = DEFAULT_FILE,
        poller_id: str | None = None,
        interval: float = 30.0,
        clock: Clock | None = None,
        from_beginning: bool = False,
        time_zone: str | None = None,
        outbound_contexts: tuple[str, ...] = DEFAULT_OUTBOUND_CONTEXTS,
        load: Callable[..., dict | None] = load_checkpoint,
        scan: Callable[..., set[tuple[int, int]]] = scan_produced,
        kill_after_batches: int | None = None,
    ) -> None:
        self.env = env
        self.directory = directory
        self.producer = producer
        self.practice_id = practice_id
        self.folder = Path(folder)
        self.file_name = file_name
        self.path = self.folder / file_name
        self.poller_id = poller_id or practice_id
        if "|" in self.poller_id:
            raise ValueError("poller id may not contain '|'")
        self.interval = interval
        self.clock = clock or Clock()
        self.from_beginning = from_beginning
        self.time_zone = time_zone
        self.outbound_contexts = outbound_contexts
        self.rotation_grace = max(MIN_ROTATION_GRACE_S, 2 * interval)
        self._load = load
        self._scan = scan
        self.pos: Position | None = None
        # Lines already on the topics although not yet checkpointed (a partly sent batch, or
        # found by the recovery scan): never produced again.
        self._done: set[tuple[int, int]] = set()
        # When the first attempt at the batch now pending began (kept across failed attempts and
        # restarts, so that a recovery scan covers every attempt).
        self._pending_since: int | None = None
        self.call_topic = topics.topic_name(topics.CALL_EVENTS, env)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
        self.checkpoint_topic = topics.topic_name(topics.CDR_CHECKPOINTS, env)
        self._key = checkpoint_key(self.poller_id, file_name)
        self._warned_practice = False
        # Fault injection for the crash tests: SIGKILL itself once this many batches were
        # produced and acknowledged, before their checkpoint (the worst moment to die).
        self._kill_after = kill_after_batches
        self._batches = 0
        declare_dead_letter_sources([DEAD_LETTER_SOURCE])

    # -- start and recovery
    async def start(self) -> None:
        cp = await asyncio.to_thread(self._load, self.env, self.poller_id, self.file_name)
        if cp is None:
            log.info("cdr poller %s: no checkpoint for %s", self.poller_id, self.file_name)
            return
        self.pos = Position(
            int(cp["inode"]), int(cp["offset"]), int(cp.get("head_len", 0)), cp.get("head") or Position.head
        )
        pending = cp.get("pending")
        if pending:
            # A send waits at most timeout + 1 s for its acknowledgement: nothing of the batch
            # can have been written later than that after the last attempt began.
            until = (
                int(pending.get("attempt_at", pending["started_at"]))
                + int((self.producer.timeout_s + 1.0) * 1000)
                + SCAN_AFTER_MARGIN_MS
            )
            self._pending_since = int(pending["started_at"])
            self._done = await asyncio.to_thread(
                self._scan, self.env, self.poller_id, self.file_name, self._pending_since, until
            )
            log.info(
                "cdr poller %s: the last run stopped while producing bytes %s-%s; %d of those "
                "lines were already on the topics and will not be produced again",
                self.poller_id,
                pending["start"],
                pending["end"],
                len(self._done),
            )
        log.info(
            "cdr poller %s: resuming %s at inode %s offset %s",
            self.poller_id,
            self.file_name,
            self.pos.inode,
            self.pos.offset,
        )

    def _practice(self) -> Practice | None:
        practice = self.directory.by_id(self.practice_id)
        if practice is None and not self._warned_practice:
            log.error("practice %r is not in the config topic: not reading CDRs until it is", self.practice_id)
            self._warned_practice = True
        elif practice is not None:
            self._warned_practice = False
        return practice

    # -- one poll
    async def poll_once(self) -> bool:
        """Read and publish what is new; True when more is ready at once (batch limit)."""
        practice = self._practice()
        if practice is None:
            return False
        st = _stat(self.path)
        if self.pos is None:
            if st is None:
                return False
            start = 0 if self.from_beginning else last_line_end(self.path, st.st_size)
            self.pos = self._position(self.path, st.st_ino, start)
            await self._commit()
            log.info(
                "cdr poller %s: first start, reading %s from offset %d (%s)",
                self.poller_id,
                self.file_name,
                start,
                "beginning" if self.from_beginning else "its end",
            )
            return True
        if st is not None and self.pos.same_file(self.path, st):
            LAG.set(max(0, st.st_size - self.pos.offset))
            if st.st_size < self.pos.offset:
                log.warning(
                    "cdr poller %s: %s shrank below the checkpoint (truncated in place?); "
                    "reading it again from the start",
                    self.poller_id,
                    self.file_name,
                )
                LINES.labels("file_truncated").inc()
                self.pos = Position(st.st_ino, 0)
                await self._commit()
                return True
            if st.st_size == self.pos.offset:
                return False
            lines, end = read_lines(self.path, self.pos.offset)
            if end == self.pos.offset:
                return False  # only a partial line so far: wait for its newline
            await self._process(practice, self.path, lines, end)
            return len(lines) >= MAX_BATCH_LINES
        # The followed file is no longer at PATH: rotated (renamed), replaced or deleted.
        old = self._find_by_inode()
        if old is not None:
            ost = old.stat()
            quiet = self.clock.now() - ost.st_mtime >= self.rotation_grace
            lines, end = read_lines(old, self.pos.offset, final=quiet)
            if end > self.pos.offset:
                await self._process(practice, old, lines, end)
                return True
            if end < ost.st_size:
                return False  # a last line still being written: wait
            log.info("cdr poller %s: finished the rotated file %s", self.poller_id, old.name)
        else:
            LINES.labels("rotated_file_missing").inc()
            log.warning(
                "cdr poller %s: the file read until offset %d (inode %d) is gone; lines written "
                "to it after that offset, if any, were not read",
                self.poller_id,
                self.pos.offset,
                self.pos.inode,
            )
        if st is None:
            return False  # wait for the PBX to create the new file
        self.pos = Position(st.st_ino, 0)
        await self._commit()
        log.info("cdr poller %s: now following the new %s (inode %d)", self.poller_id, self.file_name, st.st_ino)
        return True

    def _find_by_inode(self) -> Path | None:
        assert self.pos is not None
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return None
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_file(follow_symlinks=False) and self.pos.same_file(Path(entry.path), st):
                return Path(entry.path)
        return None

    def _position(self, path: Path, inode: int, offset: int) -> Position:
        head_len = min(HEAD_BYTES, offset)
        return Position(inode, offset, head_len, head_digest(path, head_len))

    async def _process(self, practice: Practice, path: Path, lines: list[tuple[int, bytes]], end: int) -> None:
        assert self.pos is not None
        inode = self.pos.inode
        ctx = Context.of(practice, self.directory, self.time_zone, self.outbound_contexts)
        now = self.clock.now_ms()
        tally: Tally[str] = Tally()
        outputs: list[tuple[int, str, bytes, bytes, dict, str]] = []
        for start, raw in lines:
            if (inode, start) in self._done:
                tally["already_produced"] += 1
                continue
            mapped = map_line(raw, ctx, now)
            header = {HEADER: f"{self.poller_id}|{self.file_name}|{inode}|{start}".encode()}
            if mapped.kind == "event":
                outputs.append(
                    (
                        start,
                        self.call_topic,
                        mapped.key,
                        codec.encode("call_event", mapped.record),
                        header,
                        mapped.record["outcome"],
                    )
                )
            elif mapped.kind == "dead":
                record = {
                    "source": DEAD_LETTER_SOURCE,
                    "reason": f"{self.file_name} offset {start}: {mapped.reason}",
                    "raw": raw[:DEAD_LETTER_RAW_MAX],
                    "content_type": "text/csv",
                    "received_at": now,
                    "practice_id": practice.id,
                }
                outputs.append(
                    (
                        start,
                        self.dead_topic,
                        DEAD_LETTER_SOURCE.encode(),
                        codec.encode("dead_letter", record),
                        header,
                        "",
                    )
                )
            else:
                tally[f"skipped_{mapped.reason}"] += 1
        if outputs:
            if self._pending_since is None:
                self._pending_since = now
            await self._commit(
                pending={
                    "start": self.pos.offset,
                    "end": end,
                    "inode": inode,
                    "started_at": self._pending_since,
                    "attempt_at": now,
                }
            )
            results = await asyncio.gather(
                *(
                    self.producer.send(topic, key, value, headers=headers)
                    for _, topic, key, value, headers, _ in outputs
                ),
                return_exceptions=True,
            )
            failed = None
            for (start, topic, _, _, _, outcome), result in zip(outputs, results):
                if isinstance(result, BaseException):
                    failed = failed or result
                    continue
                self._done.add((inode, start))
                if topic == self.call_topic:
                    tally["event"] += 1
                    EVENTS.labels(outcome).inc()
                else:
                    tally["dead_letter"] += 1
                    DEAD_LETTERS.labels(DEAD_LETTER_SOURCE).inc()  # once acknowledged, as every process
            if failed is not None:
                for result, n in tally.items():
                    LINES.labels(result).inc(n)
                raise failed if isinstance(failed, BrokerUnavailable) else BrokerUnavailable(str(failed))
            self._batches += 1
            if self._kill_after is not None and self._batches >= self._kill_after:
                log.warning(
                    "cdr poller %s: fault injection: SIGKILL before checkpointing batch %d",
                    self.poller_id,
                    self._batches,
                )
                os.kill(os.getpid(), signal.SIGKILL)
        self.pos = self._position(path, inode, end)
        await self._commit()
        self._pending_since = None
        self._done = {d for d in self._done if d[0] == inode and d[1] >= end}
        for result, n in tally.items():
            LINES.labels(result).inc(n)
        if tally.get("dead_letter"):
            log.warning(
                "cdr poller %s: %d malformed lines sent to the dead-letter topic", self.poller_id, tally["dead_letter"]
            )

    async def _commit(self, pending: dict | None = None) -> None:
        assert self.pos is not None
        value = {
            "poller_id": self.poller_id,
            "file": self.file_name,
            "inode": self.pos.inode,
            "offset": self.pos.offset,
            "head_len": self.pos.head_len,
            "head": self.pos.head,
            "pending": pending,
            "updated_at": self.clock.now_ms(),
        }
        await self.producer.send(self.checkpoint_topic, self._key, json.dumps(value).encode(), partition=0)
        CHECKPOINTS.labels("intent" if pending else "commit").inc()

    # -- the loop
    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        await self.start()
        first = True
        while not stop.is_set():
            more = False
            try:
                more = await self.poll_once()
            except BrokerUnavailable as exc:
                log.warning("cdr poller %s: broker did not acknowledge (%s); retrying the batch", self.poller_id, exc)
            except OSError as exc:
                log.warning("cdr poller %s: cannot read %s: %s", self.poller_id, self.file_name, exc)
            if first and ready:
                ready()  # after the first poll: the position is set, anything appended from now is read
            first = False
            if not more:
                try:
                    await asyncio.wait_for(stop.wait(), self.interval)
                except TimeoutError:
                    pass


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def run(
    env: Settings,
    folder: str,
    practice_id: str,
    interval: float = 30.0,
    file_name: str = DEFAULT_FILE,
    poller_id: str | None = None,
    from_beginning: bool = False,
    time_zone: str | None = None,
    outbound_contexts: tuple[str, ...] = DEFAULT_OUTBOUND_CONTEXTS,
    metrics_port: int | None = None,
) -> None:
    """`ringback cdr poll`: follow the config topic, then poll until SIGTERM/SIGINT."""
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    admin.ensure_topics(env)
    directory = PracticeDirectory().follow(env)
    if not directory.wait_ready(60):
        raise RuntimeError("could not read the practice config topic within 60 s")
    if directory.by_id(practice_id) is None:
        directory.close()
        raise LookupError(f"practice {practice_id!r} is not in the config topic (ringback config apply)")
    producer = AckedProducer(env.kafka_bootstrap_servers)
    poller = CdrPoller(
        env,
        directory,
        producer,
        practice_id,
        folder,
        file_name=file_name,
        poller_id=poller_id,
        interval=interval,
        from_beginning=from_beginning,
        time_zone=time_zone,
        outbound_contexts=outbound_contexts,
        kill_after_batches=env.ringback_cdr_fault_kill_after_batches,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await poller.run(
            stop,
            ready=lambda: log.info(
                "cdr poller ready: %s/%s for practice %s every %.1fs", folder, file_name, practice_id, interval
            ),
        )

    try:
        asyncio.run(main())
    finally:
        producer.close()
        directory.close()
