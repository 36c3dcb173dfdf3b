"""CDR poller for legacy PBXs (`ringback cdr poll DIR --practice ID`).

Follows `Master.csv` (files.py) as the PBX appends to it, turns its lines into canonical
call events (records.py; provider "cdr") or dead letters, and checkpoints how far it has
read in the compacted CDR checkpoint topic (checkpoints.py), so that a restart resumes
where the last acknowledged batch ended, exactly once across crashes. Design notes, the
mapping and what is unverified: docs/sources-cdr-fhir.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from prometheus_client import Counter, Gauge

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import AckedProducer, BrokerUnavailable
from ringback.observability.metrics import DEAD_LETTERS, declare_dead_letter_sources
from ringback.schemas import codec
from ringback.sources.cdr.checkpoints import (
    SCAN_AFTER_MARGIN_MS,
    checkpoint_key,
    checkpoint_record,
    line_header,
    load_checkpoint,
    position_of,
    scan_produced,
)
from ringback.sources.cdr.files import MAX_BATCH_LINES, Position, last_line_end, read_lines
from ringback.sources.cdr.records import DEFAULT_OUTBOUND_CONTEXTS, Context, map_line

log = logging.getLogger(__name__)

DEFAULT_FILE = "Master.csv"
DEAD_LETTER_RAW_MAX = 64 * 1024
# A rotated file whose last line has no newline is taken as complete once it has not
# changed for this long (the PBX writes whole lines; this only guards a write in flight).
MIN_ROTATION_GRACE_S = 2.0
# `source` of the poller's dead letters: also their `ringback_dead_letters_total{source}` label.
DEAD_LETTER_SOURCE = "cdr"

LINES = Counter("ringback_cdr_lines_total", "CDR lines read, by what became of them", ["result"])
EVENTS = Counter("ringback_cdr_events_total", "Call events produced from CDR lines", ["outcome"])
LAG = Gauge("ringback_cdr_unread_bytes", "Bytes of the followed CDR file not yet checkpointed")
CHECKPOINTS = Counter("ringback_cdr_checkpoints_total", "Checkpoint records written", ["kind"])


class Output(NamedTuple):
    """A record one line becomes: a call event, or a dead letter (`outcome` "")."""

    start: int  # the line's offset in its file
    topic: str
    key: bytes
    value: bytes
    headers: dict[str, bytes]
    outcome: str


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
        self.pos = position_of(cp)
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
            self.pos = Position.of(self.path, st.st_ino, start)
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

    async def _process(self, practice: Practice, path: Path, lines: list[tuple[int, bytes]], end: int) -> None:
        """Produce what the lines become, then checkpoint past them (an intent checkpoint first)."""
        assert self.pos is not None
        inode = self.pos.inode
        now = self.clock.now_ms()
        tally: Tally[str] = Tally()
        outputs = self._outputs(practice, lines, inode, now, tally)
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
            await self._produce(outputs, inode, tally)
            self._batches += 1
            if self._kill_after is not None and self._batches >= self._kill_after:
                log.warning(
                    "cdr poller %s: fault injection: SIGKILL before checkpointing batch %d",
                    self.poller_id,
                    self._batches,
                )
                os.kill(os.getpid(), signal.SIGKILL)
        self.pos = Position.of(path, inode, end)
        await self._commit()
        self._pending_since = None
        self._done = {d for d in self._done if d[0] == inode and d[1] >= end}
        _count_lines(tally)
        if tally.get("dead_letter"):
            log.warning(
                "cdr poller %s: %d malformed lines sent to the dead-letter topic", self.poller_id, tally["dead_letter"]
            )

    def _outputs(
        self, practice: Practice, lines: list[tuple[int, bytes]], inode: int, now: int, tally: Tally[str]
    ) -> list[Output]:
        """The records the lines become (lines already on the topics and skipped lines: counted only)."""
        ctx = Context.of(practice, self.directory, self.time_zone, self.outbound_contexts)
        outputs: list[Output] = []
        for start, raw in lines:
            if (inode, start) in self._done:
                tally["already_produced"] += 1
                continue
            mapped = map_line(raw, ctx, now)
            header = line_header(self.poller_id, self.file_name, inode, start)
            if mapped.kind == "event":
                value = codec.encode("call_event", mapped.record)
                outputs.append(Output(start, self.call_topic, mapped.key, value, header, mapped.record["outcome"]))
            elif mapped.kind == "dead":
                record = {
                    "source": DEAD_LETTER_SOURCE,
                    "reason": f"{self.file_name} offset {start}: {mapped.reason}",
                    "raw": raw[:DEAD_LETTER_RAW_MAX],
                    "content_type": "text/csv",
                    "received_at": now,
                    "practice_id": practice.id,
                }
                value = codec.encode("dead_letter", record)
                outputs.append(Output(start, self.dead_topic, DEAD_LETTER_SOURCE.encode(), value, header, ""))
            else:
                tally[f"skipped_{mapped.reason}"] += 1
        return outputs

    async def _produce(self, outputs: list[Output], inode: int, tally: Tally[str]) -> None:
        """Send every output at once; remember the acknowledged ones (a retry skips them) and
        raise BrokerUnavailable when any was not acknowledged."""
        results = await asyncio.gather(
            *(self.producer.send(o.topic, o.key, o.value, headers=o.headers) for o in outputs),
            return_exceptions=True,
        )
        failed = None
        for output, result in zip(outputs, results, strict=True):
            if isinstance(result, BaseException):
                failed = failed or result
                continue
            self._done.add((inode, output.start))
            if output.topic == self.call_topic:
                tally["event"] += 1
                EVENTS.labels(output.outcome).inc()
            else:
                tally["dead_letter"] += 1
                DEAD_LETTERS.labels(DEAD_LETTER_SOURCE).inc()  # once acknowledged, as every process
        if failed is not None:
            _count_lines(tally)
            raise failed if isinstance(failed, BrokerUnavailable) else BrokerUnavailable(str(failed))

    async def _commit(self, pending: dict | None = None) -> None:
        assert self.pos is not None
        value = checkpoint_record(self.poller_id, self.file_name, self.pos, pending, self.clock.now_ms())
        await self.producer.send(self.checkpoint_topic, self._key, value, partition=0)
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


def _count_lines(tally: Tally[str]) -> None:
    for result, n in tally.items():
        LINES.labels(result).inc(n)


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
    admin.ensure_topics(env, topics.CDR)  # and its principal may read and write what it does
    directory = PracticeDirectory().followed_to_end(env)
    try:
        directory.require(practice_id)
    except LookupError:
        directory.close()
        raise
    producer = AckedProducer(client_config(env))
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
