"""The sink workers (`ringback sinks`): action commands in, effects out.

A separate Faust application (its own consumer group `<namespace>-sinks`) so a slow
API never stalls classification; several sink processes share the partitions.
`make_app(settings)` makes the app, `build_sinks(app, settings, directory, clock)`
declares the topology below on it and returns the `Sinks`; nothing at import time.

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
import functools
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import faust
from prometheus_client import Counter

from ringback.clock import Clock
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
from ringback.sinks.executor import ActionExecutor, Tables, Write
from ringback.sinks.lanes import Lanes
from ringback.sinks.retry import RetryPolicy

log = logging.getLogger(__name__)

UNEXPECTED_RETRIES = 4  # then the record goes to the dead-letter topic with the error
# Table attribute name (executor.Tables) -> table name (its changelog: <app id>-<name>-changelog,
# but for tasks: the contract topic, sinks/channels/tasks.py).
TABLE_NAMES = {
    "sent_log": "sent-log",
    "consent": "consent",
    "sms_history": "sms-history",
    "deferred": "deferred",
    "tasks": "tasks",
}
# Inputs (decoded here: an undecodable record becomes a dead letter, not a crash), guarded
# by the gap guard (kafka/gap_guard.py, docs/sinks.md).
INPUTS = (topics.ACTIONS, topics.CALL_EVENTS, topics.MESSAGE_STATUS, topics.TASK_UPDATES)
TICKS_RETENTION = timedelta(hours=1)

TICKS = Counter("ringback_sink_ticks_total", "TICK messages processed (deferred SMS checks)")


def make_app(settings: Settings) -> faust.App:
    """The sinks' app (consumer group `<namespace>-sinks`), no topic or agent yet."""
    register_faust_codecs()
    return faust_app(
        settings,
        "sinks",  # shared settings (names, broker, partitions, replication): kafka/faust_app.py
        store=settings.sinks_store,
        processing_guarantee="at_least_once",
        web_enabled=settings.ringback_sinks_web,
        web_port=settings.ringback_sinks_metrics_port,
        broker_commit_every=settings.ringback_sinks_commit_every,
        broker_commit_interval=settings.ringback_sinks_commit_interval,
        # How soon the group notices a killed worker and hands its partitions on.
        broker_session_timeout=settings.ringback_sinks_session_timeout_s,
        broker_heartbeat_interval=settings.ringback_sinks_heartbeat_s,
        table_standby_replicas=settings.ringback_sinks_standbys,
    )


class DurableTable(faust.Table):
    """A Faust table whose last changelog write can be awaited (broker acknowledged)."""

    _last_changelog = None
    persist_timeout_s = 20.0  # RINGBACK_SINKS_PERSIST_TIMEOUT_S, set by build_sinks

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
                await asyncio.wait_for(asyncio.shield(fut), self.persist_timeout_s)
            except TimeoutError:
                log.error("table %s: changelog write not acknowledged within %ss", self.name, self.persist_timeout_s)
                raise


class FaustEffects:
    """The executor's effects on Faust: table writes awaited, outcomes, dead letters."""

    def __init__(self, tables: dict[str, DurableTable], outcomes: faust.TopicT, dead_letters: faust.TopicT) -> None:
        self.tables = tables
        self.outcomes = outcomes
        self.dead_letters = dead_letters

    async def persist(self, table: str, key: str, value: dict | list | None) -> None:
        await self.tables[table].persist(key, value)

    async def persist_all(self, writes: list[Write]) -> None:
        await asyncio.gather(*(self.tables[table].persist(key, value) for table, key, value in writes))

    async def outcome(self, key: bytes, record: dict) -> None:
        await self._acknowledged(self.outcomes, key, record)

    async def dead_letter(self, key: bytes, record: dict) -> None:
        await self._acknowledged(self.dead_letters, key, record)

    @staticmethod
    async def _acknowledged(topic: faust.TopicT, key: bytes, record: dict) -> None:
        """Faust's `send` returns once the record is buffered; the executor writes an action's
        final entry only after its outcome and dead letter are in the log (executor._finish)."""
        sent = await topic.send(key=key, value=record)
        await asyncio.wait_for(asyncio.shield(sent), DurableTable.persist_timeout_s)


