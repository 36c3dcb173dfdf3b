"""A stand-in for AckedProducer in the sources' unit tests (no broker)."""

from __future__ import annotations

import asyncio
import json

from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec


class RecordingProducer:
    """AckedProducer's interface; records what was sent; can refuse some records."""

    timeout_s = 5.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict | None, int | None]] = []
        self.refuse = lambda topic, key, value: False

    async def send(self, topic, key, value, headers=None, partition=None):
        await asyncio.sleep(0)
        if self.refuse(topic, key, value):
            raise BrokerUnavailable("refused by the test")
        self.sent.append((topic, key, value, headers, partition))
        return (partition or 0, len(self.sent))

    def records(self, suffix: str) -> list[tuple[bytes | None, bytes | None, dict | None]]:
        return [(k, v, h) for t, k, v, h, _ in self.sent if t.endswith("." + suffix)]

    def event_ids(self) -> list[str]:
        return [codec.decode("call_event", v)["event_id"] for _, v, _ in self.records("call-events")]

    def checkpoints(self) -> list[dict]:
        return [json.loads(v) for _, v, _ in self.records("cdr-checkpoints")]
