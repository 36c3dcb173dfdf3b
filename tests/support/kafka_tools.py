"""Small readers of a real broker for assertions: end offsets, committed offsets, records."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ringback.kafka.connection import Connection, librdkafka
from ringback.schemas import codec

_LEADERSHIP_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def end_offsets(bootstrap: Connection, topic: str) -> dict[int, int]:
    admin = AdminClient(librdkafka(bootstrap))
    md = admin.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None:
        return {}
    consumer = Consumer({**librdkafka(bootstrap), "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return {p: _high_watermark(consumer, topic, p) for p in md.partitions}
    finally:
        consumer.close()


def _high_watermark(consumer: Consumer, topic: str, partition: int, timeout: float = 20.0) -> int:
    """The end offset of one partition; asked again while leadership moves (a new topic, a busy broker)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException as exc:
            if time.monotonic() > deadline or exc.args[0].code() not in _LEADERSHIP_MOVING:
                raise
            time.sleep(0.2)


def total_records(bootstrap: Connection, topic: str) -> int:
    return sum(end_offsets(bootstrap, topic).values())


def committed_offsets(bootstrap: Connection, group: str, topic: str) -> dict[int, int]:
    parts = [TopicPartition(topic, p) for p in end_offsets(bootstrap, topic)]
    if not parts:
        return {}
    consumer = Consumer({**librdkafka(bootstrap), "group.id": group})
    try:
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def caught_up(bootstrap: Connection, group: str, topic: str) -> bool:
    """True once the group has committed everything in the topic (and it is not empty)."""
    ends = end_offsets(bootstrap, topic)
    committed = committed_offsets(bootstrap, group, topic)
    return bool(ends) and sum(ends.values()) > 0 and all(ends[p] == 0 or committed.get(p, -1) >= ends[p] for p in ends)


def read_all(bootstrap: Connection, topic: str, schema: str | None = None) -> list[tuple[bytes | None, object]]:
    """Every record in the topic now (up to the end offsets seen at the start)."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer(
        {
            **librdkafka(bootstrap),
            "group.id": f"probe-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[bytes | None, object]] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        remaining = {p: e for p, e in ends.items() if e > 0}
        while remaining:
            msg = consumer.poll(5)
            if msg is None:
                raise AssertionError(f"could not read {topic} to its end offsets {ends}")
            if msg.error():
                continue
            value = msg.value()
            out.append((msg.key(), codec.decode(schema, value) if schema and value is not None else value))
            if msg.offset() + 1 >= remaining.get(msg.partition(), 0):
                remaining.pop(msg.partition(), None)
    finally:
        consumer.close()
    return out
