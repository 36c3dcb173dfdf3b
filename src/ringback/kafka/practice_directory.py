"""Every practice's settings, read from the compacted config topic.

Each process (gateway, stream workers, sinks) keeps the whole directory in memory:
it is small (hundreds of practices), every process needs all of it, and reading
one partition from the beginning is simpler and sturdier than a Faust GlobalTable
(whose recovery can loop with several workers unless it has one partition). A process is
ready once it has read up to the end offset it saw at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka import topics
from ringback.kafka.connection import client_config
from ringback.kafka.topic_cache import TopicCacheReader, from_start_consumer
from ringback.schemas import codec

log = logging.getLogger(__name__)


def practice_record(p: Practice, now_ms: int) -> dict:
    """The config-topic record of one practice (the full entry travels as JSON)."""
    return {
        "practice_id": p.id,
        "name": p.name,
        "time_zone": p.time_zone,
        "phone_numbers": list(p.phone_numbers),
        "sms_from": p.sms_from,
        "messaging_service_sid": p.messaging_service_sid,
        "booking_link": p.booking_link,
        "reschedule_link": p.reschedule_link,
        "routing": dict(p.routing),
        "windows": {k: int(v) for k, v in p.windows.model_dump().items()},
        "quiet_hours_start": p.quiet_hours.start.strftime("%H:%M"),
        "quiet_hours_end": p.quiet_hours.end.strftime("%H:%M"),
        "blocked_numbers": list(p.blocked_numbers),
        "default_language": p.default_language,
        "config_json": p.model_dump_json(),
        "updated_at": now_ms,
    }


class PracticeDirectory:
    """Practices by id and by the numbers they own (their DIDs)."""

    def __init__(self, practices: Iterable[Practice] = ()) -> None:
        self._by_id: dict[str, Practice] = {}
        self._by_number: dict[str, Practice] = {}
        for p in practices:
            self.put(p)
        # Reads the config topic from the start, and again after an error (kafka/topic_cache.py).
        self._reader = TopicCacheReader(
            "practice directory", "the config topic", self._read, thread_name="practice-directory"
        )

    # -- lookups
    def by_id(self, practice_id: str) -> Practice | None:
        return self._by_id.get(practice_id)

    def by_number(self, e164: str) -> Practice | None:
        """The practice that owns a called number; never trusted from the caller."""
        return self._by_number.get(e164)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Practice]:
        return iter(self._by_id.values())  # a snapshot: put/remove swap whole dicts

    def put(self, p: Practice) -> None:
        old = self._by_id.get(p.id)
        by_number = dict(self._by_number)
        if old is not None:
            for n in old.phone_numbers:
                by_number.pop(n, None)
        for n in p.phone_numbers:
            by_number[n] = p
        by_id = dict(self._by_id)
        by_id[p.id] = p
        # Swap whole dicts: readers on other threads never see a half-applied change.
        self._by_number, self._by_id = by_number, by_id

    def remove(self, practice_id: str) -> None:
        old = self._by_id.get(practice_id)
        if old is None:
            return
        by_id = {k: v for k, v in self._by_id.items() if k != practice_id}
        by_number = {k: v for k, v in self._by_number.items() if v.id != practice_id}
        self._by_number, self._by_id = by_number, by_id

    # -- following the config topic
    def follow(self, env: Settings) -> PracticeDirectory:
        """Read the config topic from the beginning in a background thread (and again from
        the beginning after an error, serving the last directory meanwhile)."""
        self._name = topics.topic_name(topics.PRACTICE_CONFIG, env)
        self._reader.start(
            lambda: from_start_consumer(client_config(env), f"{env.ringback_namespace}.practice-directory")
        )  # never committed
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self._reader.wait_ready(timeout)

    def followed_to_end(self, env: Settings, timeout: float = 60.0) -> PracticeDirectory:
        """`follow`, then wait until the config topic was read to its end (RuntimeError after
        `timeout`): what a one-practice tool does before anything else."""
        self.follow(env)
        if not self.wait_ready(timeout):
            self.close()
            raise RuntimeError(f"could not read the practice config topic within {timeout:.0f} s")
        return self

    def require(self, practice_id: str) -> Practice:
        """The practice, or LookupError telling how to add it."""
        practice = self.by_id(practice_id)
        if practice is None:
            raise LookupError(f"practice {practice_id!r} is not in the config topic (ringback config apply)")
        return practice

    @property
    def ready(self) -> bool:
        return self._reader.ready.is_set()

    def close(self) -> None:
        self._reader.close()

    def _read(self, consumer: Consumer) -> None:
        """Read the config topic from the start (applying records again is idempotent)."""
        name, ready, stop = self._name, self._reader.ready, self._reader.stop
        end = self._end_offset(consumer, name)
        consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
        position = 0
        if end == 0:
            ready.set()
        while not stop.is_set():
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error, offset = msg.error(), msg.offset()
            if error is not None or offset is None:  # an event, not a record (only those lack an offset)
                # End of partition (or a passing error): whatever we have read is current.
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("config topic: %s", error)
                if position >= end:
                    ready.set()
                continue
            position = offset + 1
            self._apply(msg.key(), msg.value())
            if position >= end:
                ready.set()

    @staticmethod
    def _end_offset(consumer: Consumer, name: str) -> int:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=5)
                return high
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key:
                self.remove(key.decode())
            return
        try:
            record = codec.decode("practice_config", value)
            self.put(Practice.model_validate_json(record["config_json"]))
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the directory
            log.error("skipping an unreadable practice config record (key %r): %s", key, exc)


def configured_practice(env: Settings, practice_id: str) -> Practice:
    """One practice as the config topic has it now (the directory is read once and closed)."""
    directory = PracticeDirectory().followed_to_end(env)
    try:
        return directory.require(practice_id)
    finally:
        directory.close()
