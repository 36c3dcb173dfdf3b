"""Signed-out sessions, for every console replica: the `<ns>.console-sessions` topic.

Signing out produces one record (key: the session id; value: JSON `{"practice_id",
"expires_at", "revoked_at"}`, ms) and answers only once the broker acknowledged it.
Every console process reads the topic from the start and follows it (one partition,
kafka/topic_cache.py), so a cookie signed out on one replica is refused by all of them;
`SessionCodec.read` accepts no cookie before the topic has been read to its end.

A session id is revoked once, so the topic is not compacted but kept for a time
(kafka/topics.py CONSOLE_SESSIONS: 8 days, longer than the longest session lifetime the
settings allow); in memory an entry is dropped once its session would have expired anyway.

    revocations = SessionRevocations(env, producer, clock, on_revoke=notifier.bump).follow()
    await revocations.revoke(session)     # 503 (BrokerUnavailable) if not acknowledged
    revocations.revoked(session_id)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.console.sessions import Session
from ringback.kafka import topics
from ringback.kafka.producer import AckedProducer
from ringback.kafka.topic_cache import FollowedTopic, TopicCacheReader

log = logging.getLogger(__name__)

PRUNE_EVERY = 1000  # revocations applied between two sweeps of the expired ones


class SessionRevocations(FollowedTopic):
    """The session ids signed out and not expired yet, kept current from the topic."""

    group = "console-sessions"

    def __init__(
        self,
        env: Settings,
        producer: AckedProducer | None,
        clock: Clock,
        on_revoke: Callable[[str], None] = lambda practice_id: None,
    ) -> None:
        self.env = env
        self.topic = topics.topic_name(topics.CONSOLE_SESSIONS, env)
        self.producer = producer
        self.clock = clock
        self.on_revoke = on_revoke  # wakes the practice's event streams, which then end the revoked one
        self._expires: dict[str, int] = {}  # session id -> when it would have expired (ms)
        self._lock = threading.Lock()
        self._applied = 0
        self._reader = TopicCacheReader("session revocations", "the console-sessions topic", self._read, "revocations")

    # -- the codec's questions
    def revoked(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._expires

    def __len__(self) -> int:
        with self._lock:
            return len(self._expires)

    # -- signing out
    async def revoke(self, session: Session) -> None:
        """Store the revocation on the broker (raises BrokerUnavailable), then apply it here."""
        value = json.dumps(
            {
                "practice_id": session.user.practice_id,
                "expires_at": int(session.expires_at * 1000),
                "revoked_at": self.clock.now_ms(),
            }
        ).encode()
        if self.producer is None:
            raise RuntimeError("SessionRevocations without a producer cannot revoke")
        await self.producer.send(self.topic, session.session_id.encode(), value)
        self.apply(session.session_id.encode(), value)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic (applying it twice changes nothing)."""
        if not key or value is None:
            return
        try:
            record = json.loads(value)
            practice_id, expires_at = str(record["practice_id"]), int(record["expires_at"])
        except (ValueError, KeyError, TypeError):
            log.error("session revocations: unreadable record skipped")
            return
        now_ms = self.clock.now_ms()
        if expires_at <= now_ms:
            return  # that cookie is refused as expired anyway
        with self._lock:
            self._expires[key.decode(errors="replace")] = expires_at
            self._applied += 1
            if self._applied % PRUNE_EVERY == 0:
                for sid in [s for s, at in self._expires.items() if at <= now_ms]:
                    del self._expires[sid]
        self.on_revoke(practice_id)

    # -- following the topic
    def _read(self, consumer: Consumer) -> None:
        ready, stop = self._reader.ready, self._reader.stop
        part = TopicPartition(self.topic, 0, 0)
        try:
            low, end = consumer.get_watermark_offsets(part, timeout=10)
            consumer.assign([TopicPartition(self.topic, 0, low)])
            if end <= low:
                ready.set()
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error, offset = msg.error(), msg.offset()
                if error is not None or offset is None:  # an event, not a record
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        ready.set()
                    continue
                self.apply(msg.key(), msg.value())
                if offset + 1 >= end:
                    ready.set()
        except KafkaException as exc:  # e.g. the topic was just created and has no leader yet
            log.warning("session revocations: topic not readable yet (%s); retrying", exc.args[0].name())
