"""`ringback ehr hl7`: an MLLP listener turning one practice's HL7 v2 SIU and ADT messages
into patient and appointment records (docs/ehr-hl7.md).

Per message, in order: parse and map (messages.py); a control id answered before gets the
same answer again and publishes nothing (received.py); the records are built by the same
projector as the FHIR sync (publisher.py: keys `practice_id|phone`, each in its caller's
partition) and produced; once the broker acknowledged every one of them, the answer is
recorded and the ACK goes back: AA. A message we cannot use gets AE (or AR for a type,
trigger event or version we do not handle) and a dead letter with its raw bytes. When the
broker does not acknowledge, nothing is answered and the connection is closed: interface
engines resend a message they have no ACK for, while many treat AE/AR as final.

The projector's state (who has which phone, under which keys each appointment is
published) is this feed's own file, `RINGBACK_STATE_DIR/ehr/<practice>.hl7.json`, written
ahead of each publish with the records being published (a crash before the broker's
acknowledgement re-sends them at the next start).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import Counter

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.domain.phones import region_of
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import configured_practice
from ringback.kafka.producer import AckedProducer, BrokerUnavailable
from ringback.observability.metrics import DEAD_LETTERS, declare_dead_letter_sources
from ringback.schemas import codec
from ringback.sources.ehr.hl7 import messages, mllp
from ringback.sources.ehr.hl7.messages import Mapped, Unmappable
from ringback.sources.ehr.hl7.mllp import ack, bare_ack
from ringback.sources.ehr.hl7.received import ReceivedLog
from ringback.sources.ehr.publisher import (
    EhrProjector,
    EhrPublisher,
    Op,
    StateStore,
    empty_state,
    op_from_json,
    op_to_json,
)

log = logging.getLogger(__name__)

# `source` of the feed's dead letters, also their `ringback_dead_letters_total{source}` label.
DEAD_LETTER_SOURCE = "hl7"
DEAD_LETTER_RAW_MAX = 256 * 1024
PENDING = "hl7_pending_ops"  # the state file's write-ahead list of the records being published
MESSAGE_KINDS = ("SIU", "ADT", "other")
RESULTS = ("published", "ignored", "duplicate", "AE", "AR", "unanswered")

MESSAGES = Counter(
    "ringback_hl7_messages_total",
    "HL7 v2 messages received, by message type and what became of them",
    ["message", "result"],
)


def state_store(env: Settings, practice_id: str) -> StateStore:
    """The feed's own projector state (the FHIR sync keeps `<practice>.json`, locked while it runs)."""
    store = StateStore(env, practice_id)
    store.path = store.path.with_name(f"{practice_id}.hl7.json")
    return store


def _kind(message_code: str) -> str:
    return message_code if message_code in MESSAGE_KINDS else "other"


