"""Durable gate timers (workflow/timers.py) and the TICK that fires them (workflow/gates.py)."""

from __future__ import annotations

import json

from ringback.workflow import timers
from ringback.workflow.inputs import Workflow
from ringback.workflow.state import DELETE, Tx
from tests.workflow.harness import DAY, HOUR, KNOWN, NEW_CALLER, T0, Harness


class DictStore:
    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value) -> None:
        self.data[key] = value

    def delete(self, key) -> None:
        self.data.pop(key, None)


def test_the_first_index_entry_sets_the_cursor_and_buckets_are_never_behind_it():
    s = DictStore()
    bucket = (T0 + 5_500) // 1000
    assert timers.index(s, 2, "c|p|+1", "followup", 1, T0 + 5_500, T0) == f"t|2|{bucket}|0"
    assert timers.index(s, 2, "c|p|+2", "followup", 1, T0 + 5_700, T0) == f"t|2|{bucket}|1"
    assert s.data[f"t|2|{bucket}"] == {"n": 2} and s.data[f"t|2|{bucket}|1"] == ["c|p|+2", "followup", 1]
    assert timers.meta(s, 2)["cursor"] == T0 // 1000 - 1
    # Due "in the past" by another worker's clock: goes to the first bucket still ahead.
    timers.set_cursor(s, 2, T0 // 1000 + 10)
    assert timers.index(s, 2, "c|p|+1", "expire", 2, T0, T0) == f"t|2|{T0 // 1000 + 11}|0"
    assert timers.target_bucket(s, 2, T0) == T0 // 1000 + 11


def test_due_entries_reads_past_buckets_to_delete_and_the_current_one_to_keep():
    s = DictStore()
    for i, due in enumerate((T0 + 1_000, T0 + 3_000, T0 + 4_100, T0 + 4_900, T0 + 9_000)):
        timers.index(s, 0, f"c|p|+{i}", "followup", 1, due, T0)
    past, current, done, cursor = timers.due_entries(s, 0, T0 + 4_200)
    assert [e[0] for e in past] == ["c|p|+0", "c|p|+1"]
    assert [e[0] for e in current] == ["c|p|+2", "c|p|+3"]  # the second of T0+4.2 s: not deleted yet
    b1, b3 = (T0 + 1_000) // 1000, (T0 + 3_000) // 1000
    assert done == [f"t|0|{b1}|0", f"t|0|{b1}", f"t|0|{b3}|0", f"t|0|{b3}"]
    assert cursor == (T0 + 4_200) // 1000 - 1
    assert timers.due_entries(DictStore(), 0, T0) == ([], [], [], None)


def test_arming_many_timers_in_one_second_writes_small_records():
    h = Harness()
    callers = [f"+1415555{n:04d}" for n in range(300)]
    for c in callers:
        h.missed(c)
    sizes = [len(json.dumps(v)) for k, v in h.table.items() if k.startswith("t|")]
    assert max(sizes) < 80
    h.at(45_000)
    assert len([a for a in h.actions if a["step"] == "first_sms"]) == 300


def test_ticks_fire_within_one_tick_interval_of_due():
    h = Harness(windows={"first_response_hold": 3})
    h.missed()
    h.advance(10_000, step=250)  # the workers' tick interval
    name, lag = h.fired[0]
    assert name == "first_response" and 0 <= lag < 250


def test_a_timer_not_due_yet_in_the_current_second_waits_for_a_later_tick():
    h = Harness(windows={"first_response_hold": 1})
    h.now = T0 - T0 % 1000 + 100  # 100 ms into a second
    h.missed()  # due 900 ms into the next second
    h.advance(1_500, step=500)  # ticks at +600 (not due), +1100 (due)
    assert h.fired == [("first_response", 0)]
    assert h.steps() == ["first_sms", "notify_coordinator"]


def test_everything_due_during_downtime_fires_once_at_the_first_tick_after():
    h = Harness()
    callers = [f"+1415555{n:04d}" for n in range(12)]
    for c in callers:
        h.missed(c)
    h.now = T0 + 3 * HOUR  # nobody ticked for 3 hours (every worker down)
    h.tick()
    for c in callers:
        cid = h.case_id(c)
        for step in ("first_sms", "notify_coordinator", "second_sms", "callback_task"):
            assert [a["action_id"] for a in h.actions].count(f"{cid}:{step}") == 1
    h.advance(DAY)
    assert len([o for o in h.outcomes if o["final"]]) == 12


def test_a_tick_fires_only_the_timers_of_its_own_partition():
    h = Harness()
    callers = [f"+1415555{n:04d}" for n in range(20)]
    for c in callers:
        h.missed(c)
    h.now = T0 + 45_000
    target = h.partition(callers[0])
    h.run(target, lambda wf: wf.on_tick())
    fired_for = {a["recipient"] for a in h.actions if a["kind"] == "SEND_SMS"}
    assert fired_for == {c for c in callers if h.partition(c) == target}


def test_cancelled_timers_leave_stale_entries_that_are_skipped_and_cleaned_up():
    h = Harness()
    h.missed()
    h.answered()  # suppressed: the case and its timers are gone, the index entries stay
    h.now = T0 + DAY + 1000
    h.tick()
    assert h.actions == [] and h.fired == []
    h.now += 1000
    h.tick()
    assert not [k for k in h.table if k.startswith("t|")]


def test_arming_writes_the_index_before_the_case_and_a_tick_writes_cases_before_deletions():
    h = Harness()
    p = h.partition(NEW_CALLER)
    tx = h.run(p, lambda wf: wf.on_call_event(_event(h)))
    order = list(tx.writes)
    assert order.index(f"c|maple-family|{NEW_CALLER}") > max(i for i, k in enumerate(order) if k.startswith("t|"))
    h.now = T0 + 46_000  # the hold's second is over: its bucket is handled and deleted
    tx = h.run(p, lambda wf: wf.on_tick())
    order = list(tx.writes)
    case_at = order.index(f"c|maple-family|{NEW_CALLER}")
    deletions = [i for i, k in enumerate(order) if tx.writes[k] is DELETE]
    assert deletions and case_at < min(deletions)
    assert order[-1] == f"m|{p}"


def _event(h: Harness) -> dict:
    return {
        "event_id": "twilio:CA1:no-answer",
        "provider": "twilio",
        "event_type": "CALL",
        "outcome": "MISSED",
        "provider_status": "no-answer",
        "practice_id": "maple-family",
        "caller": NEW_CALLER,
        "called": "+13125550100",
        "direction": "INBOUND",
        "provider_call_id": "CA1",
        "occurred_at": h.now,
        "received_at": h.now,
        "duration_s": None,
        "recording_url": None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
    }


def test_a_crash_after_any_prefix_of_a_ticks_writes_fires_every_step_exactly_once():
    """A crash keeps a prefix of a partition's changelog. Whatever prefix of a firing
    tick's writes survived, re-running (with the records already in the log dropped, as
    the topology does after a takeover) emits each step once and loses no gate."""
    base = Harness()
    base.patient(KNOWN)
    base.flag(KNOWN)
    base.missed(NEW_CALLER)
    base.missed(KNOWN)
    base.advance(HOUR)
    p = base.partition(NEW_CALLER)
    snapshot = json.loads(json.dumps(base.table))
    before = len(base.actions)
    base.now = T0 + 2 * HOUR
    tx = Tx(lambda k: snapshot.get(k))
    Workflow(tx, base.directory, base.now, p).on_tick()
    first_run = [a["action_id"] for _, a in tx.actions]
    assert first_run  # the tick fired something
    writes = list(tx.writes.items())
    for cut in range(len(writes) + 1):
        h = Harness()
        h.table = json.loads(json.dumps(snapshot))
        for k, v in writes[:cut]:
            if v is DELETE:
                h.table.pop(k, None)
            else:
                h.table[k] = json.loads(json.dumps(v))
        h.now = base.now
        h.advance(2 * DAY)
        again = [a["action_id"] for a in h.actions if a["action_id"] not in first_run]
        all_ids = first_run + again
        assert len(all_ids) == len(set(all_ids)), cut
        # No gate lost: the new-patient case escalated and both cases ended.
        assert any(i.endswith(":second_sms") for i in all_ids), cut
        finals = [o for o in h.outcomes if o["final"]]
        assert len(finals) == 2, (cut, [o["state"] for o in h.outcomes])
    assert before == len(base.actions)
