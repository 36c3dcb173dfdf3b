"""Gap guard: no input record of a Faust agent is skipped, and no offset is committed past one.

faust-streaming 0.15.3 can drop records of a partition around a rebalance and still
commit past them (docs/sinks.md, "Known limits"). Seen on our broker: the new owner of a
partition was handed offsets 4, 5 while the group's committed offset was 3, and Faust
committed 6 (record 3 lost); a worker that kept a partition was handed offset 5 after 2
(3 and 4 never reached the agent); and a kept partition got nothing at all after a
rebalance although its fetch position had moved to the end of the log. On our
non-compacted, non-transactional input topics consecutive records have consecutive
offsets, so all three are visible to the application:

* **fill** (`begin` / `resolve` / `done`, around each record in the agent loop): per
  assigned partition the guard keeps the next offset it expects. A record above it means
  the records in between were skipped: they are read straight from the broker (a side
  consumer: assign + seek, no group membership, never commits), run through the same
  handler first, in order, and acknowledged to the Faust consumer; then the record
  itself. A record below it was seen before (a rewind): it is handled as usual (the
  handlers are idempotent) and counted. The first record after an assignment is compared
  with the group's committed offset, looked up once.
* **clamp**: Faust's offset commits are capped, per guarded partition, at the next offset
  the guard expects: never past a record the handler has not finished, whatever Faust
  acknowledged on its own. This keeps the committed offset a safe starting point for the
  fill, across workers.
* **watch** (a timer): a partition whose log end is past the next expected offset, with
  that offset unchanged, at two checks in a row while no guarded record is being handled
  and no rebalance runs, was fetched but not handed over (the dropped records were the
  last ones, so no later record shows the hole): the consumer is sent back (`seek`) to
  the next expected offset.
* **rewind** (after Faust's seek to the committed offsets at the end of a rebalance): a
  guarded partition with no committed offset above 0 is sent to offset 0, because
  aiokafka's `seek_to_committed` leaves such a partition where the records Faust dropped
  during table recovery had moved it (see `rewind_uncommitted`).

State is in memory and reset at every revocation and assignment (a generation number
drops the bookkeeping of a record that finishes after a rebalance). Per record the cost
is a dict lookup and a compare before, and one after.

**Compacted topics** (the EHR feed) have legitimate holes: offsets whose records
compaction removed. A hole there is checked against the broker like any gap, but the read
looks ahead (`COMPACTED_LOOKAHEAD` offsets, at most `READ_CHUNK` records) and remembers
which offsets exist past the record that showed the hole, so the next holes are told
apart from skipped records without asking the broker again: one read per few hundred
records, not one per hole. Compaction only removes records, so an offset seen missing
stays missing.

Not covered: ticks (a missed tick is caught up by the next),
`processing_guarantee="exactly_once"` (offsets are committed through transactions, which
the clamp does not see).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, NamedTuple, Protocol

from prometheus_client import Counter

from ringback.config.settings import Settings
from ringback.kafka.connection import Connection, client_config, librdkafka
from ringback.observability import logs

log = logging.getLogger(__name__)

RECOVERED = Counter(
    "ringback_gap_records_recovered_total",
    "Input records the Faust consumer skipped, read from the broker and handled by the gap guard",
    ["app", "topic"],
)
REDELIVERED = Counter(
    "ringback_gap_redeliveries_total",
    "Input records that arrived again below the next expected offset (handled again, idempotent)",
    ["app", "topic"],
)
COMMITS_HELD = Counter(
    "ringback_gap_commits_held_total",
    "Offset commits Faust asked for past records the handler had not finished: held back",
    ["app", "topic"],
)
SEEKS = Counter(
    "ringback_gap_seeks_total",
    "Partitions fetched but not handed to the agent: consumer sent back to the next expected offset",
    ["app", "topic"],
)

READ_CHUNK = 500  # records per broker read while filling a gap
COMPACTED_LOOKAHEAD = 10_000  # offsets past a hole of a compacted topic read in the same request


class GapRecord(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


class GapReader(Protocol):
    """Reads a partition straight from the broker (blocking; called in a thread)."""

    def start_offset(self, topic: str, partition: int) -> int | None:
        """The group's committed offset, else where the group would start (None: at the end)."""

    def read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[GapRecord]:
        """Records with start <= offset < end, in order, at most `limit` (fewer: the range has
        no more; `end` may lie past the end of the log)."""

    def end_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The end offset (next offset to be written) of each partition."""


Handler = Callable[[GapRecord], Awaitable[Any]]
# What an agent does with one record: (topic, partition, key, value).
RecordHandler = Callable[[str, int, bytes | None, bytes | None], Awaitable[Any]]


class GapGuard:
    """Next expected offset per partition of one Faust app's guarded input topics.

    `topics` maps each guarded topic name to its metric label. Partitions are keys
    `(topic, partition)` (Faust's `TP` is such a tuple). An agent's body is
    `await guard.consume(stream, handle)`: per record,

        generation = guard.generation
        if guard.begin(tp, offset):
            await guard.resolve(tp, offset, handle_record, generation)
        await handle(...)
        guard.done(tp, offset, generation)
    """

    def __init__(
        self,
        app_name: str,
        topics: Mapping[str, str],
        reader: GapReader,
        enabled: bool = True,
        compacted: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.app_name = app_name
        self.labels = dict(topics)
        self.compacted = frozenset(compacted)
        self.rewind_from_start = True  # the apps' auto.offset.reset is "earliest" (see for_app)
        self.reader = reader
        self.enabled = enabled
        self.generation = 0
        self.busy = 0  # guarded records being handled now (all agents of the app)
        self._next: dict[Hashable, int] = {}
        self._suspects: dict[Hashable, int] = {}  # watch: partition -> next expected at the last check
        # compacted topics: partition -> (from, to, the offsets in [from, to) that exist), learnt
        # from the look-ahead of the last read; any other offset in [from, to) is a compaction hole
        self._present: dict[Hashable, tuple[int, int, list[int]]] = {}
        self._consumer: Any = None  # the Faust consumer (commit clamp, acknowledgements, seeks)
        self._app: Any = None
        self._lock = asyncio.Lock()  # one broker reader: fills of several agents take turns

    # ------------------------------------------------------------------ per record
    async def consume(self, stream: Any, handle: RecordHandler) -> None:
        """An agent's loop over a Faust stream: every record handled once, in offset order per
        partition, the ones Faust skipped around a rebalance first (read back from the broker)."""
        async for event in stream.events():
            message = event.message
            generation = self.generation
            if self.begin(message.tp, message.offset):  # first after a rebalance, a gap, a rewind
                await self.resolve(
                    message.tp,
                    message.offset,
                    lambda r: handle(message.topic, message.partition, r.key, r.value),  # noqa: B023 - awaited in this iteration
                    generation,
                )
            await handle(message.topic, message.partition, event.key, event.value)
            self.done(message.tp, message.offset, generation)

    def begin(self, tp: tuple[str, int], offset: int) -> bool:
        """A record arrives. True when its offset is not the one expected next (first record
        after an assignment, a gap, a rewind): `resolve` must run before it is handled."""
        self.busy += 1
        expected = self._next.get(tp)
        if expected == offset:
            return False
        return self.enabled and (expected is not None or tp[0] in self.labels)

    def done(self, tp: tuple[str, int], offset: int, generation: int) -> None:
        """The record at `offset` was handled (`generation`: read before `begin`)."""
        self.busy -= 1
        expected = self._next.get(tp)
        if expected is not None and offset >= expected and generation == self.generation:
            self._next[tp] = offset + 1

    async def resolve(self, tp: tuple[str, int], offset: int, handle: Handler, generation: int) -> None:
        """Slow path of a record `begin` flagged: learn the start (first record after an
        assignment), handle the skipped records of a gap, or count a rewind."""
        topic, partition = tp[0], tp[1]
        label = self.labels.get(topic, topic)
        expected = self._next.get(tp)
        if expected is None:
            start = await self._call(self.reader.start_offset, topic, partition)
            expected = offset if start is None else start
            if generation != self.generation:
                return
            expected = self._next.setdefault(tp, expected)
        if offset < expected:
            REDELIVERED.labels(self.app_name, label).inc()
            log.info(
                "%s[%d]: offset %d again (next expected %d): handled again, idempotent",
                label,
                partition,
                offset,
                expected,
            )
            return
        if offset == expected:
            return
        compacted = topic in self.compacted
        if compacted and self._only_holes(tp, expected, offset):
            if generation == self.generation:
                self._next[tp] = max(self._next.get(tp, 0), offset)
            return
        if not compacted:
            log.warning(
                "%s[%d]: the consumer skipped offsets %d..%d (got %d): reading them from the broker "
                "and handling them first",
                label,
                partition,
                expected,
                offset - 1,
                offset,
            )
        recovered = 0
        position = expected
        while position < offset:
            end = offset + COMPACTED_LOOKAHEAD if compacted else offset
            batch = await self._call(self.reader.read, topic, partition, position, end, READ_CHUNK)
            if compacted:
                # `offset` exists (it was handed over), so below it what the read did not return is
                # a hole; above it only up to the last record returned (the log may end there).
                covered = max(offset, batch[-1].offset + 1 if batch else offset)
                self._present[tp] = (offset, covered, [r.offset for r in batch if r.offset >= offset])
                batch = [r for r in batch if r.offset < offset]
            if not batch:
                break  # nothing left below `offset`: control records or compaction, not data
            if compacted and recovered == 0:
                log.warning(
                    "%s[%d]: the consumer skipped records between offsets %d and %d: reading them "
                    "from the broker and handling them first",
                    label,
                    partition,
                    expected,
                    offset,
                )
            for record in batch:
                await handle(record)
                recovered += 1
                RECOVERED.labels(self.app_name, label).inc()
                if generation == self.generation:
                    self._next[tp] = max(self._next.get(tp, 0), record.offset + 1)
                    self._ack(topic, partition, record)
            position = batch[-1].offset + 1
        if generation == self.generation:
            self._next[tp] = max(self._next.get(tp, 0), offset)
        if recovered or not compacted:
            log.warning(
                "%s[%d]: %d skipped records handled (offsets %d..%d)", label, partition, recovered, expected, offset - 1
            )

    def _only_holes(self, tp: Hashable, expected: int, offset: int) -> bool:
        """Compacted topic: whether what was read before shows no record in [expected, offset)."""
        known = self._present.get(tp)
        if known is None or not known[0] <= expected < offset <= known[1]:
            return False
        present = known[2]
        i = bisect.bisect_left(present, expected)
        return i == len(present) or present[i] >= offset

    def _ack(self, topic: str, partition: int, record: GapRecord) -> None:
        """Acknowledge a recovered record to the Faust consumer like any record its stream
        handed out: Faust commits only consecutive acknowledged offsets, so without this
        it would not commit past the hole until the next rebalance."""
        if self._consumer is None:
            return
        from faust.types.tuples import Message

        self._consumer.ack(
            Message(topic, partition, record.offset, time.time(), 0, None, record.key, record.value, None)
        )

    async def _call(self, fn: Callable, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        delay = 0.5
        deadline = time.monotonic() + 60
        async with self._lock:
            while True:
                try:
                    return await loop.run_in_executor(None, fn, *args)
                except Exception as exc:
                    if time.monotonic() > deadline:
                        raise
                    log.warning("gap guard: reading from the broker failed, retrying: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5)

    # ------------------------------------------------------------------ rebalances
    def reset(self) -> None:
        """Forget every partition (revocation or assignment): the next record of each
        partition is compared with the group's committed offset again."""
        self.generation += 1
        self._next.clear()
        self._suspects.clear()
        self._present.clear()

    async def on_partitions_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.reset()

    async def on_partitions_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.reset()
        self.install(getattr(sender, "consumer", None))

    def attach(self, app: Any, watch_interval_s: float) -> GapGuard:
        """Follow the app's rebalances and start the watch timer (every `watch_interval_s`
        seconds; 0: none)."""
        self._app = app
        app.on_partitions_revoked.connect(self.on_partitions_revoked)
        app.on_partitions_assigned.connect(self.on_partitions_assigned)
        if self.enabled and watch_interval_s > 0:
            app.timer(interval=watch_interval_s, name=f"gap_guard_watch_{self.app_name}")(self.watch)
        return self

    # ------------------------------------------------------------------ commits
    def clamp(self, offsets: Mapping[Any, int]) -> dict:
        """The offsets Faust may commit: for a guarded partition at most the next offset
        the guard expects (none for a partition it has not seen since the assignment);
        other partitions unchanged."""
        if not self.enabled:
            return dict(offsets)
        allowed: dict = {}
        for tp, offset in offsets.items():
            topic = tp[0]
            if topic not in self.labels:
                allowed[tp] = offset
                continue
            expected = self._next.get(tp)
            if expected is not None and offset <= expected:
                allowed[tp] = offset
                continue
            COMMITS_HELD.labels(self.app_name, self.labels[topic]).inc()
            log.warning(
                "%s[%d]: Faust asked to commit offset %d, the handler has finished only up to %s: held back",
                self.labels[topic],
                tp[1],
                offset,
                "nothing (since the assignment)" if expected is None else expected,
            )
            if expected is not None:
                allowed[tp] = expected
        return allowed

    def install(self, consumer: Any) -> None:
        """Wrap the Faust consumer's `_commit` (faust-streaming 0.15: the call that sends
        offsets to the broker outside transactions) with `clamp`, and its
        `seek_to_committed` with `rewind_uncommitted`. Idempotent."""
        if consumer is None or getattr(consumer, "_ringback_gap_guard", None) is self:
            return
        original_commit = consumer._commit
        original_seek = consumer.seek_to_committed

        async def _commit(offsets: Mapping[Any, int]) -> bool:
            allowed = self.clamp(offsets)
            if not allowed:
                return False
            return await original_commit(allowed)

        async def seek_to_committed() -> Mapping[Any, int | None]:
            committed = await original_seek()
            await self.rewind_uncommitted(consumer, committed)
            return committed

        if self.enabled:
            consumer._commit = _commit
            consumer.seek_to_committed = seek_to_committed
        consumer._ringback_gap_guard = self
        self._consumer = consumer

    async def rewind_uncommitted(self, consumer: Any, committed: Mapping[Any, int | None]) -> None:
        """After a rebalance Faust sends every partition back to its committed offset, so
        that records fetched and dropped while the flow was suspended (table recovery) are
        fetched again. aiokafka skips that seek for a partition with no committed offset (or
        0): its dropped records are never fetched again. Seen in the scaling benchmark: a
        new worker handed offset 52 first, and partitions where nothing was handed at all
        until the watch sent them back. With `auto.offset.reset=earliest` such a partition
        starts at the beginning, so send it there (offset 0; the broker resets an offset
        below the log start to the log start)."""
        if not self.rewind_from_start:
            return
        for tp, offset in committed.items():
            if tp[0] in self.labels and not (offset and offset > 0):
                try:
                    await consumer.seek(tp, 0)
                except Exception as exc:  # noqa: BLE001 - revoked meanwhile: the next assignment seeks again
                    log.warning(
                        "%s[%d]: rewind to the start failed: %s: %s", self.labels[tp[0]], tp[1], type(exc).__name__, exc
                    )

    # ------------------------------------------------------------------ fetched, never handed over
    async def watch(self) -> None:
        """Send the consumer back to the next expected offset of a partition whose log has
        had records past it, with that offset unchanged, at two checks in a row while no
        guarded record was being handled (a timer; see the module docstring). Never raises.

        It asks the broker (the side reader), never the Faust consumer's thread: a
        `consumer.position()` call waits for a valid position and, during a rebalance,
        holds one of the two workers of Faust's consumer thread (recovery stalled)."""
        try:
            await self._watch()
        except Exception:
            log.warning("gap guard: watch failed", exc_info=True)

    def _quiet(self) -> bool:
        app = self._app
        return not self.busy and not getattr(app, "rebalancing", False) and app.flow_control.is_active()

    async def _watch(self) -> None:
        consumer, app = self._consumer, self._app
        if not self.enabled or consumer is None or app is None:
            return
        if not self._quiet():
            self._suspects.clear()
            return
        generation = self.generation
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.labels]
        for tp in assigned:
            if tp not in self._next:
                start = await self._call(self.reader.start_offset, tp.topic, tp.partition)
                if start is not None and generation == self.generation:
                    self._next.setdefault(tp, start)
        ends = await self._call(self.reader.end_offsets, [(tp.topic, tp.partition) for tp in assigned])
        if not self._quiet() or generation != self.generation:
            self._suspects.clear()
            return
        for tp in assigned:
            expected, end = self._next.get(tp), ends.get((tp.topic, tp.partition))
            if expected is None or end is None or end <= expected:
                self._suspects.pop(tp, None)
                continue
            if self._suspects.get(tp) != expected:
                self._suspects[tp] = expected  # first sighting: the records may be on their way
                continue
            label = self.labels[tp.topic]
            SEEKS.labels(self.app_name, label).inc()
            log.warning(
                "%s[%d]: records up to offset %d, nothing handed to the agent since %d: seeking back to %d",
                label,
                tp.partition,
                end - 1,
                expected,
                expected,
            )
            self._suspects.pop(tp, None)
            try:
                await consumer.seek(tp, expected)
            except Exception as exc:  # noqa: BLE001 - revoked meanwhile: the new owner starts at the commit
                log.warning("%s[%d]: seek failed: %s: %s", label, tp.partition, type(exc).__name__, exc)


