"""The sink workers (`ringback sinks`): action commands in, effects out.

A separate Faust application (its own consumer group `<namespace>-sinks`) so a slow
API never stalls classification; several sink processes share the partitions.

Topology (every input is keyed `practice_id|caller` and co-partitioned, so the
tables of one caller live in one partition, whichever topic the event came from):

    actions         → carry_out        SMS / Slack / e-mail / task, exactly once
    call-events     → watch_consent    inbound STOP / START from patients
    message-status  → track_delivery   delivery receipts → ACTION outcomes
    task-updates    → track_tasks      claim / complete / reassign
    sinks-ticks     → fire_deferred    a timer's TICK per owned partition: deferred SMS due now
    → outcomes (ACTION records), dead-letters

Tables (changelog-backed, JSON): sent-log, consent, sms-history, deferred; and tasks,
whose changelog is the contract topic `<namespace>.tasks` (Avro `task`, read by the console).
Writes that stand for an effect (the sent-log before and after an API call, a
deferral, a task) are awaited until the broker acknowledged the changelog record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta

import faust
from prometheus_client import Counter

from ringback.config.settings import Settings
from ringback.kafka import gap_guard as gap_guard_module
from ringback.kafka import topics
from ringback.kafka.faust_app import faust_app
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.observability import metrics as shared_metrics
from ringback.schemas import codec
from ringback.schemas.faust_codec import register_faust_codecs
from ringback.sinks.channels import tasks as task_channel
from ringback.sinks.channels.slack import SlackWebhook
from ringback.sinks.channels.twilio_sms import TwilioSms
from ringback.sinks.clock import sink_clock
from ringback.sinks.executor import ActionExecutor, Tables
from ringback.sinks.retry import RetryPolicy

log = logging.getLogger(__name__)
# The twilio library logs every request at INFO, query strings (phone numbers) included.
logging.getLogger("twilio").setLevel(logging.WARNING)

env = Settings()
register_faust_codecs()

TICK_INTERVAL_S = float(os.environ.get("RINGBACK_SINKS_TICK_S", "1.0"))
PERSIST_TIMEOUT_S = float(os.environ.get("RINGBACK_SINKS_PERSIST_TIMEOUT_S", "20"))
UNEXPECTED_RETRIES = 4  # then the record goes to the dead-letter topic with the error

app = faust_app(
    env,
    "sinks",  # shared settings (names, broker, partitions, replication): ringback/faust_app.py
    store=os.environ.get("RINGBACK_SINKS_STORE") or os.environ.get("RINGBACK_STORE") or "rocksdb://",
    processing_guarantee="at_least_once",
    web_enabled=os.environ.get("RINGBACK_SINKS_WEB", "1") == "1",
    web_port=int(os.environ.get("RINGBACK_SINKS_METRICS_PORT", "9102")),
    broker_commit_every=int(os.environ.get("RINGBACK_SINKS_COMMIT_EVERY", "1000")),
    broker_commit_interval=float(os.environ.get("RINGBACK_SINKS_COMMIT_INTERVAL", "1.0")),
    # How soon the group notices a killed worker and hands its partitions on.
    broker_session_timeout=float(os.environ.get("RINGBACK_SINKS_SESSION_TIMEOUT_S", "30")),
    broker_heartbeat_interval=float(os.environ.get("RINGBACK_SINKS_HEARTBEAT_S", "3")),
    table_standby_replicas=int(os.environ.get("RINGBACK_SINKS_STANDBYS", "1")),
)
if app.conf.web_enabled:
    # /metrics: Faust's monitor + the default registry, consumer lag, table sizes (ringback/metrics.py).
    shared_metrics.instrument_faust_app(app, "ringback_sinks_faust")


class DurableTable(faust.Table):
    """A Faust table whose last changelog write can be awaited (broker acknowledged)."""

    _last_changelog = None

    def send_changelog(self, *args, **kwargs):
        fut = super().send_changelog(*args, **kwargs)
        self._last_changelog = fut
        return fut

    async def persist(self, key, value) -> None:
        self._last_changelog = None
        if value is None:
            if key not in self:
                return
            del self[key]
        else:
            self[key] = value
        fut = self._last_changelog
        if fut is not None:
            try:
                await asyncio.wait_for(asyncio.shield(fut), PERSIST_TIMEOUT_S)
            except TimeoutError:
                log.error("table %s: changelog write not acknowledged within %ss", self.name, PERSIST_TIMEOUT_S)
                raise


def _table(name: str, changelog_topic: faust.Topic | None = None) -> DurableTable:
    table = DurableTable(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        partitions=env.ringback_partitions,
        key_type=str,  # JSON both, unless the changelog topic says otherwise
        changelog_topic=changelog_topic,
        help=f"sinks: {name}",
    )
    if changelog_topic is not None:  # the store keeps the changelog's bytes: encode alike
        table.key_serializer = changelog_topic.key_serializer
        table.value_serializer = changelog_topic.value_serializer
    app.tables.add(table)
    return table


sent_log = _table("sent-log")
consent = _table("consent")
sms_history = _table("sms-history")
deferred = _table("deferred")
tasks_table = _table("tasks", task_channel.changelog_topic(app, env))
TABLES = {
    "sent_log": sent_log,
    "consent": consent,
    "sms_history": sms_history,
    "deferred": deferred,
    "tasks": tasks_table,
}


def _input(spec: topics.TopicSpec) -> faust.TopicT:
    # Raw bytes in: we decode, so an undecodable record becomes a dead letter, not a crash.
    return app.topic(
        topics.topic_name(spec, env),
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        partitions=topics.partition_count(spec, env),
    )


actions_topic = _input(topics.ACTIONS)
call_events_topic = _input(topics.CALL_EVENTS)
message_status_topic = _input(topics.MESSAGE_STATUS)
task_updates_topic = _input(topics.TASK_UPDATES)
ticks_topic = app.topic(
    f"{env.ringback_namespace}.sinks-ticks",
    key_type=bytes,
    value_type=bytes,
    value_serializer="raw",
    partitions=env.ringback_partitions,
    internal=True,
    retention=timedelta(hours=1),
    deleting=True,
)
outcomes_topic = app.topic(
    topics.topic_name(topics.OUTCOMES, env),
    key_type=bytes,
    value_serializer="avro_outcome",
    partitions=topics.partition_count(topics.OUTCOMES, env),
)
dead_letters_topic = app.topic(
    topics.topic_name(topics.DEAD_LETTERS, env),
    key_type=bytes,
    value_serializer="avro_dead_letter",
    partitions=topics.partition_count(topics.DEAD_LETTERS, env),
)


def ensure_sink_topics(timeout: float = 30.0) -> None:
    """Create the tables' changelog topics and the ticks topic before Faust starts.
    Faust declares them itself, but on a first start the consumer can subscribe before
    they appear in its metadata: the assignor then skips them and the first table write
    fails with PartitionsMismatch."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": env.kafka_bootstrap_servers})
    existing = admin.list_topics(timeout=timeout).topics
    replication = 1 if len(admin.list_topics(timeout=timeout).brokers) < 3 else 3
    wanted = [
        NewTopic(
            t.changelog_topic.get_topic_name(),
            num_partitions=env.ringback_partitions,
            replication_factor=replication,
            config={"cleanup.policy": "compact"},
        )
        for t in TABLES.values()
    ]
    wanted.append(
        NewTopic(
            ticks_topic.get_topic_name(),
            num_partitions=env.ringback_partitions,
            replication_factor=replication,
            config={"cleanup.policy": "delete", "retention.ms": str(3600 * 1000)},
        )
    )
    wanted = [w for w in wanted if w.topic not in existing]
    for name, fut in admin.create_topics(wanted, request_timeout=timeout).items() if wanted else ():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


