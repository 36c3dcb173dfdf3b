"""Exactly once as the patient sees it, compliance and retries, on the real broker.

Twilio is the local capture server (src/ringback/dev/fake_apis.py): it counts every
request exactly, can answer 500 / 429 / late (scripted), and lists the messages it
created like Twilio's Messages list, which the sink uses to settle ambiguous sends.
The sink's clock is a file the test sets (22:30, 08:00), and offsets are committed
only every 300 s, so every restart replays every action: the sent-log alone must
keep the patient from a second text.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ringback.dev.fake_apis import FakeApiServer
from ringback.kafka import topics
from tests.conftest import wait_for
from tests.support import kafka_tools
from tests.support.sink_stack import CHICAGO, NOON, SinkStack, make_action, sms_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def twilio():
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, twilio):
    s = SinkStack(
        kafka_bootstrap,
        "test_sinks_reliability",
        {"TWILIO_API_BASE_URL": twilio.url, "RINGBACK_SINKS_COMMIT_INTERVAL": "300"},
    )
    try:
        yield s.start()
    finally:
        s.close()


def posts_to(twilio: FakeApiServer, number: str) -> list:
    return [m for m in twilio.messages() if m.form.get("To") == number]


def lookups(twilio: FakeApiServer) -> list:
    return [r for r in twilio.requests if r.method == "GET" and "/Messages.json" in r.path]


def inbound_sms(caller: str, text: str, at_ms: int, practice: str = "maple-family") -> dict:
    return {
        "event_id": f"SM{abs(hash((caller, text, at_ms))):032d}"[:34] + ":sms",
        "provider": "twilio",
        "event_type": "SMS",
        "outcome": None,
        "provider_status": "received",
        "practice_id": practice,
        "caller": caller,
        "called": "+13125550100",
        "direction": "INBOUND",
        "provider_call_id": "SM" + "1" * 32,
        "occurred_at": at_ms,
        "received_at": at_ms,
        "duration_s": None,
        "recording_url": None,
        "transcript": None,
        "sms_body": text,
        "sms_id": None,
    }


def test_500_429_and_timeout_are_retried_and_end_sent_once(stack, twilio):
    caller = "+14155550201"
    # 500 (may or may not have been created: look it up), 429 (refused: resend), then an
    # answer slower than the sink's 1 s timeout (created at Twilio, the sink cannot know).
    twilio.script[:] = [500, (429, {"Retry-After": "1"}), ("hang", 3)]
    a = stack.send_action(make_action("SEND_SMS", caller, body=sms_body()), caller)
    stack.wait_result(a["action_id"], "SENT", 60)
    assert len(posts_to(twilio, caller)) == 3  # 500, 429, the slow one: no fourth, blind resend
    created = [m for m in twilio.created if m["to"] == caller]
    assert len(created) == 1  # what the patient gets
    assert len(lookups(twilio)) >= 2  # after the 500 and after the timeout
    assert stack.results(a["action_id"]) == ["SENT"]
    assert stack.metric("ringback_sink_retries_total", sink="twilio") >= 3
    assert stack.metric("ringback_sink_sms_lookups_total", result="found") >= 1
    sent = stack.changelog("sent-log")[a["action_id"]]
    assert sent["state"] == "SENT" and sent["sid"] == created[0]["sid"] and sent["attempts"] == 3


def test_retry_budget_spent_ends_dead_lettered_not_lost(stack, twilio):
    caller = "+14155550202"
    twilio.script[:] = [503, 503, 503, 503, 503]
    a = stack.send_action(make_action("SEND_SMS", caller, body=sms_body()), caller)
    outcome = stack.wait_result(a["action_id"], "DEAD_LETTERED", 60)
    twilio.script.clear()
    assert "retry budget spent after 4 attempts" in outcome["reason"]
    assert len(posts_to(twilio, caller)) == 4 and not [m for m in twilio.created if m["to"] == caller]
    letters = [d for d in stack.dead_letters() if d["source"] == "sinks.send_sms"]
    assert any(a["action_id"].encode() in d["raw"] for d in letters)
    assert stack.metric("ringback_sink_dead_letters_total", kind="SEND_SMS") >= 1


def test_sigkill_while_the_request_is_in_flight_sends_once(stack, twilio):
    caller = "+14155550203"
    twilio.script[:] = [("hang", 15)]  # created at Twilio, answer held back: then the kill
    a = stack.send_action(make_action("SEND_SMS", caller, body=sms_body()), caller)
    wait_for(lambda: posts_to(twilio, caller), 60, message="the SMS request at Twilio")
    stack.procs.kill("sinks")  # SIGKILL: no answer read, no sent-log SENT, no offset commit
    assert stack.results(a["action_id"]) == []
    gets_before = len(lookups(twilio))
    stack.start_sinks()
    stack.wait_result(a["action_id"], "SENT", 90)
    assert len(posts_to(twilio, caller)) == 1  # resolved by looking it up, not by resending
    assert len(lookups(twilio)) > gets_before
    assert stack.changelog("sent-log")[a["action_id"]]["sid"] == twilio.created[-1]["sid"]


def test_sigkill_after_sending_before_the_offset_commit_sends_nothing_twice(stack, twilio):
    caller = "+14155550204"
    a = stack.send_action(make_action("SEND_SMS", caller, body=sms_body()), caller)
    stack.wait_result(a["action_id"], "SENT", 60)
    assert len(posts_to(twilio, caller)) == 1
    # The action is carried out but its offset is not committed (commits every 300 s).
    ends = kafka_tools.end_offsets(stack.bootstrap, stack.topic(topics.ACTIONS))
    committed = kafka_tools.committed_offsets(stack.bootstrap, f"{stack.ns}-sinks", stack.topic(topics.ACTIONS))
    assert any(committed.get(p, -1) < end for p, end in ends.items() if end)
    total_before = len(twilio.messages())
    stack.procs.kill("sinks")
    stack.start_sinks()
    # Everything since the last commit is redelivered to the new process. A later action on
    # the same key (same partition, read after it) proves the replay has passed it.
    marker = stack.send_action(make_action("SEND_SMS", caller, body=sms_body() + " (2)"), caller)
    stack.wait_result(marker["action_id"], "SENT", 90)
    assert [m.form["Body"] for m in posts_to(twilio, caller)] == [sms_body(), sms_body() + " (2)"]
    assert len(twilio.messages()) == total_before + 1  # the replay sent nothing to anyone
    assert stack.metric("ringback_sink_duplicates_skipped_total", kind="SEND_SMS") >= 1
    assert stack.results(a["action_id"]) == ["SENT"]


def test_stop_then_new_sms_action_sends_no_sms_but_the_staff_task_happens(stack, twilio):
    caller = "+14155550205"
    now = int(NOON * 1000)
    stack.produce(topics.CALL_EVENTS, "call_event", f"maple-family|{caller}", inbound_sms(caller, "Stop", now))
    wait_for(
        lambda: (stack.changelog("consent").get(f"maple-family|{caller}") or {}).get("state") == "OUT",
        60,
        message="the opt-out recorded",
    )
    sms = stack.send_action(make_action("SEND_SMS", caller, body=sms_body(), now_ms=now + 1000), caller)
    task = stack.send_action(
        make_action(
            "CREATE_TASK",
            caller,
            recipient="scheduling_coordinator",
            now_ms=now + 1000,
            params={"role": "scheduling_coordinator"},
        ),
        caller,
    )
    suppressed = stack.wait_result(sms["action_id"], "SUPPRESSED", 60)
    assert suppressed["reason"] == "opted out"
    stack.wait_result(task["action_id"], "SENT", 60)
    stack.wait_result(sms["action_id"] + ":callback", "SENT", 60)  # the call-back instead of the SMS
    tasks = stack.tasks()
    assert tasks[task["action_id"]]["state"] == "OPEN"
    assert "opted out" in tasks[sms["action_id"] + ":callback"]["reason"]
    # The single confirmation text still goes out, once.
    confirm = [
        make_action(
            "SEND_SMS",
            caller,
            body="Maple Family Practice: you will get no more texts.",
            now_ms=now + 2000,
            params={"consent_confirmation": "1"},
        )
        for _ in range(2)
    ]
    for c in confirm:
        stack.send_action(c, caller)
    stack.wait_result(confirm[0]["action_id"], "SENT", 60)
    stack.wait_result(confirm[1]["action_id"], "SUPPRESSED", 60)
    assert [m.form["Body"] for m in posts_to(twilio, caller)] == [confirm[0]["body"]]
    # START opts back in.
    stack.produce(topics.CALL_EVENTS, "call_event", f"maple-family|{caller}", inbound_sms(caller, "START", now + 3000))
    wait_for(
        lambda: stack.changelog("consent")[f"maple-family|{caller}"]["state"] == "IN", 60, message="the opt-in recorded"
    )
    again = stack.send_action(make_action("SEND_SMS", caller, body=sms_body(), now_ms=now + 4000), caller)
    stack.wait_result(again["action_id"], "SENT", 60)
    assert len(posts_to(twilio, caller)) == 2


def test_sms_at_2230_practice_time_goes_out_at_0800(stack, twilio):
    caller = "+14155550206"
    evening = datetime(2026, 11, 24, 22, 30, tzinfo=CHICAGO)
    stack.set_clock(evening.timestamp())
    try:
        a = stack.send_action(
            make_action("SEND_SMS", caller, body=sms_body(), now_ms=int(evening.timestamp() * 1000)), caller
        )
        deferred = stack.wait_result(a["action_id"], "DEFERRED", 60)
        assert "quiet hours: deferred to Wed 25 Nov 08:00" in deferred["reason"]
        assert posts_to(twilio, caller) == []
        assert a["action_id"] in stack.changelog("deferred")
        stack.set_clock((evening + timedelta(hours=9, minutes=29)).timestamp())  # 07:59: still quiet
        ticks = stack.metric("ringback_sink_ticks_total")
        wait_for(
            lambda: stack.metric("ringback_sink_ticks_total") >= ticks + 12,
            30,
            message="every partition ticked at 07:59",
        )
        assert posts_to(twilio, caller) == [] and stack.results(a["action_id"]) == ["DEFERRED"]
        morning = datetime(2026, 11, 25, 8, 0, tzinfo=CHICAGO)
        stack.set_clock(morning.timestamp())
        sent = stack.wait_result(a["action_id"], "SENT", 60)
        assert len(posts_to(twilio, caller)) == 1
        assert morning.timestamp() * 1000 <= sent["at"] < (morning + timedelta(minutes=1)).timestamp() * 1000
        assert stack.changelog("deferred").get(a["action_id"]) is None
    finally:
        stack.set_clock(NOON)


def test_sigkill_with_many_sends_in_flight_sends_each_once_and_one_callers_in_order(kafka_bootstrap):
    """Many SMS in flight at once (different callers), one caller's second SMS waiting in its
    lane behind the first: SIGKILL while Twilio holds every answer, restart. Each action ends
    SENT with exactly one POST (the held ones settled by look-up), the caller's two in order."""
    twilio = FakeApiServer()
    # A Twilio timeout longer than the hold: every request is still in flight at the kill.
    s = SinkStack(
        kafka_bootstrap,
        "test_sinks_reliability_many",
        {
            "TWILIO_API_BASE_URL": twilio.url,
            "RINGBACK_SINKS_COMMIT_INTERVAL": "300",
            "RINGBACK_TWILIO_TIMEOUT_S": "6",
        },
    )
    try:
        s.start()
        callers = [f"+1415555{n:04d}" for n in range(300, 316)]
        twilio.script[:] = [("hang", 30)] * len(callers)  # created at Twilio, answers held back
        first = [s.send_action(make_action("SEND_SMS", c, body=sms_body()), c) for c in callers]
        second = s.send_action(make_action("SEND_SMS", callers[0], body=sms_body() + " (2)"), callers[0])
        wait_for(lambda: len(twilio.messages()) >= len(callers), 60, message="every first SMS in flight at once")
        assert [m.form["Body"] for m in posts_to(twilio, callers[0])] == [sms_body()]  # the second waits its turn
        s.procs.kill("sinks")  # SIGKILL: no answer read, nothing SENT, no offset committed
        assert all(s.results(a["action_id"]) == [] for a in first)
        s.start_sinks()
        for a in [*first, second]:
            s.wait_result(a["action_id"], "SENT", 120)
        for c in callers[1:]:
            assert len(posts_to(twilio, c)) == 1
        assert [m.form["Body"] for m in posts_to(twilio, callers[0])] == [sms_body(), sms_body() + " (2)"]
        assert len(twilio.messages()) == len(callers) + 1 == len(twilio.created)
        sent_log = s.changelog("sent-log")
        sids = {m["sid"] for m in twilio.created}
        assert {sent_log[a["action_id"]]["sid"] for a in [*first, second]} == sids
        assert s.metric("ringback_sink_sms_lookups_total", result="found") >= len(callers)
    finally:
        s.close()
        twilio.close()
