"""Many records in flight per sink process, one caller's in order (docs/sinks.md, "Lanes").

A lane per record key (`practice_id|caller`): the records of one key run one after another
in offset order, different keys at once, at most `limit` records accepted per process
(running, or waiting in their lane). Everything about one caller (sent-log entries,
consent, caps, the deferred index) is keyed by that caller, so lanes of different keys
share no state that order matters for.

Offsets. Records now finish out of order, and faust-streaming 0.15's consumer commits
the end of the first run of *consecutive* acknowledged offsets per partition
(`Consumer._new_offset`). It also reads a committed offset c as if record c were done
(acknowledged c + 1 with c in flight commits c + 2), and with no committed offset it
commits past anything. So:
  * records are acknowledged to Faust in offset order per partition: a finished record
    waits for the ones before it (the stream is `noack()`);
  * every offset commit is capped at the lowest record of the partition that is not
    finished (`floor`, the `_commit` wrapper), which also covers records Faust
    acknowledges by itself (the ones it skips during a rebalance).

Rebalances. Faust waits for every record it handed out to be acknowledged before it
gives partitions away (`Consumer.wait_empty`): the records in the lanes (at most `limit`)
finish first, as a single record in flight did before. A kill needs nothing: ATTEMPTING
is written before a request leaves, and nothing unfinished is committed. The bookkeeping
starts afresh at every assignment.

Records are not abandoned at a rebalance (acknowledged unfinished, commit held below
them): Faust records the offsets it *asked* to commit as committed, ignores later
acknowledgements below that, and refreshes it from the broker only for partitions that
have a committed offset, so a held commit could stay behind until the next record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

IN_FLIGHT = Gauge("ringback_sink_records_in_flight", "Action records accepted by the lanes and not finished yet")
COMMITS_CAPPED = Counter(
    "ringback_sink_commits_capped_total", "Offset commits held below an action record still in flight"
)


@dataclass
class _Slot:
    offset: int
    finish: Callable[[], None]
    done: bool = False


class Lanes:
    """Per-key lanes over one consumer's partitions. `submit` accepts a record (waiting for
    room); `floor` says how far a partition may be committed; `install` wraps the consumer's
    commit with it; `reset` at every assignment; `idle` waits until nothing is in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._room = asyncio.Semaphore(limit)
        self._tails: dict[Hashable, asyncio.Task] = {}  # key -> its last accepted record's task
        self._tasks: dict[Hashable, set[asyncio.Task]] = {}  # tp -> its records' tasks
        self._pending: dict[Hashable, deque[_Slot]] = {}  # tp -> accepted, not yet acknowledged, in order

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    async def submit(
        self, key: Hashable, tp: Hashable, offset: int, run: Callable[[], Awaitable[Any]], finish: Callable[[], None]
    ) -> None:
        """Accept the record at `offset` of `tp`: `run` starts once the key's earlier records
        are done; `finish` (acknowledge) is called once it and every earlier record of `tp`
        are done. Returns once accepted (waits while `limit` are in flight).
        The task is created here, so it inherits the caller's context (Faust's current
        event: table writes go to this record's partition)."""
        await self._room.acquire()
        slot = _Slot(offset, finish)
        pending = self._pending.setdefault(tp, deque())
        pending.append(slot)
        task = asyncio.create_task(self._run(key, tp, self._tails.get(key), run, slot, pending))
        self._tails[key] = task
        self._tasks.setdefault(tp, set()).add(task)
        IN_FLIGHT.inc()

    async def _run(
        self,
        key: Hashable,
        tp: Hashable,
        before: asyncio.Task | None,
        run: Callable[[], Awaitable[Any]],
        slot: _Slot,
        pending: deque[_Slot],
    ) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            if before is not None:
                await asyncio.wait([before])  # its outcome is its own business
            try:
                await run()
            except Exception:  # the handler dead-letters what it cannot do; this is a bug
                log.exception("an action record failed outside its handler")
            slot.done = True
            while pending and pending[0].done:
                pending.popleft().finish()
        finally:
            self._tasks[tp].discard(me)
            if self._tails.get(key) is me:
                del self._tails[key]
            self._room.release()
            IN_FLIGHT.dec()

    def floor(self, tp: Hashable) -> int | None:
        """The lowest offset of `tp` that may not be committed past (None: no limit)."""
        low = None
        for slot in self._pending.get(tp, ()):
            if not slot.done and (low is None or slot.offset < low):
                low = slot.offset
        return low

    def cap(self, offsets: Mapping[Any, int]) -> dict:
        """`offsets` with each capped at its partition's floor."""
        allowed = {}
        for tp, offset in offsets.items():
            low = self.floor(tp)
            if low is not None and offset > low:
                COMMITS_CAPPED.inc()
                log.warning("%s: Faust asked to commit offset %d, record %d is in flight: held back", tp, offset, low)
                offset = low
            allowed[tp] = offset
        return allowed

    def reset(self) -> None:
        """A new assignment: Faust reads every partition again from its committed offset.
        Records of the old assignment still finishing keep their own queues."""
        self._pending = {}

    def install(self, consumer: Any) -> None:
        """Cap the Faust consumer's offset commits (`_commit`, faust-streaming 0.15: the call
        that sends offsets to the broker outside transactions) at `floor`. Idempotent."""
        if consumer is None or getattr(consumer, "_ringback_lanes", None) is self:
            return
        original = consumer._commit

        async def _commit(offsets: Mapping[Any, int]) -> bool:
            return await original(self.cap(offsets))

        consumer._commit = _commit
        consumer._ringback_lanes = self

    async def idle(self, tp: Hashable | None = None) -> None:
        """Until every accepted record (of partition `tp`, or of all) has finished."""
        while tasks := [t for p, ts in self._tasks.items() if tp is None or p == tp for t in ts]:
            await asyncio.wait(tasks)
