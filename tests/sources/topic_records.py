"""Reading back what the sources produced: every record of a topic, on the real broker."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from tests.support import kafka_tools


def read_topic(bootstrap: str, topic: str) -> list[dict]:
    """Every record now in the topic, with partition, key, timestamp and headers."""
    ends = kafka_tools.end_offsets(bootstrap, topic)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    out = []
    try:
        remaining = {p: e for p, e in ends.items() if e > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in remaining])
        while remaining:
            msg = consumer.poll(5)
            if msg is None:
                raise AssertionError(f"could not read {topic} to {ends}")
            if msg.error():
                continue
            out.append(
                {
                    "partition": msg.partition(),
                    "key": msg.key(),
                    "value": msg.value(),
                    "timestamp": msg.timestamp()[1],
                    "headers": dict(msg.headers() or []),
                }
            )
            if msg.offset() + 1 >= remaining.get(msg.partition(), 0):
                remaining.pop(msg.partition(), None)
    finally:
        consumer.close()
    return out