class KafkaGapReader:
    """`GapReader` over confluent-kafka: one consumer with the app's group id that never
    subscribes (so never joins the group) and never commits."""

    def __init__(
        self,
        bootstrap: Connection,
        group_id: str,
        *,
        auto_offset_reset: str = "earliest",
        isolation_level: str = "read_uncommitted",
        timeout_s: float = 30.0,
    ) -> None:
        self.config: dict[str, Any] = {
            **librdkafka(bootstrap),  # the brokers, TLS and SASL (kafka/connection.py)
            "group.id": group_id,
            "logger": logs.librdkafka_logger(),  # quiet during a broker outage (observability/client_errors.py)
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation_level,
            "enable.partition.eof": False,
        }
        self.auto_offset_reset = auto_offset_reset
        self.timeout_s = timeout_s
        self._consumer: Any = None  # a confluent_kafka Consumer, made at the first read
        self._admin: Any = None  # an AdminClient, made at the first `end_offsets`
        self._admin_config = {**librdkafka(bootstrap), "logger": self.config["logger"]}
        self._lock = threading.Lock()

    def _get(self):
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(self.config)
        return self._consumer

    def start_offset(self, topic: str, partition: int) -> int | None:
        from confluent_kafka import TopicPartition

        with self._lock:
            consumer = self._get()
            tp = TopicPartition(topic, partition)
            committed = self._committed(consumer, tp)
            if committed.error is None and committed.offset >= 0:
                return committed.offset
            if self.auto_offset_reset != "earliest":
                return None
            low, _high = consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
            return low

    def _committed(self, consumer, tp):
        """The group's committed offset; retried while the group coordinator is not ready yet
        (NOT_COORDINATOR and the like, right after a broker or the offsets topic started)."""
        from confluent_kafka import KafkaError, KafkaException

        not_ready = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        }
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return consumer.committed([tp], timeout=self.timeout_s)[0]
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in not_ready) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[GapRecord]:
        from confluent_kafka import TopicPartition

        out: list[GapRecord] = []
        with self._lock:
            consumer = self._get()
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout_s, cached=False
            )
            end = min(end, high)  # a look-ahead past the log end would wait for records never written
            if start >= end:
                return out
            consumer.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + self.timeout_s
            try:
                while len(out) < limit:
                    msg = consumer.poll(0.5)
                    if msg is None or msg.error():
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"could not read {topic}[{partition}] from {start} to {end}")
                        continue
                    if msg.offset() >= end:
                        break
                    if msg.offset() >= start:
                        out.append(GapRecord(msg.offset(), msg.key(), msg.value()))
                    if msg.offset() + 1 >= end:
                        break  # the last offset of the range (there may be no record after it yet)
            finally:
                consumer.unassign()
        return out

    def end_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """One ListOffsets request per partition leader for all of `partitions` (the watch
        asks every few seconds: a consumer's watermark query takes two requests per
        partition, 96 every 5 s for the worker's 6 guarded topics of 8 partitions)."""
        from confluent_kafka import IsolationLevel, TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec

        if not partitions:
            return {}
        with self._lock:
            if self._admin is None:
                self._admin = AdminClient(self._admin_config)
            isolation = (
                IsolationLevel.READ_COMMITTED
                if self.config["isolation.level"] == "read_committed"
                else IsolationLevel.READ_UNCOMMITTED
            )
            asked = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
            futures = self._admin.list_offsets(asked, isolation_level=isolation, request_timeout=self.timeout_s)
            return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            self._admin = None  # an AdminClient has no close(); dropping it stops its threads


def for_app(
    app: Any,
    app_name: str,
    topics: Mapping[str, str],
    settings: Settings,
    compacted: frozenset[str] | set[str] = frozenset(),
) -> GapGuard:
    """A guard for a Faust app: a reader with the app's group id and isolation level, the
    rebalance signals connected, the watch timer started (RINGBACK_GAP_GUARD,
    RINGBACK_GAP_WATCH_S)."""
    conf = app.conf
    isolation = "read_committed" if "exactly_once" in str(conf.processing_guarantee) else "read_uncommitted"
    reader = KafkaGapReader(
        client_config(settings),
        conf.id,
        auto_offset_reset=conf.consumer_auto_offset_reset or "earliest",
        isolation_level=isolation,
    )
    guard = GapGuard(app_name, topics, reader, enabled=settings.ringback_gap_guard, compacted=compacted)
    guard.rewind_from_start = (conf.consumer_auto_offset_reset or "earliest") == "earliest"
    return guard.attach(app, settings.ringback_gap_watch_s)
