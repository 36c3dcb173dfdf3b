"""Local table state that heals itself: a store out of step with its changelog is wiped and restored.

A RocksDB table store remembers, per changelog partition, the offset of the last changelog
record it applied, and a restarted worker reads the changelog on from there. When the
changelog was created anew (a restored or migrated cluster, a re-created dev broker, a
state folder reused against another broker) that offset can lie beyond the changelog's
end: faust-streaming then stops the worker with `ConsistencyError` ("The persisted offset
for changelog topic partition ... is higher than the last offset in that topic"), again at
every restart. Its check even misses the cases where the changelog's last offset is 0 or
the stored offset is 0 (it tests both for truth), and the worker then serves stale state.

Kafka Streams' answer, done here per table partition: when the store's offset is beyond
the changelog's end, or below its start (records the store never applied were deleted),
the local copy cannot be trusted; wipe that partition's store and restore it from the
changelog, which is the state's source of truth. A WARNING names the table and the
partition, and `ringback_state_partitions_wiped_total{app, table}` counts it.

Wired in through Faust's `TableManager` setting (kafka/faust_app.py), so the stream
workers and the sinks both heal. Memory stores keep no offset and are never wiped.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from faust.stores import rocksdb as faust_rocksdb
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP
from prometheus_client import Counter
from rocksdict import WriteBatch

log = logging.getLogger(__name__)

WIPED = Counter(
    "ringback_state_partitions_wiped_total",
    "Local table partitions wiped and restored from their changelog, because the stored "
    "offset was beyond the changelog's end or below its start (topics created anew)",
    ["app", "table"],
)


def out_of_step(persisted: int, start: int | None, end: int | None) -> str | None:
    """Why a store whose last applied changelog offset is `persisted` cannot be read on
    from there, given the changelog partition's first offset `start` and end offset `end`
    (the offset the next record will get); None when it can (or the broker did not say)."""
    if end is None:
        return None
    if persisted >= end:
        return f"the store is at offset {persisted}, the changelog ends before it (end offset {end})"
    if start is not None and persisted < start - 1:
        return f"the store is at offset {persisted}, the changelog starts after it (first offset {start})"
    return None


def wipe_partition(store: Any, partition: int) -> bool:
    """Delete every key of one partition of a RocksDB (rocksdict) store, its stored offset
    included; False for a store this cannot wipe (it is left alone)."""
    if not isinstance(store, faust_rocksdb.Store) or not store.use_rocksdict:
        return False
    db = store._db_for_partition(partition)
    # The DB stays open (faust-streaming never closes one under a running app): delete its keys.
    batch = WriteBatch(raw_mode=True)
    for key in db.keys():
        batch.delete(key)
    db.write(batch)
    store._key_index.clear()  # a cache of key -> partition: may point into the wiped partition
    return True


class HealingRecovery(Recovery):
    """Faust's table recovery, checking each assigned partition's stored offset against the
    changelog before reading it (actives and standbys: both read their offsets here)."""

    async def _build_offsets(self, consumer: Any, tps: set[TP], destination: Any, title: str) -> None:
        await self._wipe_out_of_step(consumer, tps, destination)
        await super()._build_offsets(consumer, tps, destination, title)

    async def _wipe_out_of_step(self, consumer: Any, tps: set[TP], destination: MutableMapping) -> None:
        stored = {tp: destination[tp] for tp in tps if destination.get(tp) is not None}
        if not stored:
            return
        ends = await consumer.highwaters(*stored)
        starts = await consumer.earliest_offsets(*stored)
        for tp, offset in sorted(stored.items()):
            why = out_of_step(offset, starts.get(tp), ends.get(tp))
            if why is None:
                continue
            table: Any = self.tp_to_table[tp]  # a faust Table: `.data` is its store
            if not wipe_partition(table.data, tp.partition):
                log.warning("table %s partition %d: %s; this store cannot be wiped", table.name, tp.partition, why)
                continue
            destination[tp] = None  # read the changelog from its start
            WIPED.labels(self.app.conf.id, table.name).inc()
            log.warning(
                "table %s partition %d: local state wiped, restoring it from the changelog: %s "
                "(topics created anew, e.g. a new or restored broker)",
                table.name,
                tp.partition,
                why,
                extra={"table": table.name, "partition": tp.partition, "changelog": tp.topic},
            )


class HealingTableManager(TableManager):
    """Faust's table manager with `HealingRecovery` (Faust's `TableManager` setting), and
    without Faust's one-second sleep before the tables are registered."""

    async def on_start(self) -> None:
        # faust-streaming sleeps 1 s first so that tables declared while the app starts can
        # still join; ringback declares every table before the app starts (a later one fails
        # loudly: "Too late to add tables"), and that second delayed every start and takeover.
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = HealingRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