class Hl7Feed:
    """Answers one message at a time (a lock across connections: the projector state is one)."""

    def __init__(
        self,
        env: Settings,
        producer: AckedProducer,
        practice: Practice,
        region: str,
        store: StateStore,
        state: dict,
        received: ReceivedLog,
        clock: Clock | None = None,
    ) -> None:
        self.env = env
        self.producer = producer
        self.practice = practice
        self.region = region
        self.store = store
        self.received = received
        self.clock = clock or Clock()
        self.projector = EhrProjector(practice.id, state)
        self.publisher = EhrPublisher(env, producer, practice.id)
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
        self._lock = asyncio.Lock()

    async def recover(self) -> None:
        """The records of the last message the previous run published without a known acknowledgement."""
        if self.projector.state.get(PENDING):
            log.info("hl7 feed %s: re-sending the records of the last unfinished publish", self.practice.id)
            await self._publish([])

    async def handle(self, raw: bytes) -> bytes | None:
        """The ACK for one framed message; None: the broker did not acknowledge, answer nothing."""
        async with self._lock:
            try:
                return await self._handle(raw)
            except BrokerUnavailable as exc:
                log.warning(
                    "hl7 feed %s: broker did not acknowledge (%s): no ACK, the sender resends", self.practice.id, exc
                )
                MESSAGES.labels("other", "unanswered").inc()
                return None

    async def _handle(self, raw: bytes) -> bytes:
        now = self.clock.now_ms()
        try:
            msg = messages.parse(raw)
            head = messages.header(msg)
        except Unmappable as exc:
            await self._dead_letter(raw, "(no usable MSH)", exc.reason, now)
            MESSAGES.labels("other", exc.code).inc()
            return bare_ack(exc.code, exc.reason)
        kind = _kind(head.message_code)
        before = self.received.answered(head, now)
        if before is not None:
            MESSAGES.labels(kind, "duplicate").inc()
            log.info("hl7 feed %s: %s control id seen before: answered %s again", self.practice.id, head.kind, before)
            return ack(msg, before, "duplicate control id: already processed" if before != "AA" else None)
        try:
            mapped = messages.map_message(msg, self.region, self.practice.time_zone, now)
        except Unmappable as exc:
            await self._dead_letter(raw, head.kind, exc.reason, now)
            await self.received.remember(head, exc.code, now)
            MESSAGES.labels(kind, exc.code).inc()
            log.warning("hl7 feed %s: %s answered %s: %s", self.practice.id, head.kind, exc.code, exc.reason)
            return ack(msg, exc.code, exc.reason)
        if mapped.patient is not None and mapped.patient.rejected:
            # The message is accepted; the numbers we could not key are kept for a person to see.
            await self._dead_letter(raw, head.kind, "; ".join(mapped.patient.rejected), now)
        await self._publish(self._ops(mapped))
        await self.received.remember(head, "AA", now)
        MESSAGES.labels(kind, "ignored" if mapped.ignored else "published").inc()
        return ack(msg, "AA")

    def _ops(self, mapped: Mapped) -> list[Op]:
        ops: list[Op] = []
        patient = mapped.patient
        # ADT is the authority on the patient; a SIU's PID only introduces a patient not known
        # yet (its appointment is keyed by the patient's phones).
        if patient is not None and (
            mapped.patient_authoritative or not self.projector.known_patient(patient.patient_id)
        ):
            ops += self.projector.patient(patient)
        if mapped.appointment is not None:
            ops += self.projector.appointment(mapped.appointment)
        if mapped.deleted_appointment is not None:
            ops += self.projector.appointment_deleted(mapped.deleted_appointment)
        return ops

    async def _publish(self, ops: list[Op]) -> None:
        """Write-ahead: the state (with every record about to be produced) is saved first, so
        a crash never leaves a published key the state does not know, and the records are
        produced again at the next start."""
        state = self.projector.state
        todo = [op_from_json(o) for o in state.get(PENDING) or []] + ops
        if not todo:
            return
        state[PENDING] = [op_to_json(o) for o in todo]
        await asyncio.to_thread(self.store.save, state)
        await self.publisher.publish(todo)
        state[PENDING] = []  # persisted with the next save; re-sending these once more is harmless

    async def _dead_letter(self, raw: bytes, kind: str, reason: str, now: int) -> None:
        record = {
            "source": DEAD_LETTER_SOURCE,
            "reason": f"{kind[:32]}: {reason}",
            "raw": raw[:DEAD_LETTER_RAW_MAX],
            "content_type": "application/hl7-v2",
            "received_at": now,
            "practice_id": self.practice.id,
        }
        await self.producer.send(self.dead_topic, DEAD_LETTER_SOURCE.encode(), codec.encode("dead_letter", record))
        DEAD_LETTERS.labels(DEAD_LETTER_SOURCE).inc()  # once acknowledged, as every process


def declare_series() -> None:
    """Every series at 0 from the start (increase() cannot see the first value of a series)."""
    for kind in MESSAGE_KINDS:
        for result in RESULTS:
            MESSAGES.labels(kind, result)
    declare_dead_letter_sources([DEAD_LETTER_SOURCE])


def run(
    env: Settings,
    practice_id: str,
    port: int,
    host: str = "0.0.0.0",
    region: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Listen until SIGTERM/SIGINT. The port opens only once the state and the answered
    control ids are loaded and the last unfinished publish is re-sent."""
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    declare_series()
    admin.ensure_topics(env, topics.HL7)  # and its principal may read and write what it does
    practice = configured_practice(env, practice_id)
    region = region or region_of(practice.phone_numbers[0])
    clock = Clock()
    store = state_store(env, practice_id)
    store.lock()
    producer = AckedProducer(client_config(env))
    try:
        state = store.load() or empty_state(practice_id)
        received = ReceivedLog(env, producer, practice_id)
        loaded = received.load(clock.now_ms())
        feed = Hl7Feed(env, producer, practice, region, store, state, received, clock)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await feed.recover()
            server = await mllp.serve(feed.handle, host, port)
            log.info(
                "hl7 listener ready on %s:%d for practice %s (%d control ids remembered)",
                host,
                port,
                practice_id,
                loaded,
            )
            try:
                await stop.wait()
            finally:
                server.close()
                await server.wait_closed()
                await asyncio.to_thread(store.save, feed.projector.state)

        asyncio.run(main())
    finally:
        producer.close()
        store.unlock()
