"""The actions agent's read-back of records Faust skipped (sinks/app.py `_consume_in_lanes`):
they go into their lanes in offset order, so a slow one (an SMS whose request was in flight
at a crash waits out that request's timeout) holds back its own caller only, not the agent.
Pure asyncio: a real GapGuard and real Lanes, a stream and a broker reader that are lists."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from ringback.kafka.gap_guard import GapGuard, GapRecord
from ringback.sinks.app import Sinks
from ringback.sinks.lanes import Lanes

TOPIC = "ns.actions"
TP = (TOPIC, 0)
SLOW, OTHER = b"p|+15550001", b"p|+15550002"


class Reader:
    """The broker as the guard reads it: committed offset 10; offsets 10 and 11 were skipped."""

    def start_offset(self, topic, partition):
        return 10

    def read(self, topic, partition, start, end, limit):
        log = [GapRecord(10, SLOW, b"slow"), GapRecord(11, OTHER, b"other-10")]
        return [r for r in log if start <= r.offset < end][:limit]

    def end_offsets(self, partitions):
        return {p: 14 for p in partitions}


class Stream:
    """What Faust hands the agent: offsets 12 and 13 (10 and 11 skipped)."""

    def __init__(self, records, acked):
        self.records, self.acked = records, acked

    def noack(self):
        return self

    async def events(self):
        for offset, key, value in self.records:
            yield SimpleNamespace(
                message=SimpleNamespace(tp=TP, offset=offset, partition=0),
                key=key,
                value=value,
                ack=lambda offset=offset: self.acked.append(offset),
            )


async def test_a_slow_skipped_record_holds_back_its_caller_only():
    handled: list[bytes] = []
    release_slow = asyncio.Event()
    sinks = Sinks.__new__(Sinks)  # only what the loop uses: the guard, the lanes, the handler
    sinks.gap_guard = GapGuard("sinks", {TOPIC: "actions"}, Reader())
    sinks.lanes = Lanes(8)

    async def handle_one(schema, source, handler, key, raw, partition):
        if raw == b"slow":
            await release_slow.wait()
        handled.append(raw)

    sinks._handle_one = handle_one  # type: ignore[method-assign]
    acked: list[int] = []
    stream = Stream([(12, OTHER, b"other-12"), (13, SLOW, b"slow-13")], acked)

    agent = asyncio.create_task(sinks._consume_in_lanes(stream, "action_command", "actions", None))
    deadline = asyncio.get_running_loop().time() + 5
    while handled != [b"other-10", b"other-12"]:  # the other caller goes on
        assert asyncio.get_running_loop().time() < deadline, handled
        await asyncio.sleep(0.01)
    await agent  # the agent went through every record without waiting for the slow one
    assert acked == []  # acknowledged in offset order: all behind offset 10
    assert sinks.lanes.floor(TP) == 10  # no commit past the unfinished skipped record

    release_slow.set()
    await sinks.lanes.idle()
    assert handled == [b"other-10", b"other-12", b"slow", b"slow-13"]  # one caller's in order
    assert acked == [12, 13]
    assert sinks.gap_guard.busy == 0
