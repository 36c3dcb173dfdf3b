"""Metrics without a broker: practice labels, the overdue-timer gauge's scan, cancelled
gates, the sinks' first-response histogram, deferrals and dead letters (observability/metrics.py,
workflow/timers.py, sinks/executor.py). The scrape of real processes:
tests/observability/test_metrics_scrape.py."""

from __future__ import annotations

from datetime import datetime

import pytest
from prometheus_client import REGISTRY

from ringback.config.practices_file import load_practices
from ringback.config.settings import Settings
from ringback.observability import metrics
from ringback.observability.metrics import OTHER, PracticeLabels
from ringback.sinks import records as rec
from ringback.sinks.executor import FIRST_RESPONSE_STEPS
from ringback.workflow import timers
from ringback.workflow.state import caller_key
from ringback.workflow.timers import index_entry_pending
from tests.conftest import REPO
from tests.sinks.harness import CHICAGO, NOON, action, key, make
from tests.workflow.harness import NEW_CALLER, PRACTICE_ID, T0, Harness

HOLD_MS = 45_000  # the default first_response_hold


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def practices():
    return load_practices(REPO / "examples" / "practices.yaml").practices


@pytest.fixture(autouse=True)
def labels_off():
    metrics.set_practice_labels(PracticeLabels())
    yield
    metrics.set_practice_labels(PracticeLabels())


# ------------------------------------------------------------------ practice labels
def test_practice_labels_are_off_by_default():
    assert metrics.practice_label("maple-family") == ""


def test_practice_labels_on_are_bounded():
    labels = PracticeLabels("on", max_values=2)
    assert [labels(p) for p in ("a-1", "b-2", "a-1", "c-3", "b-2", None)] == ["a-1", "b-2", "a-1", OTHER, "b-2", OTHER]


def test_practice_labels_allow_list_and_no_phone_numbers():
    settings = Settings(_env_file=None, ringback_metrics_practice_labels="maple-family, oak-dental")
    metrics.set_practice_labels(PracticeLabels.from_settings(settings))
    assert metrics.practice_label("maple-family") == "maple-family"
    assert metrics.practice_label("birch") == OTHER
    assert PracticeLabels("on")("3125550100") == OTHER  # a valid practice id, but it looks like a number


# ------------------------------------------------------------------ gates: overdue and cancelled
def overdue(h: Harness, partition: int, grace_ms: int = 1000) -> int | None:
    read = h.table.get
    return timers.oldest_overdue(read, partition, h.now - grace_ms, lambda e: index_entry_pending(read, e))


def test_oldest_overdue_is_the_due_time_of_a_timer_no_tick_fired():
    h = Harness()
    p = h.partition(NEW_CALLER)
    h.event(NEW_CALLER)  # opens a case: first_response due at T0 + 45 s
    assert overdue(h, p) is None  # nothing due yet
    h.now = T0 + HOLD_MS + 500
    assert overdue(h, p) is None  # due, but within the grace
    h.now = T0 + HOLD_MS + 90_000  # 90 s late and still no tick
    assert overdue(h, p) == T0 + HOLD_MS
    assert all(overdue(h, q) is None for q in range(4) if q != p)
    h.tick()  # the tick fires it (the next timer is hours away)
    assert ("first_response", 90_000) in h.fired
    assert overdue(h, p) is None


def test_a_cancelled_gate_is_counted_and_its_stale_entry_is_not_overdue():
    h = Harness()
    p = h.partition(NEW_CALLER)
    h.event(NEW_CALLER)
    answered = h.event(NEW_CALLER, outcome="ANSWERED", event_id="twilio:answered")
    assert answered["outcome"] == "ANSWERED"
    case = h.table[caller_key(PRACTICE_ID, NEW_CALLER)]["case"]
    assert case is None  # cancel-if-answered closed it
    h.now = T0 + HOLD_MS + 90_000
    assert overdue(h, p) is None  # the index entry is left, but stale

    # The Tx reports which timers the close dropped (worker/topology.py counts them).
    h2 = Harness()
    h2.event(NEW_CALLER)
    event = {**answered, "event_id": "twilio:answered-2", "occurred_at": h2.now, "received_at": h2.now}
    tx = h2.run(h2.partition(NEW_CALLER), lambda wf: wf.on_call_event(event))
    assert sorted(tx.cancelled) == ["expire", "first_response"]


def test_oldest_overdue_reads_a_bounded_range():
    table: dict = {}
    timers.index(_Store(table), 0, "c|x|y", "case", T0, T0, T0 - 5000)  # cursor at T0/1000 - 6
    table["c|x|y"] = {"case": {"indexed": T0, "timers": {"expire": [T0, 1]}}}
    pending = lambda e: index_entry_pending(table.get, e)  # noqa: E731 - a one-line probe read where it is used
    assert timers.oldest_overdue(table.get, 0, T0 + 60_000, pending) == T0
    # A range longer than max_buckets is read from its oldest end only.
    assert timers.oldest_overdue(table.get, 0, T0 + 60_000, pending, max_buckets=3) is None


class _Store:
    def __init__(self, table: dict) -> None:
        self.table = table

    def get(self, k):
        return self.table.get(k)

    def set(self, k, v):
        self.table[k] = v

    def delete(self, k):
        self.table.pop(k, None)


# ------------------------------------------------------------------ sinks
FIRST = "ringback_first_response_latency_seconds"