class FaustEffects:
    async def persist(self, table: str, key: str, value: dict | None) -> None:
        await TABLES[table].persist(key, value)

    async def outcome(self, key: bytes, record: dict) -> None:
        await outcomes_topic.send(key=key, value=record)

    async def dead_letter(self, key: bytes, record: dict) -> None:
        await dead_letters_topic.send(key=key, value=record)


directory = PracticeDirectory()
clock = sink_clock()


def _mailer():
    if not env.smtp_url:
        return None
    from ringback.sinks.channels.email import SmtpMailer

    return SmtpMailer(env.smtp_url)


executor = ActionExecutor(
    env,
    Tables(sent_log, consent, sms_history, deferred, tasks_table),
    FaustEffects(),
    directory,
    clock,
    policy=RetryPolicy.from_env(),
    sms=TwilioSms(env) if env.twilio_account_sid and env.twilio_auth_token else None,
    slack=SlackWebhook(),
    mailer=_mailer(),
)


# Records Faust skips around a rebalance are read from the broker and handled first, and no
# offset is committed past a record not handled yet (ringback/gap_guard.py, docs/sinks.md).
gap_guard = gap_guard_module.for_app(
    app,
    "sinks",
    {
        topics.topic_name(spec, env): spec.suffix
        for spec in (topics.ACTIONS, topics.CALL_EVENTS, topics.MESSAGE_STATUS, topics.TASK_UPDATES)
    },
    enabled=os.environ.get("RINGBACK_GAP_GUARD", "on") != "off",
)


