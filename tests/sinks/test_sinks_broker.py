"""The sink workers on the real broker: Twilio through Prism (the official OpenAPI
contract, request validation on), Slack on a local HTTP endpoint, e-mail through a
real aiosmtpd server, the task queue read back from the tasks topic as the console reads it.

Actions are produced straight onto the actions topic (the stream app is rebuilt in
parallel). One sinks process serves the whole module.
"""

from __future__ import annotations

import json
from email import message_from_bytes

import pytest

from ringback.console.task_cache import TaskCache
from ringback.dev.fake_apis import FakeApiServer
from ringback.domain.tasks import update_record
from ringback.kafka import topics
from ringback.schemas import codec
from ringback.sinks.channels.email import message_id
from tests.conftest import ARTIFACTS, wait_for
from tests.support import kafka_tools
from tests.support.prism import PrismMock
from tests.support.sink_stack import (
    ACCOUNT_SID,
    NOON,
    SLACK_PATH,
    SinkStack,
    SmtpCapture,
    make_action,
    sms_body,
)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ the Prism module
@pytest.fixture(scope="module")
def stack(kafka_bootstrap):
    log_dir = ARTIFACTS / "test_sinks"
    log_dir.mkdir(parents=True, exist_ok=True)
    prism = PrismMock(log_dir / "prism.log").start()
    slack = FakeApiServer()
    smtp = SmtpCapture().start()
    s = SinkStack(
        kafka_bootstrap,
        "test_sinks",
        {
            "TWILIO_API_BASE_URL": prism.url,
            "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
            "MAPLE_SLACK_WEBHOOK": slack.url + SLACK_PATH,
            "RINGBACK_SMTP_FROM": "ringback@maple.example.org",
        },
    )
    s.prism, s.slack, s.smtp = prism, slack, smtp
    try:
        yield s.start()
    finally:
        s.close()
        prism.stop()
        slack.close()
        smtp.stop()


