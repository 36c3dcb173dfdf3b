"""A Kafka producer whose `send` returns only once the broker acknowledged the record.

The gateway answers a webhook 2xx only after this returns, so a provider's event
is never acknowledged and then lost: idempotence + acks=all, and a short delivery
timeout after which the caller answers 503 and the provider retries. A retry that
races a late delivery is harmless: the event id collapses duplicates downstream.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ringback.kafka.connection import Connection, librdkafka
from ringback.observability import logs


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the caller should answer 503."""


class AckedProducer:
    def __init__(self, bootstrap: Connection, timeout_s: float = 5.0, **extra: object) -> None:
        self.timeout_s = timeout_s
        self._producer = Producer(
            {
                **librdkafka(bootstrap),  # the brokers, TLS and SASL (kafka/connection.py)
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "message.timeout.ms": int(timeout_s * 1000),
                "socket.connection.setup.timeout.ms": 3000,
                # librdkafka backs off reconnects up to 10 s by default: after a broker restart the
                # gateway kept answering 503 for 20-29 s. 1 s at most: back within ~1 s of the broker.
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 1000,
                # Java's and aiokafka's partitioner (murmur2), so records produced here land in
                # the same partition as Faust's for the same key: co-partitioning depends on it.
                "partitioner": "murmur2_random",
                # librdkafka's own lines through the logging filter (quiet, rate-limited in an outage)
                "logger": logs.librdkafka_logger(),
                **extra,
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, bytes] | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Produce and wait for the acknowledgement; returns (partition, offset).

        `partition` places the record explicitly (records whose key is not the join key,
        e.g. appointments, go to `topics.partition_for(join_key, n)`); None lets the
        murmur2 partitioner hash the key."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is not None:
                    fut.set_exception(BrokerUnavailable(str(err)))
                else:
                    fut.set_result((msg.partition() or 0, msg.offset() or 0))  # both set on a delivered record

            loop.call_soon_threadsafe(settle)

        record_headers: dict[str, str | bytes | None] | None = dict(headers) if headers else None
        try:
            if partition is None:
                self._producer.produce(topic, value=value, key=key, headers=record_headers, on_delivery=delivered)
            else:
                self._producer.produce(
                    topic, value=value, key=key, headers=record_headers, on_delivery=delivered, partition=partition
                )
        except BufferError as exc:
            raise BrokerUnavailable(f"producer queue full: {exc}") from None
        except KafkaException as exc:
            raise BrokerUnavailable(str(exc)) from None
        try:
            return await asyncio.wait_for(fut, self.timeout_s + 1.0)
        except TimeoutError:
            raise BrokerUnavailable(f"no acknowledgement within {self.timeout_s:.0f}s") from None

    def send_sync(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Blocking variant for command-line tools."""
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)

        self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        remaining = self._producer.flush(self.timeout_s + 1.0)
        if errors or remaining:
            raise BrokerUnavailable(str(errors[0]) if errors else "no acknowledgement in time")

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
        self._stop.set()
        self._poller.join(timeout=2)
