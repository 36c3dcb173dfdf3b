"""The HL7 feed's memory of the messages it answered: a message sent again with the same
control id (an interface engine resends whatever it has no ACK for) is answered the same
way and publishes nothing twice.

One record per answered message on `<ns>.hl7-received` (delete policy, kept 7 days: the
bound in time), key `practice_id|MSH-3|MSH-4|MSH-10`, value JSON `{ack, at, type}` (no
PHI). The listener reads the topic to its end before it accepts connections.
"""

from __future__ import annotations

import json
import time

from confluent_kafka import Consumer, TopicPartition

from ringback.config.settings import Settings
from ringback.kafka import topics
from ringback.kafka.connection import client_config
from ringback.kafka.producer import AckedProducer
from ringback.sources.ehr.hl7.messages import Header

WINDOW_MS = topics.HL7_RECEIVED.retention_ms or 604_800_000


class ReceivedLog:
    def __init__(self, env: Settings, producer: AckedProducer, practice_id: str, window_ms: int = WINDOW_MS) -> None:
        self.env = env
        self.producer = producer
        self.practice_id = practice_id
        self.window_ms = window_ms
        self.topic = topics.topic_name(topics.HL7_RECEIVED, env)
        self._acks: dict[bytes, tuple[str, int]] = {}  # key -> (ack code, answered at)

    def key(self, head: Header) -> bytes:
        return f"{self.practice_id}|{head.sending_application}|{head.sending_facility}|{head.control_id}".encode()

    def load(self, now_ms: int, timeout: float = 60.0) -> int:
        """Read the topic to its end (this practice's records of the window); how many."""
        prefix = f"{self.practice_id}|".encode()
        consumer = Consumer(
            {
                **client_config(self.env),  # the brokers, TLS and SASL
                "group.id": f"{self.env.ringback_namespace}.hl7-received-reader",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=timeout)
            if high <= low:
                return 0
            consumer.assign([TopicPartition(self.topic, 0, low)])
            position = low
            give_up = time.monotonic() + timeout
            while position < high:
                if time.monotonic() > give_up:
                    raise RuntimeError(f"could not read {self.topic} to its end offset {high} within {timeout:.0f}s")
                msg = consumer.poll(1.0)
                offset = msg.offset() if msg is not None and msg.error() is None else None
                if msg is None or offset is None:
                    continue
                position = offset + 1
                key, raw = msg.key(), msg.value()
                if key and key.startswith(prefix) and raw:
                    record = json.loads(raw)
                    if now_ms - int(record["at"]) < self.window_ms:
                        self._acks[key] = (str(record["ack"]), int(record["at"]))
            return len(self._acks)
        finally:
            consumer.close()

    def answered(self, head: Header, now_ms: int) -> str | None:
        """The ack code this message got before, within the window; None: not seen."""
        seen = self._acks.get(self.key(head))
        if seen is None or now_ms - seen[1] >= self.window_ms:
            return None
        return seen[0]

    async def remember(self, head: Header, ack: str, now_ms: int) -> None:
        """Record the answer (acknowledged by the broker) before it goes to the sender."""
        key = self.key(head)
        value = json.dumps({"ack": ack, "at": now_ms, "type": head.kind[:32]}).encode()
        await self.producer.send(self.topic, key, value, partition=0)
        self._acks[key] = (ack, now_ms)
        if len(self._acks) % 10_000 == 0:  # now and then, forget what is past the window
            self._acks = {k: v for k, v in self._acks.items() if now_ms - v[1] < self.window_ms}
