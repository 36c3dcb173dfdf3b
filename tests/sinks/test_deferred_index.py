"""The deferred SMS index by number (answered call -> cancel without scanning the table),
its crash safety (the index may list more than the table, never less), and the cached
metric children. No broker: dict tables, see test_executor.py."""

from __future__ import annotations

import asyncio
from datetime import datetime

from prometheus_client import REGISTRY

from ringback.sinks import records as rec
from ringback.sinks.executor import (
    ACTIONS_DONE,
    INDEX_PREFIX,
    ActionExecutor,
    Tables,
    child,
    deferred_index_key,
    is_index_key,
)
from tests.sinks.harness import CALLER, CHICAGO, action, key, make

EVENING = datetime(2026, 11, 24, 22, 30, tzinfo=CHICAGO).timestamp()
OPENING = datetime(2026, 11, 25, 8, 0, tzinfo=CHICAGO).timestamp()
OTHER = "+14155550999"


class ScanCounting(dict):
    """A deferred table that counts full scans (`items()`)."""

    scans = 0

    def items(self):
        self.scans += 1
        return super().items()


def make_counting(practices_, now=EVENING) -> ActionExecutor:
    ex = make(practices_, now=now)
    ex.t.deferred = ScanCounting()
    return ex


def answered(caller=CALLER, at_s=EVENING + 60) -> dict:
    return {
        "event_type": "CALL",
        "direction": "INBOUND",
        "outcome": "ANSWERED",
        "practice_id": "maple-family",
        "caller": caller,
        "occurred_at": int(at_s * 1000),
    }


def index_of(ex: ActionExecutor, caller=CALLER) -> list[str] | None:
    value = ex.t.deferred.get(deferred_index_key("maple-family", caller))
    return None if value is None else value["action_ids"]


def test_index_keys_cannot_be_action_ids():
    assert is_index_key(deferred_index_key("maple-family", CALLER))
    assert not is_index_key(action()["action_id"]) and not is_index_key(None)
    # Practice ids are [a-z0-9][a-z0-9-]+ (domain/practice.py): no action id starts with the prefix.
    assert not INDEX_PREFIX[0].isalnum()


async def test_deferral_writes_the_index_before_the_entry_and_firing_removes_it_after(practices):
    ex = make(practices, now=EVENING)
    a, b = action(now=EVENING), action(now=EVENING)
    assert await ex.handle_action(key(), a, 2) == rec.DEFERRED
    assert await ex.handle_action(key(), b, 2) == rec.DEFERRED
    assert index_of(ex) == [a["action_id"], b["action_id"]]
    writes = [(e[1], e[2]) for e in ex.fx.log if e[0] == "persist" and e[1] == "deferred"]
    ikey = deferred_index_key("maple-family", CALLER)
    assert writes == [
        ("deferred", ikey),
        ("deferred", a["action_id"]),
        ("deferred", ikey),
        ("deferred", b["action_id"]),
    ]
    ex.clock.set(OPENING)
    assert await ex.fire_due(2) == 2  # the index entry is not mistaken for a deferred SMS
    assert len(ex.sms.sent) == 2
    assert dict(ex.t.deferred) == {}  # entries and index gone: nothing left in the table


async def test_answered_call_reads_only_its_index_no_scan(practices):
    ex = make_counting(practices)
    a = action(now=EVENING)
    other = action(caller=OTHER, now=EVENING)
    await ex.handle_action(key(), a, 1)
    await ex.handle_action(key(OTHER), other, 1)
    assert await ex.on_call_event(key("+14155550777"), answered("+14155550777"), 1) is None
    scans = ex.t.deferred.scans  # the first answered call of a partition indexes older entries once
    assert await ex.on_call_event(key("+14155550888"), answered("+14155550888"), 1) is None
    assert await ex.on_call_event(key(), answered(), 1) == "CANCELLED"
    assert ex.t.deferred.scans == scans
    assert ex.t.sent_log[a["action_id"]]["state"] == rec.SUPPRESSED
    assert ex.fx.outcomes[-1]["reason"].startswith("cancel-if-answered")
    assert index_of(ex) is None and a["action_id"] not in ex.t.deferred
    assert index_of(ex, OTHER) == [other["action_id"]]
    assert await ex.on_call_event(key(), answered(), 1) is None  # nothing left for this caller
    ex.clock.set(OPENING)
    await ex.fire_due(1)
    assert [s["to"] for s in ex.sms.sent] == [OTHER]
    assert dict(ex.t.deferred) == {}


