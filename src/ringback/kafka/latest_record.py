"""The latest value of one key in a single-partition compacted topic (a source's checkpoints).

The CDR poller and the Google Voice watcher keep their checkpoints in compacted topics keyed by
who reads what; at start each reads its topic to the end once and keeps the last value of its key.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from ringback.config.settings import Settings
from ringback.kafka import topics
from ringback.kafka.connection import client_config
from ringback.observability import logs


def read_latest(env: Settings, spec: topics.TopicSpec, key: bytes, timeout: float = 30.0) -> bytes | None:
    """The last value written under `key` (None: never written, or deleted by a tombstone)."""
    name = topics.topic_name(spec, env)
    consumer = Consumer(
        {
            **client_config(env),  # the brokers, TLS and SASL
            "group.id": f"{env.ringback_namespace}.{spec.suffix}-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": logs.librdkafka_logger(),
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=timeout)
        if high <= low:
            return None
        consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
        latest: bytes | None = None
        position = low
        give_up = time.monotonic() + timeout
        while position < high:
            if time.monotonic() > give_up:
                raise RuntimeError(f"could not read {name} to its end offset {high} within {timeout:.0f}s")
            msg = consumer.poll(1.0)
            offset = msg.offset() if msg is not None and msg.error() is None else None
            if msg is None or offset is None:  # nothing yet, or an event rather than a record
                continue
            position = offset + 1
            if msg.key() == key:
                latest = msg.value()
        return latest
    finally:
        consumer.close()
