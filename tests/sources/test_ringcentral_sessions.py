"""Whole RingCentral telephony sessions → call events → the worker's verdict per call.

The sessions (tests/vendor/ringcentral/, README there) are notification streams built from
RingCentral's documentation and its published example streams. Each is mapped notification
by notification (`ringcentral.events`, as the gateway does) and the events are folded the
way the worker folds them (its duplicate-id check, then `workflow.calls.decide`), in
RingCentral's order, reversed, shuffled, and with every notification delivered twice."""

from __future__ import annotations

import copy
import json
import random

import pytest

from ringback.sources import ringcentral
from ringback.workflow import calls
from ringback.workflow.state import new_caller, remember, seen
from tests.support.webhooks import VENDOR

CALLER, DID, OTHER_PRACTICE = "+14155550123", "+16175550142", "+13125550100"
RECEIVED = 1_800_000_000_000


def session(name: str) -> list[dict]:
    return json.loads((VENDOR / "ringcentral" / f"{name}.json").read_text())


def mapped(notifications: list[dict]) -> list[dict]:
    return [e for n in notifications for e in ringcentral.events(n, "lakeside", [DID], RECEIVED)]


def verdict(events: list[dict]) -> tuple[str | None, list[str]]:
    """The call's outcome after every event, and each outcome it took on the way."""
    state = new_caller("lakeside", CALLER)
    changes: list[str] = []
    for event in events:
        assert calls.signalled(event) or event["direction"] == "OUTBOUND"
        if seen(state, event["event_id"]) or not calls.signalled(event):
            continue
        remember(state, event["event_id"], RECEIVED)
        changed = calls.decide(state, event, RECEIVED)
        if changed:
            changes.append(changed)
    return (changes[-1] if changes else None), changes


def orders(notifications: list[dict]) -> list[list[dict]]:
    """RingCentral's order, reversed, 30 shuffles, and each of those with every notification twice."""
    out = [notifications, notifications[::-1]]
    rng = random.Random(12)
    out += [rng.sample(notifications, len(notifications)) for _ in range(30)]
    return out + [[n for n in order for _ in (0, 1)] for order in out]


@pytest.mark.parametrize(
    "name, outcome",
    [
        ("inbound_ivr_person_answered", "ANSWERED"),
        ("inbound_ivr_ring_group_answered", "ANSWERED"),
        ("inbound_ivr_ring_group_missed", "MISSED"),
        ("inbound_voicemail", "VOICEMAIL"),
    ],
)
def test_a_session_gets_one_verdict_whatever_the_order_and_redelivery(name, outcome):
    for order in orders(session(name)):
        final, changes = verdict(mapped(order))
        assert final == outcome
        if outcome == "ANSWERED":
            # the IVR leg, the caller's own Answered and the member that did not pick up
            # are no misses: not even a MISSED the worker would have to hold and take back
            assert changes == ["ANSWERED"]


def test_every_event_of_an_inbound_session_is_a_leg_signal_of_the_session():
    for name in ("inbound_ivr_person_answered", "inbound_ivr_ring_group_missed", "inbound_voicemail"):
        notifications = session(name)
        events = mapped(notifications)
        assert events
        sid = notifications[0]["body"]["telephonySessionId"]
        for e in events:
            assert (e["provider_call_id"], e["caller"], e["called"]) == (sid, CALLER, DID)
            assert (e["direction"], e["signal"]) == ("INBOUND", "leg")
            assert e["leg_id"].startswith(f"p-{sid[2:]}-")


def test_the_ivr_and_the_callers_own_answered_party_say_nothing():
    notes = session("inbound_ivr_person_answered")
    ivr = [n for n in notes if n["body"]["parties"][0]["to"].get("name") == "IVR Menu 1001"]
    caller_answered = [
        n
        for n in notes
        if "extensionId" not in n["body"]["parties"][0] and n["body"]["parties"][0]["status"]["code"] == "Answered"
    ]
    assert ivr and caller_answered
    assert mapped(ivr + caller_answered) == []


def test_the_callers_own_party_is_outbound_and_finds_the_practice():
    """Today's first refused shape: direction Outbound, from = the caller, to = the practice."""
    [first] = session("inbound_ivr_ring_group_missed")[:1]
    party = first["body"]["parties"][0]
    assert (party["direction"], party["from"]["phoneNumber"], party["to"]["phoneNumber"]) == ("Outbound", CALLER, DID)
    assert ringcentral.practice_numbers(first)[0] == DID
    missed = copy.deepcopy(first)
    missed["body"]["parties"][0].update(status={"code": "Disconnected"}, missedCall=True)
    [event] = ringcentral.events(missed, "lakeside", [DID], RECEIVED)
    assert (event["outcome"], event["caller"], event["called"], event["direction"]) == (
        "MISSED",
        CALLER,
        DID,
        "INBOUND",
    )
    assert event["leg_id"] == party["id"] and event["signal"] == "leg"


def test_internal_calls_between_extensions_are_recognised_not_malformed():
    """Today's second refused shape: extension numbers such as 11101 instead of E.164."""
    notes = session("internal_call")
    assert all(ringcentral.internal_only(n) for n in notes)
    assert mapped(notes) == []
    for note in session("inbound_voicemail") + session("outbound_answered"):
        assert not ringcentral.internal_only(note)
    assert not ringcentral.internal_only({"body": {"parties": []}})
    assert not ringcentral.internal_only(None)


def test_a_call_out_is_answered_when_the_patient_answers():
    events = mapped(session("outbound_answered"))
    assert [(e["outcome"], e["direction"], e["caller"], e["signal"], e["leg_id"]) for e in events] == [
        ("ANSWERED", "OUTBOUND", CALLER, None, None)
    ]


def test_redelivery_gives_identical_records_and_one_event():
    for note in session("inbound_ivr_ring_group_missed"):
        assert ringcentral.events(note, "lakeside", [DID], RECEIVED) == ringcentral.events(
            copy.deepcopy(note), "lakeside", [DID], RECEIVED
        )
    ids = [e["event_id"] for e in mapped(session("inbound_ivr_ring_group_missed"))]
    assert set(ids) == {"ringcentral:s-a1c0ffee00000000000000000000000c:missed"}


def test_a_party_on_another_practices_number_is_left_out():
    note = copy.deepcopy(session("inbound_voicemail")[3])  # the VoiceMail notification
    assert [e["outcome"] for e in ringcentral.events(note, "lakeside", [DID], RECEIVED)] == ["VOICEMAIL"]
    note["body"]["parties"][0]["to"]["phoneNumber"] = OTHER_PRACTICE
    assert ringcentral.practice_numbers(note) == [OTHER_PRACTICE, CALLER]
    assert ringcentral.events(note, "lakeside", [DID], RECEIVED) == []
