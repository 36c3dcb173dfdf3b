"""The gap guard's logic (kafka/gap_guard.py) without a broker: gaps, rewinds,
rebalances, the commit clamp and the watch, with a fake reader and a fake consumer."""

from __future__ import annotations

import uuid
from collections import namedtuple
from types import SimpleNamespace

import pytest

from ringback.kafka import gap_guard as gg
from ringback.kafka.gap_guard import GapGuard, GapRecord

TP = namedtuple("TP", "topic partition")  # the shape of Faust's TP
ACTIONS = "ns.actions"
PATIENTS = "ns.patients"  # compacted (guarded only where a test says so)


class FakeReader:
    """A broker: `log[(topic, partition)]` = {offset: value} (each record's key is its offset);
    committed offsets per partition."""

    def __init__(self) -> None:
        self.log: dict[tuple[str, int], dict[int, bytes]] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.lookups: list[tuple[str, int]] = []
        self.reads: list[tuple[str, int, int, int]] = []

    def fill(self, topic: str, partition: int, offsets) -> None:
        self.log.setdefault((topic, partition), {}).update({o: f"v{o}".encode() for o in offsets})

    def start_offset(self, topic: str, partition: int) -> int | None:
        self.lookups.append((topic, partition))
        return self.committed.get((topic, partition), 0)

    def end_offsets(self, partitions) -> dict:
        return {(t, p): max(self.log.get((t, p), {-1: b""})) + 1 for t, p in partitions}

    def read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[GapRecord]:
        self.reads.append((topic, partition, start, end))
        records = self.log.get((topic, partition), {})
        found = [GapRecord(o, str(o).encode(), records[o]) for o in sorted(records) if start <= o < end]
        return found[:limit]


class FakeConsumer:
    def __init__(self, assignment=()) -> None:
        self.commits: list[dict] = []
        self.acked: list[tuple[str, int, int]] = []
        self.seeks: list[tuple] = []
        self._assignment = set(assignment)

    async def _commit(self, offsets) -> bool:
        self.commits.append(dict(offsets))
        return True

    def ack(self, message) -> bool:
        self.acked.append((message.topic, message.partition, message.offset))
        return True

    def assignment(self):
        return set(self._assignment)

    async def seek(self, tp, offset) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_committed(self) -> dict:
        """aiokafka: seeks only partitions with a committed offset above 0, returns them all."""
        return dict(self.committed_offsets)

    committed_offsets: dict = {}


class FakeFlow:
    active = True

    def is_active(self) -> bool:
        return self.active


class FakeApp:
    def __init__(self) -> None:
        self.rebalancing = False
        self.flow_control = FakeFlow()


class FakeStream:
    """A Faust stream's `events()`: records of one partition, as the agent receives them."""

    def __init__(self, tp: TP, offsets) -> None:
        self.tp, self.offsets = tp, offsets

    async def events(self):
        for offset in self.offsets:
            message = SimpleNamespace(tp=self.tp, topic=self.tp.topic, partition=self.tp.partition, offset=offset)
            yield SimpleNamespace(message=message, key=str(offset).encode(), value=f"v{offset}".encode())


class Agent:
    """An app's agent: `GapGuard.consume` over a stream, recording what it handled."""

    def __init__(self, guard: GapGuard) -> None:
        self.guard = guard
        self.handled: list[tuple[str, int, int]] = []

    async def handle(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        assert key is not None
        self.handled.append((topic, partition, int(key)))  # the fake records' keys are their offsets

    async def deliver(self, tp: TP, *offsets: int) -> None:
        await self.guard.consume(FakeStream(tp, offsets), self.handle)


@pytest.fixture
def app_name() -> str:
    return f"test-{uuid.uuid4().hex[:6]}"  # fresh metric labels per test


@pytest.fixture
def reader() -> FakeReader:
    r = FakeReader()
    r.fill(ACTIONS, 0, range(0, 2000))
    r.fill(ACTIONS, 1, range(0, 50))
    return r


@pytest.fixture
def guard(reader, app_name) -> GapGuard:
    g = GapGuard(app_name, {ACTIONS: "actions"}, reader)
    g.install(FakeConsumer())
    return g


def metric(counter, app_name: str, label: str = "actions") -> float:
    return counter.labels(app_name, label)._value.get()


async def test_consecutive_offsets_cost_one_committed_lookup_and_no_read(guard, reader, app_name):
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 0, 1, 2, 3, 4)
    assert [o for _, _, o in agent.handled] == [0, 1, 2, 3, 4]
    assert reader.lookups == [(ACTIONS, 0)] and reader.reads == []
    assert metric(gg.RECOVERED, app_name) == 0
    assert guard.busy == 0


