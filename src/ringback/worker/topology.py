"""The stream topology, declared in one place: topics, the state table, the agent, the ticks.

`build_topology(app, settings, directory, clock)` declares it on an app from
`worker/app.py: make_app` and returns the `Topology` (the CLI runs the app; tests call
`handle` or look at what was declared). Nothing is declared at import time.

One agent, `process`, reads every co-partitioned input of a partition in one stream:
call events, patients, appointments, flags, task updates, message receipts and
TICKs. One agent (concurrency 1) means the inputs of a caller are handled one at a
time, in log order within each topic, by the worker that owns the partition, and all
its state is one changelog-backed table, `state` (layout: workflow/state.py).

For each input (write-behind, `_Pending`):
  1. the workflow (pure) reads the table through a `Tx` and decides: actions, outcomes,
     state writes; it reads the writes of earlier inputs that are not in the table yet;
  2. actions and outcomes are sent to the partition of the input, without waiting for
     their acknowledgements: the agent goes on with the next input;
  3. once every record of an input is acknowledged, its state writes are applied to the
     table (changelog), in input order per partition; the partition meta, with the
     offsets of the records just sent, is written once after each run of inputs applied
     together (their other writes first); before any input offset is
     committed, every input handled so far is applied and the changelog flushed.
A crash between 2 and 3 leaves records in the log that the state does not know of;
the worker that takes the partition over reads the actions/outcomes partition after
the offsets in the meta (`_scan`) and drops those ids when the input is processed
again, so nothing is emitted twice; a crash before 3 loses nothing, as the offsets of
those inputs are not committed and they are processed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from confluent_kafka import Consumer, TopicPartition
from faust.streams import _current_event, current_event
from prometheus_client import Counter, Gauge, Histogram

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.kafka import gap_guard as gap_guard_module
from ringback.kafka import topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.observability import logs
from ringback.observability import metrics as shared_metrics
from ringback.observability.metrics import child
from ringback.schemas import codec
from ringback.workflow import timers
from ringback.workflow.inputs import Workflow
from ringback.workflow.state import DELETE, Tx
from ringback.workflow.timers import index_entry_pending

log = logging.getLogger(__name__)

# Every input of the agent and the name its records are decoded (and counted) by.
INPUTS: tuple[tuple[topics.TopicSpec, str], ...] = (
    (topics.CALL_EVENTS, "call_event"),
    (topics.PATIENTS, "patient"),
    (topics.APPOINTMENTS, "appointment"),
    (topics.FLAGS, "flag"),
    (topics.TASK_UPDATES, "task_update"),
    (topics.MESSAGE_STATUS, "message_status"),
    (topics.TICKS, "tick"),
)
# Records Faust skips around a rebalance are read from the broker and handled first, and no
# offset is committed past a record not handled yet (kafka/gap_guard.py, docs/stream-app.md).
# Every input but the ticks (a skipped tick is caught up by the next). The compacted EHR
# topics are guarded too: a skipped patient record would make a known patient look new.
GUARDED = (
    topics.CALL_EVENTS,
    topics.TASK_UPDATES,
    topics.MESSAGE_STATUS,
    topics.PATIENTS,
    topics.APPOINTMENTS,
    topics.FLAGS,
)
GUARDED_COMPACTED = (topics.PATIENTS, topics.APPOINTMENTS, topics.FLAGS)
STATE_TABLE = "state"
# Inputs of one partition whose records are not all acknowledged yet: past this many the agent
# waits for the oldest. Bounds memory and how far past the meta's offsets a takeover scans.
MAX_PENDING = 512
OFFSET_FIELDS = ("actions_offset", "outcomes_offset")  # in the partition meta: where a takeover scan starts


# ------------------------------------------------------------------ metrics (no PHI in labels)
INPUTS_TOTAL = Counter("ringback_stream_inputs_total", "Inputs processed by the stream workers", ["input"])
IGNORED = Counter(
    "ringback_stream_ignored_total",
    "Inputs that did nothing, by reason (own/blocked number, duplicate, ...)",
    ["reason"],
)
CASES_OPENED = Counter("ringback_stream_cases_opened_total", "Cases opened, by scenario", ["scenario"])
ACTIONS_EMITTED = Counter("ringback_stream_actions_total", "Action commands emitted", ["kind", "step"])
OUTCOMES_EMITTED = Counter("ringback_stream_outcomes_total", "Case outcome records emitted", ["state", "final"])
TIMERS_FIRED = Counter("ringback_stream_timers_fired_total", "Gate timers fired", ["timer"])
TIMER_LAG = Histogram(
    "ringback_stream_timer_lag_seconds",
    "Gate timer fired this long after its due time",
    ["timer"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 30, 300),
)
NOT_REEMITTED = Counter(
    "ringback_stream_reemissions_dropped_total",
    "Records found already in the log after a takeover and not sent again",
    ["topic"],
)
DEAD_LETTERED = Counter("ringback_stream_dead_letters_total", "Inputs that could not be decoded", ["input"])
TIMERS_CANCELLED = Counter(
    "ringback_stream_timers_cancelled_total",
    "Gate timers dropped unfired because their case closed (answered, converted, ...)",
    ["timer"],
)
TIMERS_OVERDUE = Gauge(
    "ringback_timers_overdue_seconds",
    "How late the oldest due but unfired gate timer of this worker's partitions is "
    "(0 while none is more than RINGBACK_OVERDUE_GRACE_MS late)",
)
PROCESS_SECONDS = Histogram(
    "ringback_stream_process_seconds",
    "Time to process one input, sends included",
    ["input"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)


def encode_value(value: Any) -> bytes:
    """A state record as the table stores it: JSON (what Faust's json codec wrote, so a
    worker reads the state an older one wrote), encoded once per write."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


