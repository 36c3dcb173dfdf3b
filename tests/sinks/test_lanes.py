"""Lanes (sinks/lanes.py): one key's records in order, different keys at once, acknowledgements
in offset order per partition, commits never past an unfinished record."""

from __future__ import annotations

import asyncio

from ringback.sinks.lanes import Lanes
from ringback.sinks.retry import PracticeThrottle, RateLimited

TP = ("actions", 0)


class Recorder:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.acked: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.running = 0
        self.most = 0

    def job(self, offset: int):
        gate = self.gates.setdefault(offset, asyncio.Event())

        async def run() -> None:
            self.started.append(offset)
            self.running += 1
            self.most = max(self.most, self.running)
            await gate.wait()
            self.running -= 1

        return run

    def finish(self, offset: int):
        return lambda: self.acked.append(offset)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_key_in_order_other_keys_at_once_acks_in_offset_order():
    lanes, r = Lanes(limit=10), Recorder()
    # offsets 0, 2 are key a; 1, 3 key b; 4 key c
    for offset, key in enumerate("ababc"):
        await lanes.submit(key, TP, offset, r.job(offset), r.finish(offset))
    await settle()
    assert r.started == [0, 1, 4]  # the first of each key; 2 and 3 wait for their key
    assert lanes.floor(TP) == 0
    r.gates[4].set()  # c finishes first: not acknowledged before 0..3
    await settle()
    assert r.acked == [] and lanes.floor(TP) == 0
    r.gates[0].set()
    await settle()
    assert r.acked == [0] and 2 in r.started and lanes.floor(TP) == 1
    assert lanes.cap({TP: 5, ("actions", 1): 7}) == {TP: 1, ("actions", 1): 7}
    for offset in (1, 2, 3):
        r.gates[offset].set()
    await lanes.idle()
    assert r.acked == [0, 1, 2, 3, 4] and lanes.floor(TP) is None
    assert lanes.cap({TP: 5}) == {TP: 5}
    assert r.most == 3


async def test_at_most_limit_records_accepted():
    lanes, r = Lanes(limit=2), Recorder()
    await lanes.submit("a", TP, 0, r.job(0), r.finish(0))
    await lanes.submit("b", TP, 1, r.job(1), r.finish(1))
    third = asyncio.create_task(lanes.submit("c", TP, 2, r.job(2), r.finish(2)))
    await settle()
    assert not third.done() and lanes.in_flight == 2
    r.gates[1].set()
    await settle()
    assert third.done() and r.started == [0, 1, 2]
    r.gates[0].set()
    r.gates[2].set()
    await lanes.idle()
    assert r.acked == [0, 1, 2]


async def test_the_commit_wrapper_caps_what_faust_asks():
    lanes, r = Lanes(limit=10), Recorder()
    committed: list[dict] = []

    class Consumer:
        async def _commit(self, offsets):
            committed.append(dict(offsets))
            return True

    consumer = Consumer()
    lanes.install(consumer)
    lanes.install(consumer)  # idempotent
    await lanes.submit("a", TP, 3, r.job(3), r.finish(3))
    await consumer._commit({TP: 9})
    r.gates[3].set()
    await lanes.idle()
    await consumer._commit({TP: 9})
    assert committed == [{TP: 3}, {TP: 9}]


async def test_a_429_pauses_the_whole_practice():
    now = [1000.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    throttle = PracticeThrottle(2, sleep=sleep, wall=lambda: now[0])
    throttle.pause("maple", 3.0)
    async with throttle.slot("other"):
        pass
    assert slept == []  # other practices go on
    async with throttle.slot("maple"):
        pass
    assert slept == [3.0] and throttle.paused_for("maple") == 0
    try:  # a 429 inside the slot (a send or a look-up) pauses the practice
        async with throttle.slot("maple"):
            raise RateLimited("429", retry_after=4)
    except RateLimited:
        pass
    assert throttle.paused_for("maple") == 4.0