def test_each_action_kind_is_carried_out_once_against_twilio_contract(stack):
    caller, other = "+14155550101", "+16175550102"
    sms = make_action("SEND_SMS", caller, body=sms_body())
    sms_mg = make_action("SEND_SMS", other, practice="lakeside-peds", body=sms_body("Lakeside Pediatrics"))
    notify = make_action(
        "NOTIFY_STAFF",
        caller,
        recipient="slack:MAPLE_SLACK_WEBHOOK",
        body="Auto-SMS with the booking link already sent.",
    )
    alert = make_action(
        "ALERT_MANAGER",
        caller,
        recipient="email:manager@maple.example.org",
        scenario="URGENT_EXISTING",
        priority="URGENT",
        reason="urgent callback not completed within 45 min",
    )
    due = int(NOON * 1000) + 4 * 3600 * 1000
    task = make_action(
        "CREATE_TASK",
        caller,
        recipient="email:frontdesk@maple.example.org",
        due_at=due,
        priority="HIGH",
        reason="new patient, no reply within 2 h",
        params={"role": "scheduling_coordinator"},
    )
    for a in (sms, sms_mg, notify, alert, task):
        callee = other if a is sms_mg else caller
        stack.send_action(a, callee)
        stack.send_action(a, callee)  # a redelivery: must change nothing

    for a in (sms, sms_mg, notify, alert, task):
        stack.wait_result(a["action_id"], "SENT", 90)
    wait_for(
        lambda: kafka_tools.caught_up(stack.bootstrap, f"{stack.ns}-sinks", stack.topic(topics.ACTIONS)),
        60,
        message="sinks caught up with the actions",
    )

    # Twilio: two messages, both accepted by the contract, nothing else asked of it.
    stack.prism.assert_all_valid()
    assert len(stack.prism.messages_created()) == 2
    assert all(r.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json" for r in stack.prism.messages_created())
    # Slack: one post, the workflow's text; no number (the console has it).
    posts = stack.slack.posts(SLACK_PATH)
    assert len(posts) == 1
    text = json.loads(posts[0].body)["text"]
    assert "Missed call" in text and "booking link already sent" in text and caller[-4:] not in text
    # E-mail: one message through the real SMTP server; no number, no reason for the call.
    assert len(stack.smtp.messages) == 1
    envelope = stack.smtp.messages[0]
    assert envelope.rcpt_tos == ["manager@maple.example.org"]
    mail = message_from_bytes(envelope.content)
    assert mail["Message-ID"] == message_id(alert["action_id"])
    assert "Escalation" in mail["Subject"]
    content = mail.get_payload()
    assert caller[-4:] not in content and "urgent callback not completed" not in content
    assert "Priority: URGENT" in content and mail["Importance"] == "high"
    # Exactly one SENT outcome per action; redeliveries were skipped, and counted.
    for a in (sms, sms_mg, notify, alert, task):
        assert stack.results(a["action_id"]) == ["SENT"], a["kind"]
    assert stack.metric("ringback_sink_duplicates_skipped_total") >= 5

    # The task is in the queue: the tasks topic, the contract the console reads.
    tasks = TaskCache(stack.settings).follow()
    try:
        assert tasks.wait_ready(30)
        opened = wait_for(lambda: tasks.open_tasks("maple-family"), 30, message="the task in the tasks topic")
        assert [t["task_id"] for t in opened] == [task["action_id"]]
        t = opened[0]
        assert (t["role"], t["priority"], t["due_at"], t["state"], t["caller"]) == (
            "scheduling_coordinator",
            "HIGH",
            due,
            "OPEN",
            caller,
        )
        assert tasks.open_tasks("lakeside-peds") == [] and tasks.get("lakeside-peds", t["task_id"]) is None
        # Claim, then complete (the complete sent twice): it leaves the open list.
        for action in ("CLAIM", "COMPLETE"):
            key, update = update_record(
                t,
                action,
                actor="staff-7",
                now_ms=int(NOON * 1000) + 1000,
                outcome="reached" if action == "COMPLETE" else None,
            )
            stack.produce(topics.TASK_UPDATES, "task_update", key.decode(), update)
        stack.produce(topics.TASK_UPDATES, "task_update", key.decode(), update)
        wait_for(
            lambda: (tasks.get("maple-family", t["task_id"]) or {}).get("state") == "COMPLETED",
            30,
            message="the completed task",
        )
        done = tasks.get("maple-family", t["task_id"])
        assert done["completed_by"] == "staff-7" and done["outcome"] == "reached"
        assert [h["action"] for h in done["history"]] == ["CREATE", "CLAIM", "COMPLETE"]
        assert tasks.open_tasks("maple-family") == []
    finally:
        tasks.close()

    # A delivery receipt (as the gateway produces it, twice) becomes one DELIVERED outcome.
    receipt = {
        "message_sid": "SM" + "a" * 32,
        "status": "delivered",
        "error_code": None,
        "practice_id": "maple-family",
        "recipient": caller,
        "action_id": sms["action_id"],
        "received_at": int(NOON * 1000) + 5000,
    }
    stack.produce(topics.MESSAGE_STATUS, "message_status", f"maple-family|{caller}", receipt)
    stack.produce(topics.MESSAGE_STATUS, "message_status", f"maple-family|{caller}", {**receipt, "status": "sent"})
    stack.produce(topics.MESSAGE_STATUS, "message_status", f"maple-family|{caller}", receipt)
    stack.wait_result(sms["action_id"], "DELIVERED", 30)
    wait_for(
        lambda: kafka_tools.caught_up(stack.bootstrap, f"{stack.ns}-sinks", stack.topic(topics.MESSAGE_STATUS)),
        30,
        message="receipts read",
    )
    assert stack.results(sms["action_id"]) == ["SENT", "DELIVERED"]
    delivered = stack.outcomes(sms["action_id"])[1]
    assert (delivered["record_type"], delivered["action_kind"], delivered["case_id"]) == (
        "ACTION",
        "SEND_SMS",
        sms["case_id"],
    )


def test_sms_without_body_is_refused_before_twilio_and_dead_lettered(stack):
    before = len(stack.prism.messages_created())
    bad = stack.send_action(make_action("SEND_SMS", "+14155550103", body=None), "+14155550103")
    stack.wait_result(bad["action_id"], "FAILED", 60)
    letters = [d for d in stack.dead_letters() if d["source"] == "sinks.send_sms"]
    assert any(codec.decode("action_command", d["raw"])["action_id"] == bad["action_id"] for d in letters)
    assert len(stack.prism.messages_created()) == before
    stack.prism.assert_all_valid()
