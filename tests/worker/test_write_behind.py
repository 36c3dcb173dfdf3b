"""The worker's write-behind (worker/topology.py): an input's state reaches the table only
once every record it sent is acknowledged, in input order per partition; later inputs read
the writes not applied yet; a failed send stops everything after it; the partition meta
keeps the highest offsets sent. On an offline app (memory store, no broker): the records'
acknowledgements are futures the test settles."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace

import orjson
import pytest
from faust.types import TP

from ringback.clock import ManualClock
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.worker.app import make_app
from ringback.worker.topology import Topology, _Pending, build_topology, encode_value
from ringback.workflow import timers
from ringback.workflow.state import DELETE
from tests.support.offline_apps import settings

PARTITION = 1


@pytest.fixture
def topology() -> Topology:
    env = settings()
    return build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))


class FakeEvent:
    """What the table needs of the input's Faust event: its topic and partition."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def event(t: Topology, partition: int = PARTITION) -> FakeEvent:
    return FakeEvent(next(iter(t.input_names)), partition)


def pending(t: Topology, writes: dict, sent: list | None = None, partition: int = PARTITION) -> _Pending:
    """Queue an input as `handle` does after sending: its records' futures and its writes."""
    encoded = {k: v if v is DELETE else encode_value(v) for k, v in writes.items()}
    entry = _Pending(event(t, partition), sent or [], encoded)
    t._pending.setdefault(partition, deque()).append(entry)
    t._unapplied.setdefault(partition, {}).update(encoded)
    return entry


def ack(fut: asyncio.Future, offset: int) -> None:
    fut.set_result(SimpleNamespace(offset=offset))


def action(step: str) -> dict:
    return {"kind": "SEND_SMS", "step": step, "action_id": f"case:{step}"}


def test_an_inputs_state_waits_for_its_acknowledgements_and_later_inputs_read_it(topology):
    async def scenario():
        t = topology
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        pending(t, {"c|p|+1": {"n": 1}}, [("actions", action("first_sms"), first)])
        pending(t, {"c|p|+1": {"n": 2}, "c|p|+2": {"n": 1}})  # sends nothing, queued behind
        t._apply_acknowledged(PARTITION)
        assert t._read("c|p|+1") is None and t._read("c|p|+2") is None  # nothing in the table yet
        assert t._reader(PARTITION)("c|p|+1") == {"n": 2}  # the next input sees the latest write
        ack(first, 7)
        t._apply_acknowledged(PARTITION)
        assert t._read("c|p|+1") == {"n": 2} and t._read("c|p|+2") == {"n": 1}
        assert t._read(timers.meta_key(PARTITION)) == {"actions_offset": 7}
        assert not t._pending[PARTITION] and not t._unapplied[PARTITION]

    asyncio.run(scenario())


def test_inputs_are_applied_in_order_whatever_order_their_acknowledgements_come_in(topology):
    async def scenario():
        t = topology
        loop = asyncio.get_running_loop()
        a, b = loop.create_future(), loop.create_future()
        pending(t, {"c|p|+1": {"n": 1}}, [("actions", action("first_sms"), a)])
        pending(t, {"c|p|+2": {"n": 1}}, [("outcomes", {"state": "OPEN", "final": False}, b)])
        ack(b, 3)
        t._apply_acknowledged(PARTITION)
        assert t._read("c|p|+2") is None  # behind the first input, whose record is not acknowledged
        ack(a, 5)
        await t.flush()
        assert t._read("c|p|+1") == {"n": 1} and t._read("c|p|+2") == {"n": 1}
        assert t._read(timers.meta_key(PARTITION)) == {"actions_offset": 5, "outcomes_offset": 3}

    asyncio.run(scenario())


