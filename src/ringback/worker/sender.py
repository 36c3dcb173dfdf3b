"""The worker's actions and outcomes go out through librdkafka (confluent-kafka), not Faust's
aiokafka producer: batching and the protocol are C, which was the largest share of the
worker's CPU (docs/stream-app.md, BENCHMARKS.md). The changelog stays Faust's.

`send` returns at once with an asyncio future, settled with `Delivered` (or the delivery
error) when the broker acknowledges: the write-behind (worker/topology.py) applies an
input's state once all its futures are done. A thread serves librdkafka's delivery reports
and settles every report of one poll in a single hop onto the event loop (one wake-up per
batch instead of one per record).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ringback.config.settings import Settings
from ringback.kafka.connection import client_config
from ringback.observability import logs


class Delivered(NamedTuple):
    """Where the broker stored a record (what Faust's RecordMetadata gave the write-behind)."""

    partition: int
    offset: int


class RecordSender:
    """One idempotent producer (acks=all) for the worker's own records; `close` flushes it."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._producer = Producer(
            {
                **client_config(settings),  # the brokers, TLS and SASL
                "enable.idempotence": True,  # in order per partition, no duplicates on retries
                "acks": "all",
                "linger.ms": 5,  # a batch per partition per few ms: a missed call makes 4 records
                # Back within ~1 s of a restarted broker (librdkafka's default backs off up to 10 s).
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 1000,
                "logger": logs.librdkafka_logger(),  # quiet, rate-limited during an outage
            }
        )
        # Delivery reports, appended by librdkafka's callbacks on whichever thread polls.
        self._reports: deque[tuple[asyncio.Future, KafkaError | None, int, int]] = deque()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="worker-sender-poll", daemon=True)
        self._poller.start()

    def send(
        self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Mapping[str, bytes]
    ) -> asyncio.Future:
        """Queue one record for `partition`; the future settles on its acknowledgement."""
        fut: asyncio.Future = self._loop.create_future()
        reports = self._reports

        def delivered(err: KafkaError | None, msg: Message) -> None:  # on a polling thread
            reports.append((fut, err, msg.partition() or 0, msg.offset() or 0))

        try:
            self._producer.produce(
                topic, value=value, key=key, partition=partition, headers=list(headers.items()), on_delivery=delivered
            )
        except BufferError:
            self._producer.poll(0.1)  # librdkafka's queue is full: let it drain once, then retry
            self._producer.produce(
                topic, value=value, key=key, partition=partition, headers=list(headers.items()), on_delivery=delivered
            )
        return fut

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            reports = self._reports
            if reports:
                batch = [reports.popleft() for _ in range(len(reports))]
                try:
                    self._loop.call_soon_threadsafe(_settle, batch)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=2)


def _settle(batch: list[tuple[asyncio.Future, KafkaError | None, int, int]]) -> None:
    for fut, err, partition, offset in batch:
        if fut.done():
            continue
        if err is not None:
            fut.set_exception(KafkaException(err))
        else:
            fut.set_result(Delivered(partition, offset))