@dataclass(eq=False)
class _Pending:
    """One input's sent records and its state writes, applied once all are acknowledged."""

    event: Any  # the Faust event of the input: table writes go to its partition
    sent: list[tuple[str, dict, Any]]  # (actions | outcomes, record, future of the acknowledgement)
    writes: dict[str, Any]  # key -> encoded JSON or DELETE, in the order the workflow left them
    fired: list[tuple[str, int]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    applied: bool = False

    def acknowledged(self) -> bool:
        return all(fut.done() for _, _, fut in self.sent)


@contextmanager
def _as_current(event: Any) -> Iterator[None]:
    """Table writes go to the partition of Faust's current event (a context variable): make
    it the input's, not the one being handled now."""
    token = _current_event.set(weakref.ref(event)) if event is not None else None
    try:
        yield
    finally:
        if token is not None:
            _current_event.reset(token)


@dataclass(eq=False)
class _MetaRun:
    """What the partition meta takes from a run of inputs applied together."""

    key: str  # the partition meta's key
    event: Any = None  # the last input's Faust event: the meta goes to its partition
    offsets: dict[str, int] = field(default_factory=dict)  # the highest offsets of their records
    meta: bytes | None = None  # the last meta the workflow wrote (encoded), if any


class Topology:
    """The channels and the state table of the worker on one app, and the agent's body
    (`handle`). Made by `build_topology`, which also starts the agent and the timers."""

    def __init__(self, app: faust.App, settings: Settings, directory: PracticeDirectory, clock: Clock) -> None:
        self.app = app
        self.settings = settings
        self.directory = directory
        self.clock = clock
        self.partitions = topics.partition_count(topics.CALL_EVENTS, settings)
        n = self.partitions
        self.input_names = {topics.topic_name(spec, settings): name for spec, name in INPUTS}
        self.ticks_topic_name = topics.topic_name(topics.TICKS, settings)
        self.actions_topic_name = topics.topic_name(topics.ACTIONS, settings)
        self.outcomes_topic_name = topics.topic_name(topics.OUTCOMES, settings)

        self.inputs = app.topic(
            *self.input_names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=n,
        )
        self.ticks = app.topic(
            self.ticks_topic_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=n,
        )
        self.actions = app.topic(
            self.actions_topic_name, key_type=bytes, value_serializer="avro_action_command", partitions=n
        )
        self.outcomes = app.topic(
            self.outcomes_topic_name, key_type=bytes, value_serializer="avro_outcome", partitions=n
        )
        self.dead_letters = app.topic(
            topics.topic_name(topics.DEAD_LETTERS, settings),
            key_type=bytes,
            value_serializer="avro_dead_letter",
            partitions=1,
        )
        self.state = app.Table(
            STATE_TABLE,
            default=None,
            partitions=n,
            schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
        )
        # Values are stored as JSON bytes we encode (`encode_value`, once per write; every read
        # decodes a fresh object, so no deep copies): the bytes Faust's json codec wrote before.
        # A Faust table takes its store's and changelog's serializers from its value type (json
        # unless a Model says otherwise), not from the schema; set before the store is made.
        self.state.value_serializer = "raw"  # type: ignore[attr-defined]  # on Collection, not in TableT
        # Write-behind (module docstring): per partition the inputs not applied yet, and the
        # latest of their writes per key, which later inputs read instead of the table.
        self._pending: dict[int, deque[_Pending]] = {}
        self._unapplied: dict[int, dict[str, Any]] = {}
        # exactly_once commits offsets in the producer's transaction, which a write-behind
        # would not be part of: there each input waits for its acknowledgements, as before.
        self.write_behind = app.conf.processing_guarantee.value == "at_least_once"
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}".encode()
        # Fault injection for the crash tests only: die like SIGKILL right after the records of
        # this step were acknowledged and before the state that knows of them is written.
        self.exit_after_sending = settings.ringback_fault_exit_after_sending
        # Takeover: per partition, the ids already in the log (see `_scan`).
        self._already_sent: dict[int, tuple[set[str], set[str]]] = {}
        self._scan_consumer: Consumer | None = None
        self.gap_guard: gap_guard_module.GapGuard | None = None  # build_topology attaches it

    @property
    def internal_topics(self) -> list[faust.TopicT]:
        """The topics to create before the app starts (`kafka.admin.ensure_internal_topics`):
        the state table's changelog (co-partitioned with the inputs)."""
        return [self.state.changelog_topic]

    def _read(self, key: str) -> Any:
        """The table's value of `key` (one store lookup; `state.get` makes two: `in`, then `[]`)."""
        try:
            raw = self.state.data[key]
        except KeyError:
            return None
        return None if raw is None else orjson.loads(raw)

    def _reader(self, partition: int):
        """What an input of `partition` reads: the writes of earlier inputs not applied yet,
        else the table."""
        unapplied = self._unapplied.get(partition)
        if not unapplied:
            return self._read
        read = self._read

        def read_latest(key: str) -> Any:
            raw = unapplied.get(key)
            if raw is None:
                return read(key)
            return None if raw is DELETE else orjson.loads(raw)

        return read_latest

    # -------------------------------------------------------------- takeover: what is already in the log
    def _read_ids(
        self, consumer: Consumer, topic: str, partition: int, after: int | None, schema: str, field: str
    ) -> set[str]:
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        start = max(low, high - self.settings.ringback_scan_max_records, (after + 1) if after is not None else 0)
        if start >= high:
            return set()
        consumer.assign([TopicPartition(topic, partition, start)])
        found: set[str] = set()
        position = start
        deadline = time.monotonic() + 30
        while position < high:
            msg = consumer.poll(1.0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic}[{partition}] up to offset {high}")
            if msg is None or msg.error():
                continue
            position = (msg.offset() or 0) + 1  # a consumed message always has an offset
            value = msg.value()
            if value is None:
                continue  # a tombstone carries no id
            try:
                found.add(codec.decode(schema, value)[field])
            except ValueError:
                continue
        consumer.unassign()
        return found

    def _scan(self, partition: int, meta: dict) -> tuple[set[str], set[str]]:
        if self._scan_consumer is None:
            self._scan_consumer = Consumer(
                {
                    **client_config(self.settings),  # the brokers, TLS and SASL
                    "group.id": f"{self.settings.ringback_namespace}.streams-scan",
                    "logger": logs.librdkafka_logger(),  # quiet during a broker outage (observability/client_errors.py)
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
        consumer = self._scan_consumer
        return (
            self._read_ids(
                consumer, self.actions_topic_name, partition, meta.get("actions_offset"), "action_command", "action_id"
            ),
            self._read_ids(
                consumer, self.outcomes_topic_name, partition, meta.get("outcomes_offset"), "outcome", "outcome_id"
            ),
        )

    async def _ensure_scanned(self, partition: int) -> tuple[set[str], set[str]]:
        found = self._already_sent.get(partition)
        if found is None:
            meta = self._read(timers.meta_key(partition)) or {}
            log.info(
                "partition %d taken over: looking for records after offsets %s",
                partition,
                {k: v for k, v in meta.items() if k.endswith("_offset")},
            )
            found = await asyncio.get_running_loop().run_in_executor(None, self._scan, partition, meta)
            if found[0] or found[1]:
                log.warning(
                    "partition %d: %d actions and %d outcomes were sent before a crash without their "
                    "state; they will not be sent again",
                    partition,
                    len(found[0]),
                    len(found[1]),
                )
            self._already_sent[partition] = found
        return found

    async def forget_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """on_partitions_revoked(revoked): what was found in the log of those partitions is stale."""
        (revoked,) = args
        for tp in revoked:
            self._already_sent.pop(tp.partition, None)
            # Faust committed after applying everything handled (`install_commit_flush`); what is
            # left was handled after that commit: not committed, the next owner handles it again.
            self._pending.pop(tp.partition, None)
            self._unapplied.pop(tp.partition, None)

    # -------------------------------------------------------------- the agent's body
    async def _dead_letter(self, input_name: str, reason: str, raw: bytes | None) -> None:
        child(DEAD_LETTERED, input_name).inc()
        child(shared_metrics.DEAD_LETTERS, f"streams.{input_name}").inc()
        log.error("undecodable %s record dead-lettered: %s", input_name, reason)
        await self.dead_letters.send(
            key=f"streams.{input_name}".encode(),
            value={
                "source": f"streams.{input_name}",
                "reason": reason[:500],
                "raw": raw or b"",
                "content_type": f"avro/binary; schema={input_name}",
                "received_at": self.clock.now_ms(),
                "practice_id": None,
            },
        )

    async def handle(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> Workflow:
        """Process one input of `partition` (the agent's body; tests call it too)."""
        input_name = self.input_names[topic]
        started = time.perf_counter()
        found = self._already_sent.get(partition)
        sent_actions, sent_outcomes = found if found is not None else await self._ensure_scanned(partition)
        # 1. Decide (pure): what to send, what to write.
        # Every read decodes a fresh object (no copies needed).
        tx = Tx(self._reader(partition), copy_reads=False)
        wf = Workflow(tx, self.directory, self.clock.now_ms(), partition)
        try:
            _dispatch(wf, input_name, key, value)
        except (codec.SchemaDecodeError, codec.SchemaValidationError) as exc:
            await self._dead_letter(input_name, f"undecodable: {exc}", value)  # keep it, go on
            return wf
        except Exception as exc:
            log.exception("processing a %s input failed; dead-lettered, nothing sent, no state changed", input_name)
            await self._dead_letter(input_name, f"processing failed: {type(exc).__name__}", value)
            return wf
        child(INPUTS_TOTAL, input_name).inc()
        for reason in tx.ignored:
            child(IGNORED, reason).inc()
        for scenario in tx.opened:
            child(CASES_OPENED, scenario).inc()

        # 2. Send, without waiting for the acknowledgements.
        sent: list[tuple[str, dict, Any]] = []
        headers = {"ringback-worker": self.worker_id}
        for key_bytes, command in tx.actions:
            if command["action_id"] in sent_actions:
                child(NOT_REEMITTED, "actions").inc()
                continue
            fut = await self.actions.send(key=key_bytes, value=command, partition=partition, headers=headers)
            sent.append(("actions", command, fut))
        for record in tx.outcomes:
            if record["outcome_id"] in sent_outcomes:
                child(NOT_REEMITTED, "outcomes").inc()
                continue
            fut = await self.outcomes.send(
                key=record["case_id"].encode(), value=record, partition=partition, headers=headers
            )
            sent.append(("outcomes", record, fut))

        # 3. The state, once every record is acknowledged, after the inputs before it.
        queue = self._pending.get(partition)
        if not sent and not tx.writes and not tx.fired and not tx.cancelled and not queue:
            child(PROCESS_SECONDS, input_name).observe(time.perf_counter() - started)
            return wf  # nothing to write (most answered calls)
        writes = {k: v if v is DELETE else encode_value(v) for k, v in tx.writes.items()}
        entry = _Pending(current_event(), sent, writes, tx.fired, tx.cancelled)
        if queue is None:
            queue = self._pending[partition] = deque()
        queue.append(entry)
        if writes:
            self._unapplied.setdefault(partition, {}).update(writes)
        if not self.write_behind or len(queue) > MAX_PENDING:
            await self._apply_through(partition, entry if not self.write_behind else queue[0])
        else:
            self._apply_acknowledged(partition)
        child(PROCESS_SECONDS, input_name).observe(time.perf_counter() - started)
        return wf

    # -------------------------------------------------------------- write-behind
    def _apply_acknowledged(self, partition: int) -> None:
        """Apply the inputs of `partition` whose records are all acknowledged, in order, up to
        the first that is not, and the partition meta once after the last of them: one
        changelog record for the run, not one per input (until it is written, the older meta
        only makes a takeover scan start earlier). Synchronous: nothing else runs between the
        check and the writes."""
        queue = self._pending.get(partition)
        run = _MetaRun(timers.meta_key(partition))
        try:
            while queue and queue[0].acknowledged():
                self._apply(partition, queue[0], run)  # a failed send raises: it and all after it stay unapplied
                queue.popleft()
        finally:
            if run.event is not None:
                self._write_meta(run)

    async def _apply_through(self, partition: int, last: _Pending) -> None:
        """Wait for the acknowledgements of the inputs of `partition` up to `last` and apply them."""
        queue = self._pending.get(partition)
        while not last.applied and queue and queue is self._pending.get(partition):
            waiting = [fut for _, _, fut in queue[0].sent if not fut.done()]
            if waiting:
                await asyncio.wait(waiting)
            self._apply_acknowledged(partition)

    def install_commit_flush(self, consumer: Any) -> None:
        """Wrap the Faust consumer's `_commit` (faust-streaming 0.15: the call that sends
        offsets to the broker outside transactions): first apply every input handled so far and
        flush the producer, so no offset is committed before the state of its input is in the
        changelog. Idempotent; composes with the gap guard's clamp around the same call."""
        if consumer is None or getattr(consumer, "_ringback_write_behind", None) is self:
            return
        inner = consumer._commit
        producer = self.app.producer

        async def _commit(offsets: Any) -> bool:
            await self.flush()
            await producer.flush()
            return await inner(offsets)

        consumer._commit = _commit
        consumer._ringback_write_behind = self

    async def on_partitions_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        if self.write_behind:
            self.install_commit_flush(getattr(sender, "consumer", None))

    async def flush(self) -> None:
        """Apply every input handled so far (before an offset commit: never past an input
        whose state is not in the table)."""
        for partition, queue in list(self._pending.items()):
            if queue:
                await self._apply_through(partition, queue[-1])

    def _apply(self, partition: int, entry: _Pending, run: _MetaRun) -> None:
        """Write `entry`'s state but the partition meta, which `run` collects."""
        offsets = run.offsets
        for kind, record, fut in entry.sent:
            metadata = fut.result()  # a failed send raises here: nothing of it or after it is applied
            offsets[f"{kind}_offset"] = max(offsets.get(f"{kind}_offset", -1), metadata.offset)
            if kind == "actions":
                child(ACTIONS_EMITTED, record["kind"], re.sub(r"_\d+$", "", record["step"])).inc()
            else:
                child(OUTCOMES_EMITTED, record["state"], str(record["final"]).lower()).inc()

        exit_after = self.exit_after_sending
        if exit_after and any(r["step"] == exit_after for k, r, _ in entry.sent if k == "actions"):
            log.warning("fault injection: exiting after sending %s, before writing the state", exit_after)
            os._exit(137)

        with _as_current(entry.event):
            self._write_keys(entry.writes, run.key)
        meta_write = entry.writes.get(run.key)
        if isinstance(meta_write, bytes):
            run.meta = meta_write  # the workflow's latest (it read the earlier inputs' writes)
        run.event = entry.event
        entry.applied = True
        unapplied = self._unapplied.get(partition)
        if unapplied:
            for k, v in entry.writes.items():
                if unapplied.get(k) is v:  # no later input wrote it
                    del unapplied[k]
        for name, lag_ms in entry.fired:
            child(TIMERS_FIRED, name).inc()
            child(TIMER_LAG, name).observe(max(lag_ms, 0) / 1000)
        for name in entry.cancelled:
            child(TIMERS_CANCELLED, name).inc()

    def _write_keys(self, writes: dict[str, Any], meta_key: str) -> None:
        """The writes of one input but the partition meta, in the order the workflow left them."""
        state = self.state
        for k, v in writes.items():
            if k == meta_key:
                continue  # once per run: `_write_meta`
            if v is DELETE:
                if k in state.data:
                    del state[k]
            else:
                state[k] = v

    def _write_meta(self, run: _MetaRun) -> None:
        """The partition meta after a run of inputs: the workflow's own fields (timer cursor) as
        the last of them left them, the offsets the highest so far."""
        if not run.offsets and run.meta is None:
            return
        with _as_current(run.event):
            current = self._read(run.key) or {}
            meta = orjson.loads(run.meta) if run.meta is not None else dict(current)
            for name in OFFSET_FIELDS:
                found = [o for o in (current.get(name), meta.get(name), run.offsets.get(name)) if o is not None]
                if found:
                    meta[name] = max(found)
            self.state[run.key] = encode_value(meta)

    # -------------------------------------------------------------- metrics
    def overdue_ms(self, partitions, now_ms: int) -> int:
        """How late the oldest due but unfired timer of `partitions` is (0: none over the grace)."""
        worst = 0
        read = self._read
        grace_ms = self.settings.ringback_overdue_grace_ms
        for partition in partitions:
            due = timers.oldest_overdue(
                read, partition, now_ms - grace_ms, lambda entry: index_entry_pending(read, entry)
            )
            if due is not None:
                worst = max(worst, now_ms - due)
        return worst


def _split(key: bytes | None, parts: int) -> list[str] | None:
    if not key:
        return None
    fields = key.decode("utf-8", "replace").split("|", parts - 1)
    return fields if len(fields) == parts else None


def _dispatch(wf: Workflow, input_name: str, key: bytes | None, value: bytes | None) -> None:
    if input_name == "tick":
        wf.on_tick()
        return
    record = codec.decode(input_name, value) if value is not None else None
    if input_name == "call_event":
        if record is not None:
            wf.on_call_event(record)
    elif input_name == "patient":
        parts = _split(key, 2)
        if record is not None:
            wf.on_patient(record["practice_id"], record["phone"], record)
        elif parts:
            wf.on_patient(parts[0], parts[1], None)
    elif input_name in ("appointment", "flag"):
        parts = _split(key, 3)
        id_field = "appointment_id" if input_name == "appointment" else "flag_id"
        handler = wf.on_appointment if input_name == "appointment" else wf.on_flag
        if record is not None:
            phone = record.get("phone") or (parts[1] if parts else None)
            if phone:
                handler(record["practice_id"], phone, record[id_field], record)
        elif parts:
            handler(parts[0], parts[1], parts[2], None)
    elif input_name == "task_update":
        parts = _split(key, 2)
        if record is not None and parts:
            wf.on_task_update(parts[1], record)
    elif input_name == "message_status":
        if record is not None:
            wf.on_message_status(record)


def build_topology(app: faust.App, settings: Settings, directory: PracticeDirectory, clock: Clock) -> Topology:
    """Declare the worker on `app`: its topics and state table, the agent `process`, the
    tick and overdue timers, the gap guard and /metrics."""
    t = Topology(app, settings, directory, clock)
    for name in t.input_names.values():
        DEAD_LETTERED.labels(name)  # at 0 from the start, as the shared counter's series below
    shared_metrics.declare_dead_letter_sources(f"streams.{name}" for name in t.input_names.values())
    app.on_partitions_revoked.connect(t.forget_revoked)  # type: ignore[arg-type]  # mode's handler type admits no function
    app.on_partitions_assigned.connect(t.on_partitions_assigned)  # type: ignore[arg-type]  # as above
    gap_guard = t.gap_guard = gap_guard_module.for_app(
        app,
        "streams",
        {topics.topic_name(spec, settings): spec.suffix for spec in GUARDED},
        settings,
        compacted={topics.topic_name(spec, settings) for spec in GUARDED_COMPACTED},
    )

    async def process(stream):
        await gap_guard.consume(stream, t.handle)

    app.agent(t.inputs, name=f"{__name__}.process")(process)

    async def send_ticks() -> None:
        """Every worker ticks the partitions it owns; the owner's agent fires what is due."""
        for tp in app.assignor.assigned_actives():
            if tp.topic == t.ticks_topic_name:
                await t.ticks.send(key=b"tick", value=b"-", partition=tp.partition)

    app.timer(interval=settings.ringback_tick_interval_s, name=f"{__name__}.send_ticks")(send_ticks)

    async def measure_overdue() -> None:
        """`ringback_timers_overdue_seconds`, from the table (reads only; not while recovering,
        when the table is a prefix of itself and no gate can fire anyway)."""
        if app.in_recovery:
            return
        try:
            owned = [tp.partition for tp in app.assignor.assigned_actives() if tp.topic == t.ticks_topic_name]
            TIMERS_OVERDUE.set(t.overdue_ms(owned, clock.now_ms()) / 1000)
        except Exception:
            log.debug("measuring overdue timers failed", exc_info=True)

    app.timer(interval=settings.ringback_overdue_interval_s, name=f"{__name__}.measure_overdue")(measure_overdue)

    # /metrics on the worker's web port: Faust's monitor + everything in the default registry,
    # consumer lag and table sizes (observability/metrics.py).
    shared_metrics.instrument_faust_app(app, "ringback_worker_faust", settings)
    return t
