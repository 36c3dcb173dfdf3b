"""The stream topology, declared in one place: topics, the state table, the agent, the ticks.

One agent, `process`, reads every co-partitioned input of a partition in one stream:
call events, patients, appointments, flags, task updates, message receipts and
TICKs. One agent (concurrency 1) means the inputs of a caller are handled one at a
time, in log order within each topic, by the worker that owns the partition, and all
its state is one changelog-backed table, `state` (layout: streams/agents/workflow.py).

For each input:
  1. the workflow (pure) reads the table through a `Tx` and decides: actions, outcomes,
     state writes;
  2. actions and outcomes are sent to the partition of the input and their
     acknowledgements awaited;
  3. only then are the state writes applied to the table (changelog), the last one
     being the partition meta with the offsets of the records just sent.
A crash between 2 and 3 leaves records in the log that the state does not know of;
the worker that takes the partition over reads the actions/outcomes partition after
the offsets in the meta (`_scan`) and drops those ids when the input is processed
again, so nothing is emitted twice; a crash before 2 completes loses nothing, as the
input's offset is not committed and it is processed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from ringback.kafka import gap_guard as gap_guard_module
from ringback.kafka import topics
from ringback.observability import metrics as shared_metrics
from ringback.observability.metrics import child
from ringback.schemas import codec
from ringback.worker.app import app, clock, directory, env
from ringback.workflow import timers
from ringback.workflow.inputs import Workflow
from ringback.workflow.state import DELETE, Tx
from ringback.workflow.timers import index_entry_pending

log = logging.getLogger(__name__)

N = topics.partition_count(topics.CALL_EVENTS, env)
TICK_INTERVAL_S = float(os.environ.get("RINGBACK_TICK_INTERVAL_S", "0.25"))
# At most how many records back a worker taking over a partition reads the actions/outcomes
# partition for records it must not emit again (from the offsets in the partition meta; the
# sinks also write ACTION outcomes, so the range may hold more than ours).
SCAN_MAX_RECORDS = int(os.environ.get("RINGBACK_SCAN_MAX_RECORDS", "50000"))
WORKER_ID = f"{socket.gethostname()}-{os.getpid()}".encode()
# Fault injection for the crash tests only: die like SIGKILL right after the records of this
# step were acknowledged and before the state that knows of them is written (the worst moment).
_EXIT_AFTER_SENDING = os.environ.get("RINGBACK_FAULT_EXIT_AFTER_SENDING")

INPUTS = {
    topics.topic_name(topics.CALL_EVENTS, env): "call_event",
    topics.topic_name(topics.PATIENTS, env): "patient",
    topics.topic_name(topics.APPOINTMENTS, env): "appointment",
    topics.topic_name(topics.FLAGS, env): "flag",
    topics.topic_name(topics.TASK_UPDATES, env): "task_update",
    topics.topic_name(topics.MESSAGE_STATUS, env): "message_status",
    topics.topic_name(topics.TICKS, env): "tick",
}
TICKS_TOPIC = topics.topic_name(topics.TICKS, env)
ACTIONS_TOPIC = topics.topic_name(topics.ACTIONS, env)
OUTCOMES_TOPIC = topics.topic_name(topics.OUTCOMES, env)

inputs = app.topic(
    *INPUTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=N
)
ticks = app.topic(
    TICKS_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=N
)
actions = app.topic(ACTIONS_TOPIC, key_type=bytes, value_serializer="avro_action_command", partitions=N)
outcomes = app.topic(OUTCOMES_TOPIC, key_type=bytes, value_serializer="avro_outcome", partitions=N)
dead_letters = app.topic(
    topics.topic_name(topics.DEAD_LETTERS, env), key_type=bytes, value_serializer="avro_dead_letter", partitions=1
)

state = app.Table(
    "state",
    default=None,
    partitions=N,
    schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
)
_MEMORY_STORE = str(app.conf.store).startswith("memory")


def _read(key: str) -> Any:
    """One store lookup (`state.get` makes two: `in`, then `[]`)."""
    try:
        return state.data[key]
    except KeyError:
        return None


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
for _input in INPUTS.values():
    DEAD_LETTERED.labels(_input)  # at 0 from the start, as the shared counter's series below
shared_metrics.declare_dead_letter_sources(f"streams.{name}" for name in INPUTS.values())
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
OVERDUE_INTERVAL_S = float(os.environ.get("RINGBACK_OVERDUE_INTERVAL_S", "1.0"))
OVERDUE_GRACE_MS = int(os.environ.get("RINGBACK_OVERDUE_GRACE_MS", "1000"))
PROCESS_SECONDS = Histogram(
    "ringback_stream_process_seconds",
    "Time to process one input, sends included",
    ["input"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)


# ------------------------------------------------------------------ takeover: what is already in the log
_already_sent: dict[int, tuple[set[str], set[str]]] = {}
_scan_consumer: Consumer | None = None


def _read_ids(consumer: Consumer, topic: str, partition: int, after: int | None, schema: str, field: str) -> set[str]:
    tp = TopicPartition(topic, partition)
    low, high = consumer.get_watermark_offsets(tp, timeout=10)
    start = max(low, high - SCAN_MAX_RECORDS, (after + 1) if after is not None else 0)
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
        position = msg.offset() + 1
        try:
            found.add(codec.decode(schema, msg.value())[field])
        except ValueError:
            continue
    consumer.unassign()
    return found


def _scan(partition: int, meta: dict) -> tuple[set[str], set[str]]:
    global _scan_consumer
    if _scan_consumer is None:
        _scan_consumer = Consumer(
            {
                "bootstrap.servers": env.kafka_bootstrap_servers,
                "group.id": f"{env.ringback_namespace}.streams-scan",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    return (
        _read_ids(_scan_consumer, ACTIONS_TOPIC, partition, meta.get("actions_offset"), "action_command", "action_id"),
        _read_ids(_scan_consumer, OUTCOMES_TOPIC, partition, meta.get("outcomes_offset"), "outcome", "outcome_id"),
    )


async def _ensure_scanned(partition: int) -> tuple[set[str], set[str]]:
    found = _already_sent.get(partition)
    if found is None:
        meta = state.get(timers.meta_key(partition)) or {}
        log.info(
            "partition %d taken over: looking for records after offsets %s",
            partition,
            {k: v for k, v in meta.items() if k.endswith("_offset")},
        )
        found = await asyncio.get_running_loop().run_in_executor(None, _scan, partition, meta)
        if found[0] or found[1]:
            log.warning(
                "partition %d: %d actions and %d outcomes were sent before a crash without their "
                "state; they will not be sent again",
                partition,
                len(found[0]),
                len(found[1]),
            )
        _already_sent[partition] = found
    return found


@app.on_partitions_revoked.connect
async def _forget_revoked(sender: Any, revoked: set, **kwargs: Any) -> None:
    for tp in revoked:
        _already_sent.pop(tp.partition, None)


# ------------------------------------------------------------------ the agent
def _split(key: bytes | None, parts: int) -> list[str] | None:
    if not key:
        return None
    fields = key.decode("utf-8", "replace").split("|", parts - 1)
    return fields if len(fields) == parts else None


async def _dead_letter(input_name: str, reason: str, raw: bytes | None) -> None:
    child(DEAD_LETTERED, input_name).inc()
    child(shared_metrics.DEAD_LETTERS, f"streams.{input_name}").inc()
    log.error("undecodable %s record dead-lettered: %s", input_name, reason)
    await dead_letters.send(
        key=f"streams.{input_name}".encode(),
        value={
            "source": f"streams.{input_name}",
            "reason": reason[:500],
            "raw": raw or b"",
            "content_type": f"avro/binary; schema={input_name}",
            "received_at": clock.now_ms(),
            "practice_id": None,
        },
    )


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


async def handle(topic: str, partition: int, key: bytes | None, value: bytes | None) -> Workflow:
    """Process one input of `partition` (the agent's body; tests call it too)."""
    input_name = INPUTS[topic]
    started = time.perf_counter()
    sent_actions, sent_outcomes = await _ensure_scanned(partition)
    # 1. Decide (pure): what to send, what to write.
    tx = Tx(_read, copy_reads=_MEMORY_STORE)
    wf = Workflow(tx, directory, clock.now_ms(), partition)
    try:
        _dispatch(wf, input_name, key, value)
    except (codec.SchemaDecodeError, codec.SchemaValidationError) as exc:
        await _dead_letter(input_name, f"undecodable: {exc}", value)  # keep it, go on
        return wf
    except Exception as exc:
        log.exception("processing a %s input failed; dead-lettered, nothing sent, no state changed", input_name)
        await _dead_letter(input_name, f"processing failed: {type(exc).__name__}", value)
        return wf
    child(INPUTS_TOTAL, input_name).inc()
    for reason in tx.ignored:
        child(IGNORED, reason).inc()
    for scenario in tx.opened:
        child(CASES_OPENED, scenario).inc()

    # 2. Send, then wait for every acknowledgement.
    pending = []
    headers = {"ringback-worker": WORKER_ID}
    for key_bytes, command in tx.actions:
        if command["action_id"] in sent_actions:
            child(NOT_REEMITTED, "actions").inc()
            continue
        pending.append(
            ("actions", command, await actions.send(key=key_bytes, value=command, partition=partition, headers=headers))
        )
    for record in tx.outcomes:
        if record["outcome_id"] in sent_outcomes:
            child(NOT_REEMITTED, "outcomes").inc()
            continue
        pending.append(
            (
                "outcomes",
                record,
                await outcomes.send(key=record["case_id"].encode(), value=record, partition=partition, headers=headers),
            )
        )
    offsets: dict[str, int] = {}
    for kind, record, fut in pending:
        metadata = await fut
        offsets[kind] = max(offsets.get(kind, -1), metadata.offset)
        if kind == "actions":
            child(ACTIONS_EMITTED, record["kind"], re.sub(r"_\d+$", "", record["step"])).inc()
        else:
            child(OUTCOMES_EMITTED, record["state"], str(record["final"]).lower()).inc()

    if _EXIT_AFTER_SENDING and any(r["step"] == _EXIT_AFTER_SENDING for k, r, _ in pending if k == "actions"):
        log.warning("fault injection: exiting after sending %s, before writing the state", _EXIT_AFTER_SENDING)
        os._exit(137)

    # 3. The state, in the order the workflow left it, the partition meta last.
    for k, v in tx.writes.items():
        if v is DELETE:
            if _read(k) is not None:
                del state[k]
        else:
            state[k] = v
    if offsets:
        meta_key = timers.meta_key(partition)
        meta = dict(state.get(meta_key) or {})
        if "actions" in offsets:
            meta["actions_offset"] = offsets["actions"]
        if "outcomes" in offsets:
            meta["outcomes_offset"] = offsets["outcomes"]
        state[meta_key] = meta
    for name, lag_ms in tx.fired:
        child(TIMERS_FIRED, name).inc()
        child(TIMER_LAG, name).observe(max(lag_ms, 0) / 1000)
    for name in tx.cancelled:
        child(TIMERS_CANCELLED, name).inc()
    child(PROCESS_SECONDS, input_name).observe(time.perf_counter() - started)
    return wf


# Records Faust skips around a rebalance are read from the broker and handled first, and no
# offset is committed past a record not handled yet (ringback/gap_guard.py, docs/stream-app.md).
# Every input but the ticks (a skipped tick is caught up by the next). The compacted EHR
# topics are guarded too: a skipped patient record would make a known patient look new.
gap_guard = gap_guard_module.for_app(
    app,
    "streams",
    {
        topics.topic_name(spec, env): spec.suffix
        for spec in (
            topics.CALL_EVENTS,
            topics.TASK_UPDATES,
            topics.MESSAGE_STATUS,
            topics.PATIENTS,
            topics.APPOINTMENTS,
            topics.FLAGS,
        )
    },
    compacted={topics.topic_name(spec, env) for spec in (topics.PATIENTS, topics.APPOINTMENTS, topics.FLAGS)},
    enabled=os.environ.get("RINGBACK_GAP_GUARD", "on") != "off",
)


@app.agent(inputs)
async def process(stream):
    async for event in stream.events():
        message = event.message
        generation = gap_guard.generation
        if gap_guard.begin(message.tp, message.offset):  # first after a rebalance, a gap, a rewind
            await gap_guard.resolve(
                message.tp,
                message.offset,
                lambda r: handle(message.topic, message.partition, r.key, r.value),
                generation,
            )
        await handle(message.topic, message.partition, event.key, event.value)
        gap_guard.done(message.tp, message.offset, generation)


# ------------------------------------------------------------------ ticks
@app.timer(interval=TICK_INTERVAL_S)
async def send_ticks() -> None:
    """Every worker ticks the partitions it owns; the owner's agent fires what is due."""
    for tp in app.assignor.assigned_actives():
        if tp.topic == TICKS_TOPIC:
            await ticks.send(key=b"tick", value=b"-", partition=tp.partition)


def ensure_changelog_topic(timeout: float = 30.0) -> None:
    """Create the state table's changelog topic before Faust starts (as the sinks do:
    connectors/sinks/app.py). Faust declares it itself, but on a first start the consumer
    can subscribe before it exists: the first table write then fails with
    PartitionsMismatch until a metadata refresh, minutes later."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": env.kafka_bootstrap_servers})
    metadata = admin.list_topics(timeout=timeout)
    name = state.changelog_topic.get_topic_name()
    if name in metadata.topics:
        return  # its partition count is checked by streams/preflight.py
    replication = 1 if len(metadata.brokers) < 3 else 3
    wanted = NewTopic(name, num_partitions=N, replication_factor=replication, config={"cleanup.policy": "compact"})
    try:
        admin.create_topics([wanted], request_timeout=timeout)[name].result()
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise


# ------------------------------------------------------------------ metrics
def overdue_ms(partitions, now_ms: int) -> int:
    """How late the oldest due but unfired timer of `partitions` is (0: none over the grace)."""
    worst = 0
    for partition in partitions:
        due = timers.oldest_overdue(
            _read, partition, now_ms - OVERDUE_GRACE_MS, lambda entry: index_entry_pending(_read, entry)
        )
        if due is not None:
            worst = max(worst, now_ms - due)
    return worst


@app.timer(interval=OVERDUE_INTERVAL_S)
async def measure_overdue() -> None:
    """`ringback_timers_overdue_seconds`, from the table (reads only; not while recovering,
    when the table is a prefix of itself and no gate can fire anyway)."""
    if app.in_recovery:
        return
    try:
        owned = [tp.partition for tp in app.assignor.assigned_actives() if tp.topic == TICKS_TOPIC]
        TIMERS_OVERDUE.set(overdue_ms(owned, clock.now_ms()) / 1000)
    except Exception:
        log.debug("measuring overdue timers failed", exc_info=True)


# /metrics on the worker's web port: Faust's monitor + everything in the default registry,
# consumer lag and table sizes (ringback/metrics.py).
shared_metrics.instrument_faust_app(app, "ringback_worker_faust")