async def test_first_sms_observes_first_response_latency_once(practices):
    ex = make(practices)  # wall clock fixed at 1000.0 s
    before = (
        sample(f"{FIRST}_count", scenario="NEW_PATIENT", practice=""),
        sample(f"{FIRST}_sum", scenario="NEW_PATIENT", practice=""),
        sample(f"{FIRST}_bucket", scenario="NEW_PATIENT", practice="", le="0.5"),
    )
    a = action(call_reported_at=999_600)  # reported 0.4 s before the request left
    assert await ex.handle_action(key(), a, 0) == rec.SENT
    assert await ex.handle_action(key(), a, 0) == "DUPLICATE"
    after = (
        sample(f"{FIRST}_count", scenario="NEW_PATIENT", practice=""),
        sample(f"{FIRST}_sum", scenario="NEW_PATIENT", practice=""),
        sample(f"{FIRST}_bucket", scenario="NEW_PATIENT", practice="", le="0.5"),
    )
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == pytest.approx(0.4)
    assert after[2] - before[2] == 1


async def test_later_sms_and_deferred_sms_are_not_first_responses(practices):
    assert FIRST_RESPONSE_STEPS == {"first_sms", "ack_sms", "reschedule_sms"}
    count = lambda: sample(f"{FIRST}_count", scenario="NEW_PATIENT", practice="")  # noqa: E731 - a one-line probe read where it is used
    deferred = lambda: sample("ringback_sink_sms_deferred_total", scenario="NEW_PATIENT", practice="")  # noqa: E731 - a one-line probe read where it is used
    ex = make(practices)
    start, start_deferred = count(), deferred()
    second = action(call_reported_at=999_000)
    second.update(step="second_sms", action_id=second["case_id"] + ":second_sms")
    assert await ex.handle_action(key(), second, 0) == rec.SENT
    assert count() == start

    evening = datetime(2026, 11, 24, 22, 30, tzinfo=CHICAGO).timestamp()
    ex = make(practices, now=evening)
    a = action(now=evening, call_reported_at=int(evening * 1000))
    assert await ex.handle_action(key(), a, 2) == rec.DEFERRED
    assert deferred() == start_deferred + 1
    ex.clock.set(datetime(2026, 11, 25, 8, 0, tzinfo=CHICAGO).timestamp())
    assert await ex.fire_due(2) == 1 and len(ex.sms.sent) == 1
    assert count() == start  # the night's wait is by design, not latency
    assert deferred() == start_deferred + 1  # firing it is not a second deferral


async def test_every_dead_letter_is_counted_by_source(practices):
    ex = make(practices)
    failed = lambda: sample("ringback_sink_actions_total", kind="SEND_SMS", result="failed", practice="")  # noqa: E731 - a one-line probe read where it is used
    before = (
        sample("ringback_dead_letters_total", source="sinks.send_sms"),
        sample("ringback_sink_dead_letters_total", kind="SEND_SMS"),
        failed(),
    )
    assert await ex.handle_action(key("555"), action(caller="555"), 0) == rec.FAILED  # refused for good
    assert await ex.handle_action(key(), action(practice_id="nope"), 0) == rec.DEAD_LETTERED
    assert len(ex.fx.dead) == 2
    assert sample("ringback_dead_letters_total", source="sinks.send_sms") - before[0] == 2
    assert sample("ringback_sink_dead_letters_total", kind="SEND_SMS") - before[1] == 2
    assert failed() - before[2] == 1


async def test_actions_carry_the_practice_label_when_it_is_on(practices):
    metrics.set_practice_labels(PracticeLabels("on"))
    ex = make(practices, now=NOON)
    name = "ringback_sink_actions_total"
    before = sample(name, kind="SEND_SMS", result="sent", practice="maple-family")
    assert await ex.handle_action(key(), action(call_reported_at=999_000), 0) == rec.SENT
    assert sample(name, kind="SEND_SMS", result="sent", practice="maple-family") == before + 1
    assert sample(f"{FIRST}_count", scenario="NEW_PATIENT", practice="maple-family") >= 1


# ------------------------------------------------------------------ Faust: lag and table sizes
class _TP(tuple):
    topic = property(lambda self: self[0])
    partition = property(lambda self: self[1])


class _Consumer:
    def __init__(self, assigned, committed) -> None:
        self._assigned, self._committed_offset = assigned, committed

    def assignment(self):
        return self._assigned


class _App:
    def __init__(self, consumer, tables=None) -> None:
        self._consumer, self.tables = consumer, tables or {}


def test_consumer_lag_is_end_minus_committed_for_committed_assigned_partitions():
    calls, ticks, changelog, revoked = (
        _TP(("ns.call-events", 0)),
        _TP(("ns.ticks", 1)),
        _TP(("ns-streams-state-changelog", 0)),
        _TP(("ns.call-events", 3)),
    )
    consumer = _Consumer({calls, ticks, changelog}, {calls: 40, ticks: 9, changelog: None, revoked: 1})
    highwaters = {calls: 52, ticks: 8, changelog: 100, revoked: 5}
    # The changelog has no committed offset, the revoked partition is not assigned, and an
    # end offset read before the last commit never makes the lag negative.
    assert metrics.consumer_lag(_App(consumer), highwaters) == {("ns.call-events", 0): 12, ("ns.ticks", 1): 0}
    assert metrics.consumer_lag(_App(None), highwaters) == {}


def test_table_sizes_count_memory_stores_and_ask_rocksdb_for_its_estimate():
    class Memory:
        data = {"a": 1, "b": 2}

    class Db:
        def property_int_value(self, name):
            assert name == "rocksdb.estimate-num-keys"
            return 1000

    class Rocks:
        def _dbs_for_actives(self):
            return [Db(), Db()]

    class Table:
        def __init__(self, store) -> None:
            self._data = store

    app = _App(None, {"state": Table(Memory()), "sent-log": Table(Rocks()), "not-started": Table(None)})
    assert metrics.table_sizes(app) == {"state": 2, "sent-log": 2000}
