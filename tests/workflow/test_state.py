"""The state table (workflow/state.py): `Tx`, the seen-set, and the stored shape of the records."""

from __future__ import annotations

import json

from ringback.workflow import state as st
from ringback.workflow.state import Tx
from tests.workflow.harness import DAY, KNOWN, NEW_CALLER, T0, Harness, hold


def test_tx_reads_its_own_writes_and_orders_writes_by_the_last_one():
    store = {"a": {"v": 1}}
    tx = Tx(store.get)
    got = tx.get("a")
    got["v"] = 99  # a read is a copy: the store is untouched
    assert store["a"] == {"v": 1}
    tx.set("b", 1)
    tx.set("a", {"v": 2})
    tx.delete("c")
    tx.set("b", 3)
    assert list(tx.writes) == ["a", "c", "b"] and tx.get("b") == 3 and tx.get("c") is None


def test_the_seen_set_keeps_the_last_256_ids_of_the_last_7_days():
    state = st.new_caller("maple-family", NEW_CALLER)
    st.remember(state, "old", T0 - 7 * DAY + 1)
    st.remember(state, "e0", T0)
    assert st.seen(state, "old") and st.seen(state, "e0")
    st.remember(state, "e1", T0 + 1)
    assert not st.seen(state, "old")  # 7 days old
    for i in range(2, 300):
        st.remember(state, f"e{i}", T0 + 1)
    assert not st.seen(state, "e0")  # pushed out by 256 newer ones
    assert len(state["seen"]) == st.SEEN_MAX and st.seen(state, "e299")


# A caller in the first-response hold and an EHR record, as the workflow stored them before it
# was split into modules: a worker restarted on this state carries on.
STORED = {
    "e|maple-family|+14155550188": {
        "patient": {
            "patient_id": "pat-1",
            "display_name": "Ann Example",
            "deceased": False,
            "assigned_provider": None,
            "updated_at": 1795446000000,
        },
        "appointments": {
            "a1": {"appointment_id": "a1", "start": 1795618800000, "status": "booked", "updated_at": 1795446000000}
        },
        "flags": {
            "f1": {
                "flag_id": "f1",
                "code": "callback-requested",
                "display": "Nurse line: call back",
                "priority": "PH",
                "status": "inactive",
                "callback_requested": True,
                "updated_at": 1795528800000,
            }
        },
    },
    "m|3": {"cursor": 1795532399},
    "t|3|1795532445|0": ["c|maple-family|+14155550123", "case", 1795532445000],
    "t|3|1795532445": {"n": 1},
    "c|maple-family|+14155550123": {
        "practice_id": "maple-family",
        "caller": "+14155550123",
        "case": {
            "case_id": "maple-family:a2e8d512cd1b30d3ff01",
            "practice_id": "maple-family",
            "caller": "+14155550123",
            "scenario": "NEW_PATIENT",
            "reason": "missed call from a number not in the patient records",
            "state": "OPEN",
            "opened_at": 1795532400000,
            "missed_at": 1795532399000,
            "call_reported_at": 1795532400000,
            "calls": 1,
            "call_ids": ["CA00000000000000000000000000000001"],
            "voicemail": False,
            "transcript": None,
            "steps": {},
            "timers": {"first_response": [1795532445000, 1], "expire": [1795618800000, 2]},
            "gen": 2,
            "first_response_at": None,
            "channel": None,
            "escalations": 0,
            "appointment": None,
            "tasks_done": {},
            "replied_at": None,
            "converted": False,
            "converted_at": None,
            "conversion_channel": None,
            "outcome_seq": {"OPEN": 1},
            "notes": [],
            "open_record": {
                "outcome_id": "maple-family:a2e8d512cd1b30d3ff01:OPEN",
                "case_id": "maple-family:a2e8d512cd1b30d3ff01",
                "practice_id": "maple-family",
                "scenario": "NEW_PATIENT",
                "state": "OPEN",
                "final": False,
                "missed_at": 1795532399000,
                "first_response_at": None,
                "response_latency_ms": None,
                "within_window": None,
                "escalations": 0,
                "converted": False,
                "converted_at": None,
                "conversion_channel": None,
                "channel": None,
                "reason": None,
                "at": 1795532400000,
                "record_type": "CASE",
                "action_id": None,
                "action_kind": None,
                "action_result": None,
            },
            "indexed": 1795532445000,
        },
        "seen": [["twilio:CA00000000000000000000000000000001:CALL:1", 1795532400000]],
        "sms_sent": [],
        "consent": {"opted_out": False, "changed_at": None, "optouts": 0, "source": None},
        "transcripts": {},
        "closed": [],
    },
}


def test_what_the_workflow_stores_has_the_shape_it_stored_before_and_its_records_name():
    h = Harness()
    h.patient(KNOWN)
    h.appointment(KNOWN, "a1", start=T0 + DAY, updated_at=T0 - DAY)
    h.flag(KNOWN, status="inactive")
    h.missed()
    # One field more since: the patient's preferred language (a record stored without it reads as None).
    expected = json.loads(json.dumps(STORED))
    expected["e|maple-family|+14155550188"]["patient"]["language"] = None
    # And how the caller responded (a case stored without it reads as not responded).
    case = expected["c|maple-family|+14155550123"]["case"]
    case["response_channel"] = None
    case["open_record"] |= {"responded": False, "responded_at": None, "response_channel": None}
    assert json.loads(json.dumps(h.table)) == expected
    caller = h.state(NEW_CALLER)
    # `calls` is written only for calls decided from several signals (workflow/calls.py),
    # `reply_task` once the caller replied by SMS (workflow/sms.py)
    assert set(caller) == set(st.CallerState.__annotations__) - {"calls", "reply_task"}
    assert set(caller["case"]) == set(st.Case.__annotations__)
    assert set(caller["consent"]) == set(st.Consent.__annotations__)
    ehr = h.table[st.ehr_key("maple-family", KNOWN)]
    assert set(ehr) == set(st.Ehr.__annotations__)
    assert set(ehr["patient"]) == set(st.Patient.__annotations__)
    assert set(ehr["appointments"]["a1"]) == set(st.Appointment.__annotations__)
    assert set(ehr["flags"]["f1"]) == set(st.Flag.__annotations__)


def test_a_worker_restarted_on_stored_state_carries_the_case_on():
    h = Harness()
    h.table = json.loads(json.dumps(STORED))
    h.at(hold())
    assert h.steps() == ["first_sms", "notify_coordinator"]
    assert {a["case_id"] for a in h.actions} == {"maple-family:a2e8d512cd1b30d3ff01"}
    assert [(o["outcome_id"], o["at"]) for o in h.outcomes] == [
        ("maple-family:a2e8d512cd1b30d3ff01:OPEN", T0),
        ("maple-family:a2e8d512cd1b30d3ff01:RESPONDED", T0 + hold()),
    ]
    assert h.state(NEW_CALLER)["sms_sent"] == [T0 + hold()]
