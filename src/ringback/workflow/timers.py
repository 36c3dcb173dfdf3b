"""Durable gate timers in the changelog-backed state table: arming a case's timers, the
due-index that finds them, and which are due (what a due timer does: workflow/gates.py).

Faust tables can only be written while an event is processed, so a timer cannot
write state by itself. Instead:

* The case keeps its pending timers: `case["timers"][name] = [due_ms, generation]`,
  and `case["indexed"]`: the due time it is indexed at (its earliest timer).
* A due-index in the same table finds the cases, one bucket per second and partition:
  `t|<partition>|<second>` holds `{"n": count}` and `t|<partition>|<second>|<i>` the
  i-th entry `[caller_key, "case", indexed_due]`. One small record per entry, so
  indexing costs the same however many are due in that second; one entry per case
  and due time (not per timer), written when the case's earliest due time changes.
  The partition prefix
  keeps buckets of different partitions apart (one in-memory dict holds them all
  with `memory://`; RocksDB keeps one database per partition anyway).
* `m|<partition>` holds the cursor: the last second whose bucket was fully handled.
* Every worker sends a TICK to each partition of the tick topic it is assigned
  (worker/topology.py); the agent that owns the partition reads it *in order* with
  the other events of that partition (a cancel ahead of the TICK is handled first)
  and fires everything due up to now (`due_entries`) - not only the last interval:
  ticks are missed during downtime and a worker taking over must catch up.
* Before firing, the workflow re-checks the entry against the case (still open, still
  indexed at that time); it fires every timer of the case that is due, removes them
  from the case and indexes the case at its next due time. Buckets of past
  seconds are deleted once handled; the current second's bucket is read again by
  the next ticks (entries already fired are then stale and skipped) and deleted when
  its second is over. Action ids are `case_id:step`, so a re-fire after a crash
  yields the same id (and the topology drops ids it finds already in the log).

Write order inside one event matters because a crash keeps a prefix of a partition's
changelog: an index entry is written before its bucket count and both before the case
that refers to them (an index entry without its timer is ignored); a tick writes the
cases it fired before it deletes buckets (in reverse slot order), and the cursor last (a cursor that did not
advance only re-reads a few buckets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ringback.workflow.run import Run
from ringback.workflow.state import CallerState, Case

BUCKET_MS = 1000

# The timers of a case.
FIRST_RESPONSE = "first_response"  # the cancel-if-answered hold, then the first response
FOLLOWUP = "followup"  # new patient: 2 h without a reply or booking
ESCALATION = "escalation"  # urgent: 45 min without the clinical callback
PROTECT = "protect"  # reschedule: 4 h, the appointment still to protect
EXPIRE = "expire"  # case_expiry (24 h): the case closes


class Store(Protocol):
    def get(self, key: str): ...
    def set(self, key: str, value) -> None: ...
    def delete(self, key: str) -> None: ...


def bucket_key(partition: int, bucket: int) -> str:
    return f"t|{partition}|{bucket}"


def slot_key(partition: int, bucket: int, i: int) -> str:
    return f"t|{partition}|{bucket}|{i}"


def meta_key(partition: int) -> str:
    return f"m|{partition}"


def meta(store: Store, partition: int) -> dict:
    return store.get(meta_key(partition)) or {}


def index(store: Store, partition: int, caller_key: str, name: str, generation: int, due_ms: int, now_ms: int) -> str:
    """Add a due-index entry for a timer of the case at `caller_key`; returns its slot key."""
    m = meta(store, partition)
    cursor = m.get("cursor")
    if cursor is None:
        m["cursor"] = now_ms // BUCKET_MS - 1
        # The cursor is written first: the bucket below is then always ahead of it.
        store.set(meta_key(partition), m)
        cursor = m["cursor"]
    # Never behind the cursor (clocks of two workers may differ by a little).
    bucket = max(due_ms // BUCKET_MS, cursor + 1)
    count = (store.get(bucket_key(partition, bucket)) or {}).get("n", 0)
    key = slot_key(partition, bucket, count)
    store.set(key, [caller_key, name, generation])
    store.set(bucket_key(partition, bucket), {"n": count + 1})
    return key


def target_bucket(store: Store, partition: int, due_ms: int) -> int:
    """The bucket an entry due at `due_ms` belongs in (never behind the cursor)."""
    cursor = meta(store, partition).get("cursor")
    bucket = due_ms // BUCKET_MS
    return bucket if cursor is None else max(bucket, cursor + 1)


def due_entries(store: Store, partition: int, now_ms: int) -> tuple[list[list], list[list], list[str], int | None]:
    """The index entries a TICK at `now_ms` has to look at.

    Returns (past, current, done_keys, new_cursor): `past` are the entries of the
    buckets of seconds already over (all due, except entries a skewed clock placed
    early: the caller re-indexes those), `current` those of the current second (some
    may not be due yet: they stay), `done_keys` the keys of the past buckets, to delete
    once the entries are handled, and the cursor to store at the end (None when nothing
    was ever indexed in this partition)."""
    cursor = meta(store, partition).get("cursor")
    if cursor is None:
        return [], [], [], None
    now_bucket = now_ms // BUCKET_MS
    past: list[list] = []
    current: list[list] = []
    done: list[str] = []
    for bucket in range(cursor + 1, now_bucket + 1):
        count = (store.get(bucket_key(partition, bucket)) or {}).get("n", 0)
        if not count:
            continue
        entries = [store.get(slot_key(partition, bucket, i)) for i in range(count)]
        entries = [e for e in entries if e]
        if bucket < now_bucket:
            past.extend(entries)
            done += [slot_key(partition, bucket, i) for i in range(count)] + [bucket_key(partition, bucket)]
        else:
            current.extend(entries)
    return past, current, done, max(cursor, now_bucket - 1)


def set_cursor(store: Store, partition: int, cursor: int) -> None:
    m = meta(store, partition)
    if m.get("cursor") != cursor:
        m["cursor"] = cursor
        store.set(meta_key(partition), m)


def oldest_overdue(
    read, partition: int, until_ms: int, pending, max_buckets: int = 3600, max_entries: int = 1000
) -> int | None:
    """The due time of the oldest index entry of `partition` due at or before `until_ms`
    that no TICK has handled yet and `pending(entry)` says still stands, or None.

    For the `ringback_timers_overdue_seconds` gauge (worker/topology.py), read outside
    the agent (`read(key)` -> value or None, no writes). Looks at the buckets after the
    cursor only, oldest first: when ticks are handled in time that range is empty. At most
    `max_buckets` buckets and `max_entries` due entries are read; past that the start of
    the bucket reached is returned (a lower bound of the due time: an upper bound of the lag)."""
    cursor = (read(meta_key(partition)) or {}).get("cursor")
    if cursor is None:
        return None
    last = until_ms // BUCKET_MS
    looked = 0
    for bucket in range(cursor + 1, min(last, cursor + max_buckets) + 1):
        count = (read(bucket_key(partition, bucket)) or {}).get("n", 0)
        oldest = None
        for i in range(count):
            entry = read(slot_key(partition, bucket, i))
            if not entry or entry[2] > until_ms:
                continue
            looked += 1
            if pending(entry) and (oldest is None or entry[2] < oldest):
                oldest = entry[2]
            if looked >= max_entries:
                return oldest if oldest is not None else bucket * BUCKET_MS
        if oldest is not None:
            return oldest
    return None


# ------------------------------------------------------------------ the timers of a case
def arm(case: Case, name: str, due_ms: int) -> None:
    """Set (or move) a timer of the case; it is indexed when the case is written (`save_caller`)."""
    case["gen"] += 1
    case["timers"][name] = [due_ms, case["gen"]]


def next_due(case: Case, now_ms: int) -> str | None:
    """The case's timer that is due first, or None when none is due at `now_ms`."""
    due = sorted((t[0], name) for name, t in case["timers"].items() if t[0] <= now_ms)
    return due[0][1] if due else None


def save_caller(run: Run, ck: str, state: CallerState) -> None:
    """Write the caller; first index the case at its next due timer if it is not yet.

    One index entry per case (not per timer): it says "look at this case at that
    second"; the tick then fires whatever of the case is due and indexes it again."""
    case = state["case"]
    if case is not None and case["timers"]:
        due = min(t[0] for t in case["timers"].values())
        if case.get("indexed") != due:
            index(run.tx, run.partition, ck, "case", due, due, run.now)
            case["indexed"] = due
    run.tx.set(ck, state)


def index_entry_pending(read: Callable[[str], Any], entry: list) -> bool:
    """Whether a due-index entry `[caller_key, "case", indexed]` still stands for pending
    timers: the check a TICK makes before firing (workflow/gates.py)."""
    state = read(entry[0])
    case = state.get("case") if state else None
    if not case:
        return False
    return case.get("indexed") == entry[2] and bool(case.get("timers"))