async def test_skipped_records_are_read_and_handled_first_in_order(guard, reader, app_name):
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 0, 1, 4, 5)
    assert [o for _, _, o in agent.handled] == [0, 1, 2, 3, 4, 5]
    assert reader.reads == [(ACTIONS, 0, 2, 4)]
    assert metric(gg.RECOVERED, app_name) == 2
    # Acknowledged to Faust like the records its stream hands out, so it can commit past them.
    assert guard._consumer.acked == [(ACTIONS, 0, 2), (ACTIONS, 0, 3)]


async def test_first_record_after_assignment_is_compared_with_the_committed_offset(guard, reader, app_name):
    reader.committed[(ACTIONS, 0)] = 3
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 5, 6)
    assert [o for _, _, o in agent.handled] == [3, 4, 5, 6]
    assert metric(gg.RECOVERED, app_name) == 2


async def test_a_rewind_is_handled_again_and_counted_not_dropped(guard, reader, app_name):
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 0, 1, 2, 3, 4, 5)
    await agent.deliver(TP(ACTIONS, 0), 3, 4, 5, 6)  # Faust seeks back to an older commit
    assert [o for _, _, o in agent.handled] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6]
    assert metric(gg.REDELIVERED, app_name) == 3
    assert reader.reads == [] and metric(gg.RECOVERED, app_name) == 0
    # The next expected offset never moves back: a hole after a rewind is measured from the top.
    await agent.deliver(TP(ACTIONS, 0), 9)
    assert reader.reads == [(ACTIONS, 0, 7, 9)]
    assert [o for _, _, o in agent.handled][-3:] == [7, 8, 9]


async def test_a_redelivery_below_the_committed_offset_after_assignment_is_handled(guard, reader):
    reader.committed[(ACTIONS, 0)] = 10
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 8, 9, 10)  # e.g. a crash before the commit: replayed
    assert [o for _, _, o in agent.handled] == [8, 9, 10]
    assert reader.reads == []


async def test_revocation_and_reassignment_start_again_from_the_committed_offset(guard, reader):
    agent = Agent(guard)
    tp = TP(ACTIONS, 0)
    await agent.deliver(tp, 0, 1, 2)
    await guard.on_partitions_revoked(None, set())
    # Another worker owned the partition meanwhile and committed up to 10.
    reader.committed[(ACTIONS, 0)] = 10
    await guard.on_partitions_assigned(None, set())
    await agent.deliver(tp, 10, 11, 13)
    assert [o for _, _, o in agent.handled] == [0, 1, 2, 10, 11, 12, 13]
    assert reader.lookups == [(ACTIONS, 0), (ACTIONS, 0)]
    assert reader.reads == [(ACTIONS, 0, 12, 13)]


async def test_a_record_finishing_after_a_rebalance_leaves_no_trace(guard, reader):
    tp = TP(ACTIONS, 0)
    await Agent(guard).deliver(tp, 0)
    generation = guard.generation
    assert guard.begin(tp, 1) is False  # in order
    await guard.on_partitions_revoked(None, set())  # the rebalance starts while 1 is handled
    guard.done(tp, 1, generation)
    assert guard._next == {}  # forgotten: the next owner starts at the committed offset
    assert guard.clamp({tp: 2}) == {}  # and nothing is committed for it from here


async def test_partitions_are_independent(guard, reader):
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 0, 1)
    await agent.deliver(TP(ACTIONS, 1), 0, 2)
    await agent.deliver(TP(ACTIONS, 0), 2)
    assert agent.handled == [
        (ACTIONS, 0, 0),
        (ACTIONS, 0, 1),
        (ACTIONS, 1, 0),
        (ACTIONS, 1, 1),
        (ACTIONS, 1, 2),
        (ACTIONS, 0, 2),
    ]


async def test_unguarded_topics_pass_straight_through(guard, reader):
    agent = Agent(guard)
    await agent.deliver(TP(PATIENTS, 0), 0, 7, 42)  # compaction leaves holes: not gaps
    assert [o for _, _, o in agent.handled] == [0, 7, 42]
    assert reader.lookups == [] and reader.reads == []
    assert guard.clamp({TP(PATIENTS, 0): 43}) == {TP(PATIENTS, 0): 43}


@pytest.fixture
def compacted_guard(reader, app_name) -> GapGuard:
    g = GapGuard(app_name, {ACTIONS: "actions", PATIENTS: "patients"}, reader, compacted={PATIENTS})
    g.install(FakeConsumer())
    return g