async def _consume(stream, schema: str, source: str, handler) -> None:
    async for event in stream.events():
        message = event.message
        generation = gap_guard.generation
        if gap_guard.begin(message.tp, message.offset):  # first after a rebalance, a gap, a rewind
            await gap_guard.resolve(
                message.tp,
                message.offset,
                lambda r: _handle_one(schema, source, handler, r.key, r.value, message.partition),
                generation,
            )
        await _handle_one(schema, source, handler, event.key, event.value, message.partition)
        gap_guard.done(message.tp, message.offset, generation)


async def _handle_one(schema: str, source: str, handler, key: bytes | None, raw: bytes | None, partition: int) -> None:
    """One record (also a skipped one the gap guard read back from the broker)."""
    try:
        value = codec.decode(schema, raw)
    except ValueError as exc:
        await _dead_input(source, f"undecodable {schema}: {exc}", raw)
        return
    for attempt in range(UNEXPECTED_RETRIES + 1):
        try:
            await handler(key, value, partition)
            break
        except Exception as exc:
            if attempt < UNEXPECTED_RETRIES:
                # Infrastructure trouble (a changelog write refused, metadata not
                # there yet) usually passes: the handlers are idempotent, try again.
                log.warning("%s: error handling a record, retrying: %s: %s", source, type(exc).__name__, exc)
                await asyncio.sleep(min(2**attempt, 8))
                continue
            log.exception("%s: unexpected error handling a record", source)
            await _dead_input(source, f"unexpected error: {type(exc).__name__}: {exc}", raw, value.get("practice_id"))


_ACTION_KINDS = next(f["type"]["symbols"] for f in codec.schema("action_command")["fields"] if f["name"] == "kind")
shared_metrics.declare_dead_letter_sources(
    [
        topics.topic_name(spec, env)
        for spec in (topics.ACTIONS, topics.CALL_EVENTS, topics.MESSAGE_STATUS, topics.TASK_UPDATES)
    ]
    + [f"sinks.{kind.lower()}" for kind in _ACTION_KINDS]
)


async def _dead_input(source: str, reason: str, raw: bytes | None, practice_id: str | None = None) -> None:
    await dead_letters_topic.send(
        key=source.encode(),
        value={
            "source": source,
            "reason": reason[:500],
            "raw": raw or b"",
            "content_type": "avro/binary",
            "received_at": clock.now_ms(),
            "practice_id": practice_id,
        },
    )
    shared_metrics.DEAD_LETTERS.labels(source).inc()


@app.agent(actions_topic)
async def carry_out(stream):
    await _consume(
        stream,
        "action_command",
        topics.topic_name(topics.ACTIONS, env),
        lambda k, v, p: executor.handle_action(k, v, p),
    )


@app.agent(call_events_topic)
async def watch_consent(stream):
    await _consume(
        stream,
        "call_event",
        topics.topic_name(topics.CALL_EVENTS, env),
        lambda k, v, p: executor.on_call_event(k, v, p),
    )


@app.agent(message_status_topic)
async def track_delivery(stream):
    await _consume(
        stream,
        "message_status",
        topics.topic_name(topics.MESSAGE_STATUS, env),
        lambda k, v, p: executor.on_message_status(k, v),
    )


@app.agent(task_updates_topic)
async def track_tasks(stream):
    await _consume(
        stream,
        "task_update",
        topics.topic_name(topics.TASK_UPDATES, env),
        lambda k, v, p: executor.on_task_update(k, v),
    )


TICKS = Counter("ringback_sink_ticks_total", "TICK messages processed (deferred SMS checks)")


@app.agent(ticks_topic)
async def fire_deferred(stream):
    async for event in stream.events():
        TICKS.inc()
        try:
            await executor.fire_due(event.message.partition)
        except Exception:
            log.exception("firing deferred SMS failed")


@app.timer(interval=TICK_INTERVAL_S)
async def send_ticks() -> None:
    """Tables may only be written while processing an event: the timer sends a TICK to
    each ticks partition this worker owns, and `fire_deferred` does the work there."""
    name = ticks_topic.get_topic_name()
    try:
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == name)
    except Exception:  # noqa: BLE001 - not assigned yet (starting, rebalancing)
        return
    for partition in owned:
        await ticks_topic.send(value=b"tick", partition=partition)


@app.on_before_shutdown.connect
async def _close_clients(app, **kwargs) -> None:
    for client in (executor.sms, executor.slack):
        if client is not None:
            try:
                await client.close()
            except Exception:
                log.debug("closing a client failed", exc_info=True)