class Sinks:
    """The sinks' channels, tables and executor on one app. Made by `build_sinks`, which
    also starts the agents and the tick timer."""

    def __init__(self, app: faust.App, settings: Settings, directory: PracticeDirectory, clock: Clock) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self.tables: dict[str, DurableTable] = {attr: self._table(name) for attr, name in TABLE_NAMES.items()}
        self.inputs = {spec.suffix: self._input(spec) for spec in INPUTS}
        self.ticks_topic = app.topic(
            f"{settings.ringback_namespace}.sinks-ticks",
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
            partitions=settings.ringback_partitions,
            internal=True,
            retention=TICKS_RETENTION,
            deleting=True,
        )
        self.outcomes_topic = app.topic(
            topics.topic_name(topics.OUTCOMES, settings),
            key_type=bytes,
            value_serializer="avro_outcome",
            partitions=topics.partition_count(topics.OUTCOMES, settings),
        )
        self.dead_letters_topic = app.topic(
            topics.topic_name(topics.DEAD_LETTERS, settings),
            key_type=bytes,
            value_serializer="avro_dead_letter",
            partitions=topics.partition_count(topics.DEAD_LETTERS, settings),
        )
        self.executor = ActionExecutor(
            settings,
            Tables(**self.tables),
            FaustEffects(self.tables, self.outcomes_topic, self.dead_letters_topic),
            directory,
            clock,
            policy=RetryPolicy.from_settings(settings),
            sms=TwilioSms(settings) if settings.twilio_account_sid and settings.twilio_auth_token else None,
            slack=SlackWebhook(settings.ringback_slack_timeout_s),
            mailer=_mailer(settings),
        )
        self.gap_guard: gap_guard_module.GapGuard | None = None  # build_sinks attaches it
        # Actions: many in flight, one caller's in order (sinks/lanes.py).
        self.lanes = Lanes(settings.ringback_sink_concurrency)

    def _table(self, name: str) -> DurableTable:
        changelog = task_channel.changelog_topic(self.app, self.settings) if name == "tasks" else None
        table = DurableTable(
            self.app,
            name=name,
            default=None,
            beacon=self.app.tables.beacon,
            partitions=self.settings.ringback_partitions,
            key_type=str,  # JSON both, unless the changelog topic says otherwise
            changelog_topic=changelog,
            help=f"sinks: {name}",
        )
        if changelog is not None:  # the store keeps the changelog's bytes: encode alike
            table.key_serializer = changelog.key_serializer
            table.value_serializer = changelog.value_serializer
        table.persist_timeout_s = self.settings.ringback_sinks_persist_timeout_s
        self.app.tables.add(table)
        return table

    def _input(self, spec: topics.TopicSpec) -> faust.TopicT:
        # Raw bytes in: we decode, so an undecodable record becomes a dead letter, not a crash.
        return self.app.topic(
            topics.topic_name(spec, self.settings),
            key_type=bytes,
            value_type=bytes,
            value_serializer="raw",
            partitions=topics.partition_count(spec, self.settings),
        )

    @property
    def internal_topics(self) -> list[faust.TopicT]:
        """The topics to create before the app starts (`kafka.admin.ensure_internal_topics`):
        the tables' changelogs and the ticks topic."""
        return [t.changelog_topic for t in self.tables.values()] + [self.ticks_topic]

    def agent_body(self, schema: str, source: str, handler):
        """An agent's body: every record of the stream decoded as `schema`, given to `handler`."""

        async def consume(stream) -> None:
            await self._consume(stream, schema, source, handler)

        return consume

    async def _consume(self, stream, schema: str, source: str, handler) -> None:
        guard = self.gap_guard
        assert guard is not None, "build_sinks attaches the gap guard"

        async def handle(topic: str, partition: int, key: bytes | None, raw: bytes | None) -> None:
            await self._handle_one(schema, source, handler, key, raw, partition)

        await guard.consume(stream, handle)

    def lanes_body(self, schema: str, source: str, handler):
        """An agent's body that hands each record to its key's lane (sinks/lanes.py) instead of
        awaiting it: many records in flight, acknowledged in offset order when finished."""

        async def consume(stream) -> None:
            await self._consume_in_lanes(stream, schema, source, handler)

        return consume

    async def _consume_in_lanes(self, stream, schema: str, source: str, handler) -> None:
        guard = self.gap_guard
        assert guard is not None, "build_sinks attaches the gap guard"
        manual = stream.noack()  # acknowledged by the lanes, in offset order per partition
        async for event in manual.events():
            message = event.message
            tp, offset, partition = message.tp, message.offset, message.partition
            generation = guard.generation
            if guard.begin(tp, offset):
                # The records Faust skipped come after every record of this partition already
                # in a lane and before this one: into their lanes in that order, like any other.
                await guard.resolve(
                    tp,
                    offset,
                    lambda r: self._to_lane(schema, source, handler, r.key, r.value, tp, r.offset, partition),  # noqa: B023 - awaited in this iteration
                    generation,
                )
            # The guard's next expected offset moves on when the record is handed to its lane
            # (the lanes cap the commits at what is finished); it counts as busy until finished.
            guard.done(tp, offset, generation)
            await self._to_lane(schema, source, handler, event.key, event.value, tp, offset, partition, event.ack)

    async def _to_lane(
        self,
        schema: str,
        source: str,
        handler,
        key: bytes | None,
        raw: bytes | None,
        tp: Any,
        offset: int,
        partition: int,
        ack: Callable[[], None] | None = None,
    ) -> None:
        """Hand a record to its key's lane; the gap guard counts it busy until it is finished,
        then `ack` (the stream's records; None: a record the guard read back after Faust
        skipped it, which the guard acknowledges itself, while the lanes hold the partition's
        commits below it). A slow record, such as an SMS whose request was in flight at a
        crash and waits out that request's timeout before its lookup, holds back its caller
        only, not the agent."""
        guard = self.gap_guard
        assert guard is not None, "build_sinks attaches the gap guard"
        guard.busy += 1

        def finish() -> None:
            guard.busy -= 1
            if ack is not None:
                ack()

        run = functools.partial(self._handle_one, schema, source, handler, key, raw, partition)
        await self.lanes.submit(key, tp, offset, run, finish)

    async def on_partitions_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.lanes.reset()
        self.lanes.install(getattr(sender, "consumer", None))

    async def _handle_one(
        self, schema: str, source: str, handler, key: bytes | None, raw: bytes | None, partition: int
    ) -> None:
        """One record (also a skipped one the gap guard read back from the broker)."""
        try:
            value = codec.decode(schema, raw)  # type: ignore[arg-type]  # None (a tombstone) is undecodable too
        except ValueError as exc:
            await self._dead_input(source, f"undecodable {schema}: {exc}", raw)
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
                await self._dead_input(
                    source, f"unexpected error: {type(exc).__name__}: {exc}", raw, value.get("practice_id")
                )

    async def _dead_input(self, source: str, reason: str, raw: bytes | None, practice_id: str | None = None) -> None:
        await self.dead_letters_topic.send(
            key=source.encode(),
            value={
                "source": source,
                "reason": reason[:500],
                "raw": raw or b"",
                "content_type": "avro/binary",
                "received_at": self.clock.now_ms(),
                "practice_id": practice_id,
            },
        )
        shared_metrics.DEAD_LETTERS.labels(source).inc()

    async def close_clients(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """On shutdown (the app's on_before_shutdown signal)."""
        for client in (self.executor.sms, self.executor.slack):
            if client is not None:
                try:
                    await client.close()
                except Exception:
                    log.debug("closing a client failed", exc_info=True)


def _mailer(settings: Settings):
    if not settings.smtp_url:
        return None
    from ringback.sinks.channels.email import SmtpMailer

    return SmtpMailer(settings.smtp_url, sender=settings.ringback_smtp_from, timeout_s=settings.ringback_smtp_timeout_s)


def build_sinks(app: faust.App, settings: Settings, directory: PracticeDirectory, clock: Clock) -> Sinks:
    """Declare the sinks on `app`: tables, inputs, the agents, the tick timer, the gap
    guard and (with the web server on) /metrics."""
    # The twilio library logs every request at INFO, query strings (phone numbers) included.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    sinks = Sinks(app, settings, directory, clock)
    executor = sinks.executor
    if app.conf.web_enabled:
        # /metrics: Faust's monitor + the default registry, consumer lag, table sizes (observability/metrics.py).
        shared_metrics.instrument_faust_app(app, "ringback_sinks_faust", settings)
    input_names = {topics.topic_name(spec, settings): spec.suffix for spec in INPUTS}
    sinks.gap_guard = gap_guard_module.for_app(app, "sinks", input_names, settings)
    action_kinds = next(f["type"]["symbols"] for f in codec.schema("action_command")["fields"] if f["name"] == "kind")
    shared_metrics.declare_dead_letter_sources([*input_names, *(f"sinks.{kind.lower()}" for kind in action_kinds)])

    # SMS / Slack / e-mail / task, exactly once; inbound STOP / START; receipts; claims.
    # Actions run in lanes (many in flight); the other inputs one record at a time.
    for spec, agent_name, schema, handler in (
        (topics.ACTIONS, "carry_out", "action_command", lambda k, v, p: executor.handle_action(k, v, p)),
        (topics.CALL_EVENTS, "watch_consent", "call_event", lambda k, v, p: executor.on_call_event(k, v, p)),
        (topics.MESSAGE_STATUS, "track_delivery", "message_status", lambda k, v, p: executor.on_message_status(k, v)),
        (topics.TASK_UPDATES, "track_tasks", "task_update", lambda k, v, p: executor.on_task_update(k, v)),
    ):
        make_body = sinks.lanes_body if spec is topics.ACTIONS else sinks.agent_body
        body = make_body(schema, topics.topic_name(spec, settings), handler)
        app.agent(sinks.inputs[spec.suffix], name=f"{__name__}.{agent_name}")(body)
    app.on_partitions_assigned.connect(sinks.on_partitions_assigned)  # type: ignore[arg-type]  # mode's handler type admits no method

    async def fire_deferred(stream):
        async for event in stream.events():
            TICKS.inc()
            try:
                await executor.fire_due(event.message.partition)
            except Exception:
                log.exception("firing deferred SMS failed")

    app.agent(sinks.ticks_topic, name=f"{__name__}.fire_deferred")(fire_deferred)

    async def send_ticks() -> None:
        """Tables may only be written while processing an event: the timer sends a TICK to
        each ticks partition this worker owns, and `fire_deferred` does the work there."""
        name = sinks.ticks_topic.get_topic_name()
        try:
            owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == name)
        except Exception:  # noqa: BLE001 - not assigned yet (starting, rebalancing)
            return
        for partition in owned:
            await sinks.ticks_topic.send(value=b"tick", partition=partition)

    app.timer(interval=settings.ringback_sinks_tick_s, name=f"{__name__}.send_ticks")(send_ticks)
    app.on_before_shutdown.connect(sinks.close_clients)  # type: ignore[arg-type]  # mode's handler type admits no function
    return sinks