async def test_compaction_holes_cost_one_look_ahead_read_not_one_per_hole(compacted_guard, reader, app_name):
    reader.log[(PATIENTS, 0)] = {o: b"p" for o in (0, 7, 42, 43, 50, 51, 90)}  # the rest compacted away
    agent = Agent(compacted_guard)
    await agent.deliver(TP(PATIENTS, 0), 0, 7, 42, 43, 50, 51, 90)
    assert [o for _, _, o in agent.handled] == [0, 7, 42, 43, 50, 51, 90]  # nothing twice, nothing added
    assert len(reader.reads) == 1  # the first hole; the look-ahead told the others apart
    assert reader.reads[0][2:] == (1, 7 + gg.COMPACTED_LOOKAHEAD)
    assert metric(gg.RECOVERED, app_name, "patients") == 0
    assert compacted_guard._next[TP(PATIENTS, 0)] == 91


async def test_records_skipped_between_compaction_holes_are_read_and_handled(compacted_guard, reader, app_name):
    reader.log[(PATIENTS, 0)] = {o: b"p" for o in (0, 7, 42, 43, 50)}
    agent = Agent(compacted_guard)
    await agent.deliver(TP(PATIENTS, 0), 0, 42, 50)  # Faust dropped 7 and 43
    assert [o for _, _, o in agent.handled] == [0, 7, 42, 43, 50]
    assert metric(gg.RECOVERED, app_name, "patients") == 2
    # The clamp lets Faust commit past the holes once the handler is past them.
    assert compacted_guard.clamp({TP(PATIENTS, 0): 51}) == {TP(PATIENTS, 0): 51}


async def test_a_compacted_look_ahead_never_vouches_for_offsets_not_read(compacted_guard, reader, monkeypatch):
    monkeypatch.setattr(gg, "READ_CHUNK", 3)
    reader.log[(PATIENTS, 0)] = {o: b"p" for o in (0, 5, 6, 7, 8, 9, 10)}
    agent = Agent(compacted_guard)
    await agent.deliver(TP(PATIENTS, 0), 0, 5, 6, 7, 10)  # the read after 5 returned 5, 6, 7 only
    assert [o for _, _, o in agent.handled] == [0, 5, 6, 7, 8, 9, 10]  # 8 and 9 read, not assumed holes


async def test_holes_without_data_in_a_gap_are_skipped(guard, reader, app_name):
    reader.log[(ACTIONS, 2)] = {0: b"a", 1: b"b", 3: b"d", 6: b"g"}  # 2, 4, 5: control records
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 2), 0, 6)
    assert [o for _, _, o in agent.handled] == [0, 1, 3, 6]
    assert metric(gg.RECOVERED, app_name) == 2
    assert guard._next[TP(ACTIONS, 2)] == 7


async def test_a_long_gap_is_read_in_chunks(guard, reader, app_name, monkeypatch):
    monkeypatch.setattr(gg, "READ_CHUNK", 300)
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 0, 1000)
    assert [o for _, _, o in agent.handled] == list(range(0, 1001))
    assert len(reader.reads) == 4  # 1..300, 301..600, 601..900, 901..999
    assert metric(gg.RECOVERED, app_name) == 999


async def test_the_clamp_never_commits_past_what_the_handler_finished(guard, reader, app_name):
    agent = Agent(guard)
    tp0, tp1, other = TP(ACTIONS, 0), TP(ACTIONS, 1), TP(PATIENTS, 0)
    await agent.deliver(tp0, 0, 1, 2)
    assert guard.clamp({tp0: 3}) == {tp0: 3}
    assert guard.clamp({tp0: 2}) == {tp0: 2}
    # Faust acknowledged 3 and 4 without handing them over: the commit stops at 3.
    assert guard.clamp({tp0: 5, other: 9}) == {tp0: 3, other: 9}
    # A partition the handler has not seen since the assignment: nothing committed.
    assert guard.clamp({tp1: 4}) == {}
    assert metric(gg.COMMITS_HELD, app_name) == 2


async def test_the_installed_clamp_wraps_the_consumer_commit(reader, app_name):
    guard = GapGuard(app_name, {ACTIONS: "actions"}, reader)
    consumer = FakeConsumer()
    sent = consumer.commits
    guard.install(consumer)
    guard.install(consumer)  # idempotent: wrapped once
    tp0, tp1 = TP(ACTIONS, 0), TP(ACTIONS, 1)
    await Agent(guard).deliver(tp0, 0, 1)
    assert await consumer._commit({tp0: 5}) is True
    assert await consumer._commit({tp1: 3}) is False  # nothing allowed: the broker is not asked
    assert sent == [{tp0: 2}]


async def test_a_disabled_guard_does_nothing(reader, app_name):
    guard = GapGuard(app_name, {ACTIONS: "actions"}, reader, enabled=False)
    consumer = FakeConsumer()
    original = consumer._commit
    guard.install(consumer)
    agent = Agent(guard)
    await agent.deliver(TP(ACTIONS, 0), 0, 5)
    assert [o for _, _, o in agent.handled] == [0, 5]
    assert reader.lookups == [] and consumer._commit == original
    assert guard.clamp({TP(ACTIONS, 0): 6}) == {TP(ACTIONS, 0): 6}


