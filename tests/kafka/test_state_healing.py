"""Local table state that heals itself (kafka/state_healing.py): when a store is out of step
with its changelog, and how one partition of a RocksDB store is wiped. The whole path, on a
broker created anew under a kept state folder: tests/kafka/test_state_healing_broker.py."""

from __future__ import annotations

import faust
import pytest
from faust.types import TP

from ringback.kafka.state_healing import HealingRecovery, HealingTableManager, out_of_step, wipe_partition


@pytest.mark.parametrize(
    "persisted,start,end,out",
    [
        (12, 0, 0, "ends before it"),  # the changelog created anew, empty (faust: ConsistencyError)
        (0, 0, 0, "ends before it"),  # faust's own check misses this one (0 is false)
        (12, 0, 1, "ends before it"),  # and this one (its highwater 0 is false): stale state served
        (12, 0, 12, "ends before it"),
        (11, 0, 12, None),  # the last record applied: nothing to read
        (5, 0, 12, None),
        (5, 6, 12, None),  # the records up to 5 deleted: reading on from 6 misses nothing
        (4, 6, 12, "starts after it"),  # record 5 deleted before the store applied it
        (4, None, 12, None),
        (12, 0, None, None),  # the broker did not say: leave it to Faust
    ],
)
def test_a_store_is_out_of_step_when_its_offset_is_past_the_end_or_before_the_start(persisted, start, end, out):
    why = out_of_step(persisted, start, end)
    assert (why is None) if out is None else (out in why)


def test_wiping_a_partition_empties_it_and_its_offset_and_leaves_the_others(tmp_path):
    app = faust.App("heal-unit", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("state", default=None, partitions=2)
    store = table.data
    tp0, tp1 = (TP(table.changelog_topic.get_topic_name(), p) for p in (0, 1))
    for partition, tp in ((0, tp0), (1, tp1)):
        db = store._db_for_partition(partition)
        db[b"caller-a"] = b"case-1"
        db[b"caller-b"] = b"case-2"
        store.set_persisted_offset(tp, 40 + partition)
    store._key_index[b"caller-a"] = 0
    assert wipe_partition(store, 0) is True
    assert list(store._db_for_partition(0).keys()) == [] and store.persisted_offset(tp0) is None
    assert store._db_for_partition(1)[b"caller-b"] == b"case-2" and store.persisted_offset(tp1) == 41
    assert b"caller-a" not in store._key_index


def test_memory_stores_are_never_wiped(tmp_path):
    app = faust.App("heal-unit-memory", store="memory://", datadir=str(tmp_path))
    table = app.Table("state", default=None, partitions=2)
    assert wipe_partition(table.data, 0) is False


def test_every_ringback_faust_app_recovers_its_tables_through_the_healing_recovery():
    from ringback.config.settings import Settings
    from ringback.sinks.app import make_app as sinks_app
    from ringback.worker.app import make_app as worker_app

    for make in (worker_app, sinks_app):
        app = make(Settings(ringback_namespace="heal-unit"))
        assert isinstance(app.tables, HealingTableManager) and isinstance(app.tables.recovery, HealingRecovery)