async def test_cancel_keeps_the_old_rules(practices):
    ex = make(practices, now=EVENING)
    later = action(now=EVENING + 120)  # created after the answered call: stays
    elsewhere = action(now=EVENING)  # another partition: not this event's to touch
    await ex.handle_action(key(), later, 1)
    await ex.handle_action(key(), elsewhere, 3)
    assert await ex.on_call_event(key(), answered(at_s=EVENING + 60), 1) is None
    assert set(index_of(ex)) == {later["action_id"], elsewhere["action_id"]}
    assert ex.t.sent_log[later["action_id"]]["state"] == rec.DEFERRED
    assert ex.t.sent_log[elsewhere["action_id"]]["state"] == rec.DEFERRED


async def test_index_listing_a_gone_entry_is_skipped_and_cleaned(practices):
    """A crash between the index write and the entry (or between deleting the entry and
    updating the index) leaves an id the table does not hold."""
    ex = make(practices, now=EVENING)
    a = action(now=EVENING)
    await ex.handle_action(key(), a, 1)
    ikey = deferred_index_key("maple-family", CALLER)
    ex.t.deferred[ikey] = {"action_ids": ["maple-family:gone:first_sms", a["action_id"]]}
    assert await ex.on_call_event(key(), answered(), 1) == "CANCELLED"
    assert ikey not in ex.t.deferred
    ex.t.deferred[ikey] = {"action_ids": ["maple-family:gone:first_sms"]}
    assert await ex.on_call_event(key(), answered(), 1) is None
    assert ikey not in ex.t.deferred


async def test_entries_deferred_before_the_index_existed_are_indexed_and_cancelled(practices):
    ex = make(practices, now=EVENING)
    a = action(now=EVENING)
    await ex.handle_action(key(), a, 1)
    del ex.t.deferred[deferred_index_key("maple-family", CALLER)]  # as an older version wrote it
    assert await ex.on_call_event(key(), answered(), 1) == "CANCELLED"
    assert ex.t.sent_log[a["action_id"]]["state"] == rec.SUPPRESSED
    assert dict(ex.t.deferred) == {}


async def test_removal_never_drops_an_id_deferred_again_meanwhile(practices):
    ex = make(practices, now=EVENING)
    a = action(now=EVENING)
    ikey = deferred_index_key("maple-family", CALLER)
    ex.t.deferred[ikey] = {"action_ids": [a["action_id"]]}
    ex._inflight.add(a["action_id"])  # being deferred by the actions agent: index written, entry not yet
    await ex._index_remove(ikey, {a["action_id"]})
    assert index_of(ex) == [a["action_id"]]
    ex._inflight.discard(a["action_id"])
    ex.t.deferred[a["action_id"]] = {"action": a, "caller": CALLER, "due_at": 0, "partition": 1}
    await ex._index_remove(ikey, {a["action_id"]})  # the entry exists (again): keep listing it
    assert index_of(ex) == [a["action_id"]]
    del ex.t.deferred[a["action_id"]]
    await ex._index_remove(ikey, {a["action_id"]})
    assert index_of(ex) is None


async def test_a_tick_cannot_fire_an_sms_while_the_answered_call_cancels_it(practices):
    ex = make(practices, now=EVENING)
    a = action(now=EVENING)
    await ex.handle_action(key(), a, 1)
    ex.clock.set(OPENING)
    gate = asyncio.Event()
    persist = ex.fx.persist

    async def slow_persist(table, k, value):
        if table == "sent_log" and (value or {}).get("state") == rec.SUPPRESSED:
            await gate.wait()  # the cancel's first write is slow: the TICK comes meanwhile
        await persist(table, k, value)

    ex.fx.persist = slow_persist
    cancel = asyncio.create_task(ex.on_call_event(key(), answered(at_s=OPENING - 60), 1))
    await asyncio.sleep(0)
    await ex.fire_due(1)
    gate.set()
    assert await cancel == "CANCELLED"
    assert ex.sms.sent == [] and ex.t.sent_log[a["action_id"]]["state"] == rec.SUPPRESSED
    assert dict(ex.t.deferred) == {}


def test_cached_metric_children_are_the_registered_ones():
    c = child(ACTIONS_DONE, "SEND_SMS", "sent", "")
    assert c is child(ACTIONS_DONE, "SEND_SMS", "sent", "") and c is ACTIONS_DONE.labels("SEND_SMS", "sent", "")
    labels = {"kind": "SEND_SMS", "result": "sent", "practice": ""}
    before = REGISTRY.get_sample_value("ringback_sink_actions_total", labels) or 0
    c.inc()
    assert REGISTRY.get_sample_value("ringback_sink_actions_total", labels) == before + 1


def test_tables_still_take_five_mappings():
    assert Tables({}, {}, {}, {}, {}).deferred == {}