async def test_watch_seeks_back_a_partition_whose_records_never_reach_the_agent(reader, app_name):
    tp0, tp1 = TP(ACTIONS, 0), TP(ACTIONS, 1)
    consumer = FakeConsumer(assignment={tp0, tp1, TP(PATIENTS, 0)})
    guard = GapGuard(app_name, {ACTIONS: "actions"}, reader)
    guard.install(consumer)
    guard._app = FakeApp()
    reader.log[(ACTIONS, 0)] = {o: b"v" for o in range(6)}
    await Agent(guard).deliver(tp0, 0, 1, 2)  # 3..5 are in the log, the agent never gets them
    reader.committed[(ACTIONS, 1)] = 50  # partition 1: everything handled and committed
    await guard.watch()
    assert consumer.seeks == []  # first sighting: they may still be on their way to the agent
    await guard.watch()
    assert consumer.seeks == [(tp0, 3)]
    assert metric(gg.SEEKS, app_name) == 1
    await guard.watch()
    assert consumer.seeks == [(tp0, 3)]  # one seek, then two more checks before another


async def test_watch_leaves_a_busy_or_moving_agent_alone(reader, app_name):
    tp0 = TP(ACTIONS, 0)
    consumer = FakeConsumer(assignment={tp0})
    guard = GapGuard(app_name, {ACTIONS: "actions"}, reader)
    guard.install(consumer)
    app = guard._app = FakeApp()
    reader.log[(ACTIONS, 0)] = {o: b"v" for o in range(6)}
    agent = Agent(guard)
    await agent.deliver(tp0, 0)
    await guard.watch()
    await agent.deliver(tp0, 1)  # progress between the checks
    await guard.watch()
    assert consumer.seeks == []
    guard.begin(tp0, 2)  # a record being handled (a slow API call): the others wait in the buffer
    await guard.watch()
    await guard.watch()
    assert consumer.seeks == []
    guard.done(tp0, 2, guard.generation)
    app.rebalancing = True
    await guard.watch()
    await guard.watch()
    assert consumer.seeks == []
    app.rebalancing = False
    await agent.deliver(tp0, 3, 4, 5)  # caught up: nothing to do
    await guard.watch()
    await guard.watch()
    assert consumer.seeks == []
    reader.log[(ACTIONS, 0)][6] = b"v"  # a new record the agent does not get
    await guard.watch()
    await guard.watch()
    assert consumer.seeks == [(tp0, 6)]


async def test_after_a_rebalance_uncommitted_partitions_are_sent_back_to_the_start(reader, app_name):
    consumer = FakeConsumer()
    consumer.committed_offsets = {TP(ACTIONS, 0): None, TP(ACTIONS, 1): 0, TP(ACTIONS, 2): 17, TP(PATIENTS, 0): None}
    guard = GapGuard(app_name, {ACTIONS: "actions"}, reader)
    guard.install(consumer)
    assert await consumer.seek_to_committed() == consumer.committed_offsets  # Faust still gets the mapping
    # aiokafka left the first two where the dropped records had moved them; 2 was sought by
    # aiokafka itself; patients is not guarded here.
    assert sorted(consumer.seeks) == [(TP(ACTIONS, 0), 0), (TP(ACTIONS, 1), 0)]


async def test_no_rewind_when_the_app_starts_at_the_end_or_the_guard_is_off(reader, app_name):
    for configure in (lambda g: setattr(g, "rewind_from_start", False), lambda g: setattr(g, "enabled", False)):
        consumer = FakeConsumer()
        consumer.committed_offsets = {TP(ACTIONS, 0): None}
        guard = GapGuard(app_name, {ACTIONS: "actions"}, reader)
        configure(guard)
        guard.install(consumer)
        await consumer.seek_to_committed()
        assert consumer.seeks == []


async def test_a_rewind_that_fails_does_not_fail_faust_s_seek(reader, app_name):
    class Revoked(FakeConsumer):
        async def seek(self, tp, offset) -> None:
            if tp.partition == 0:
                raise RuntimeError("IllegalStateError: partition is not assigned")
            await super().seek(tp, offset)

    consumer = Revoked()
    consumer.committed_offsets = {TP(ACTIONS, 0): None, TP(ACTIONS, 1): None}
    guard = GapGuard(app_name, {ACTIONS: "actions"}, reader)
    guard.install(consumer)
    assert await consumer.seek_to_committed() == consumer.committed_offsets
    assert consumer.seeks == [(TP(ACTIONS, 1), 0)]  # the other partitions still rewound