def test_a_failed_send_applies_nothing_of_it_or_after_it(topology):
    async def scenario():
        t = topology
        loop = asyncio.get_running_loop()
        failed = loop.create_future()
        pending(t, {"c|p|+1": {"n": 1}}, [("actions", action("first_sms"), failed)])
        pending(t, {"c|p|+2": {"n": 1}})
        failed.set_exception(RuntimeError("delivery timed out"))
        with pytest.raises(RuntimeError):
            await t.flush()
        with pytest.raises(RuntimeError):  # and again: the failed input stays first
            t._apply_acknowledged(PARTITION)
        assert t._read("c|p|+1") is None and t._read("c|p|+2") is None

    asyncio.run(scenario())


def test_the_meta_keeps_the_highest_offsets_and_the_workflows_own_fields(topology):
    async def scenario():
        t = topology
        loop = asyncio.get_running_loop()
        meta = timers.meta_key(PARTITION)
        a, b = loop.create_future(), loop.create_future()
        pending(t, {meta: {"cursor": 10}}, [("actions", action("first_sms"), a)])
        pending(t, {meta: {"cursor": 11}, "c|p|+1": DELETE}, [("outcomes", {"state": "OPEN", "final": False}, b)])
        ack(a, 9)
        ack(b, 4)
        await t.flush()
        assert t._read(meta) == {"cursor": 11, "actions_offset": 9, "outcomes_offset": 4}
        assert orjson.loads(t.state.data[meta]) == t._read(meta)  # stored as JSON bytes

    asyncio.run(scenario())


def test_a_revoked_partition_forgets_what_it_had_not_applied(topology):
    async def scenario():
        t = topology
        pending(t, {"c|p|+1": {"n": 1}}, [("actions", action("first_sms"), asyncio.get_running_loop().create_future())])
        await t.forget_revoked(t.app, {TP("x.call-events", PARTITION)})
        assert PARTITION not in t._pending and PARTITION not in t._unapplied
        assert t._reader(PARTITION)("c|p|+1") is None

    asyncio.run(scenario())


def written_keys(t: Topology) -> list[str]:
    """The keys the table writes from now on, in order (each one a changelog record)."""
    keys: list[str] = []
    write = t.state.on_key_set

    def spy(key, value):
        keys.append(key)
        return write(key, value)

    t.state.on_key_set = spy  # type: ignore[method-assign]
    return keys


def test_a_run_of_inputs_writes_the_meta_once_after_their_other_writes(topology):
    async def scenario():
        t = topology
        loop = asyncio.get_running_loop()
        meta = timers.meta_key(PARTITION)
        keys = written_keys(t)
        futures = [loop.create_future() for _ in range(3)]
        for i, fut in enumerate(futures):
            pending(t, {f"c|p|+{i}": {"n": i}, meta: {"cursor": 20 + i}}, [("actions", action(f"s{i}"), fut)])
        for i, fut in enumerate(futures):
            ack(fut, 30 - i)  # offsets need not grow in input order: the highest is kept
        t._apply_acknowledged(PARTITION)
        assert keys == ["c|p|+0", "c|p|+1", "c|p|+2", meta]
        assert t._read(meta) == {"cursor": 22, "actions_offset": 30}

    asyncio.run(scenario())


def test_a_failed_send_still_gets_the_meta_of_the_inputs_applied_before_it(topology):
    async def scenario():
        t = topology
        loop = asyncio.get_running_loop()
        meta = timers.meta_key(PARTITION)
        good, failed = loop.create_future(), loop.create_future()
        pending(t, {"c|p|+1": {"n": 1}}, [("actions", action("first_sms"), good)])
        pending(t, {"c|p|+2": {"n": 1}}, [("actions", action("second_sms"), failed)])
        ack(good, 12)
        failed.set_exception(RuntimeError("delivery timed out"))
        with pytest.raises(RuntimeError):
            t._apply_acknowledged(PARTITION)
        assert t._read("c|p|+1") == {"n": 1} and t._read("c|p|+2") is None
        assert t._read(meta) == {"actions_offset": 12}

    asyncio.run(scenario())
