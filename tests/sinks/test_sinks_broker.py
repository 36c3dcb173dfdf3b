"""The sink workers on the real broker: Twilio through Prism (the official OpenAPI
contract, request validation on), Slack on a local HTTP endpoint, e-mail through a
real aiosmtpd server, the task queue read back from the tasks topic as the console reads it.

Actions are produced straight onto the actions topic (the stream app is rebuilt in
parallel). One sinks process serves the whole module.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiosmtpd.controller import Controller

from ringback.config.settings import Settings
from ringback.console.task_cache import TaskCache
from ringback.dev.fake_apis import FakeApiServer
from ringback.domain.tasks import update_record
from ringback.kafka import topics
from ringback.kafka.producer import AckedProducer
from ringback.schemas import codec
from ringback.sinks.channels.email import message_id
from tests.conftest import ARTIFACTS, REPO, Processes, free_port, wait_for
from tests.support import kafka_tools
from tests.support.prism import PrismMock

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-not-a-secret"
CHICAGO = ZoneInfo("America/Chicago")
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=CHICAGO).timestamp()  # inside every practice's sending hours
SLACK_PATH = "/services/T0000/B0000/sinks-test"


# ------------------------------------------------------------------ helpers shared by the sink modules
class SmtpCapture:
    """A real SMTP server (aiosmtpd) keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list = []
        capture = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
                capture.messages.append(envelope)
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpCapture:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class SinkStack:
    """One namespace, one sinks process, producers and readers for the test."""

    def __init__(self, bootstrap: str, name: str, extra_env: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.ns = f"t{uuid.uuid4().hex[:10]}"
        self.log_dir = ARTIFACTS / name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        state = Path(os.environ.get("TMPDIR", "/tmp")) / f"ringback-{self.ns}"
        self.clock_file = state / "clock"
        state.mkdir(parents=True, exist_ok=True)
        self.set_clock(NOON)
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_", "SMTP_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "RINGBACK_NAMESPACE": self.ns,
                "RINGBACK_PARTITIONS": "4",
                "RINGBACK_STATE_DIR": str(state / "state"),
                "RINGBACK_SECRETS_DIR": str(state / "secrets"),
                "RINGBACK_SINKS_METRICS_PORT": str(self.metrics_port),
                "RINGBACK_SINKS_STORE": "memory://",
                "RINGBACK_SINKS_CLOCK_FILE": str(self.clock_file),
                "RINGBACK_SINKS_TICK_S": "0.3",
                "RINGBACK_SINKS_SESSION_TIMEOUT_S": "6",
                "RINGBACK_SINKS_HEARTBEAT_S": "1",
                "RINGBACK_SINK_RETRY_ATTEMPTS": "4",
                "RINGBACK_SINK_RETRY_BASE_S": "0.2",
                "RINGBACK_SINK_RETRY_MAX_S": "1",
                "RINGBACK_SINK_RETRY_JITTER_S": "0.1",
                "RINGBACK_TWILIO_TIMEOUT_S": "1",
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "RINGBACK_PUBLIC_URL": "https://ringback.example.org",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env)
        self.env = env
        self.procs = Processes(self.log_dir, env)
        self.producer = AckedProducer(bootstrap, timeout_s=10)
        self.settings = Settings(kafka_bootstrap_servers=bootstrap, ringback_namespace=self.ns, ringback_partitions=4)

    def set_clock(self, epoch_s: float) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(f"{epoch_s:.3f}")
        tmp.replace(self.clock_file)  # atomic: the sink never reads half a number

    def start(self) -> SinkStack:
        applied = self.procs.run("config", "apply", str(REPO / "examples" / "practices.yaml"))
        assert applied.returncode == 0, applied.stderr
        self.start_sinks()
        return self

    def start_sinks(self) -> None:
        self.procs.start("sinks", "sinks")
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).status_code == 200,
            90,
            message="sinks web server up",
        )

    def metric(self, name: str, port: int | None = None, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{port or self.metrics_port}/metrics", timeout=5).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                got = line[len(name) :].split(" ")[0].strip("{}")
                if all(part in got.split(",") for part in want.split(",") if part):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def topic(self, spec: topics.TopicSpec) -> str:
        return topics.topic_name(spec, self.settings)

    def produce(self, spec: topics.TopicSpec, schema: str, key: str, record: dict) -> None:
        self.producer.send_sync(self.topic(spec), key.encode(), codec.encode(schema, record))

    def send_action(self, action: dict, caller: str) -> dict:
        self.produce(topics.ACTIONS, "action_command", f"{action['practice_id']}|{caller}", action)
        return action

    def outcomes(self, action_id: str) -> list[dict]:
        return [
            v
            for _, v in kafka_tools.read_all(self.bootstrap, self.topic(topics.OUTCOMES), "outcome")
            if v["action_id"] == action_id
        ]

    def results(self, action_id: str) -> list[str]:
        return [o["action_result"] for o in self.outcomes(action_id)]

    def wait_result(self, action_id: str, result: str, timeout: float = 60) -> dict:
        found = wait_for(
            lambda: [o for o in self.outcomes(action_id) if o["action_result"] == result],
            timeout,
            interval=0.3,
            message=f"{result} outcome of {action_id}",
        )
        return found[0]

    def dead_letters(self) -> list[dict]:
        return [v for _, v in kafka_tools.read_all(self.bootstrap, self.topic(topics.DEAD_LETTERS), "dead_letter")]

    def changelog(self, table: str) -> dict:
        """The latest value per key of one sinks table, read from its changelog topic."""
        out: dict = {}
        for key, value in kafka_tools.read_all(self.bootstrap, f"{self.ns}-sinks-{table}-changelog"):
            out[json.loads(key)] = json.loads(value) if value is not None else None
        return out

    def tasks(self) -> dict:
        """The latest task per task_id, read from the tasks topic (the task table's changelog)."""
        records = kafka_tools.read_all(self.bootstrap, self.topic(topics.TASKS), "task")
        return {key.decode(): value for key, value in records if key is not None}

    def close(self) -> None:
        self.procs.stop_all()
        self.producer.close()


def make_action(
    kind: str,
    caller: str,
    *,
    practice: str = "maple-family",
    step: str | None = None,
    recipient: str | None = None,
    body: str | None = None,
    now_ms: int | None = None,
    **over,
) -> dict:
    case = f"{practice}:{uuid.uuid4().hex[:16]}"
    step = (
        step
        or {
            "SEND_SMS": "first_sms",
            "NOTIFY_STAFF": "notify_coordinator",
            "CREATE_TASK": "callback_task",
            "ALERT_MANAGER": "manager_alert",
        }[kind]
    )
    now_ms = now_ms or int(NOON * 1000)
    action = {
        "action_id": f"{case}:{step}",
        "case_id": case,
        "practice_id": practice,
        "kind": kind,
        "step": step,
        "scenario": "NEW_PATIENT",
        "recipient": recipient or caller,
        "body": body,
        "reason": "missed call from an unknown number",
        "priority": "NORMAL",
        "created_at": now_ms,
        "due_at": None,
        "missed_at": now_ms - 60_000,
        "call_reported_at": now_ms - 59_000,
        "params": {},
    }
    action.update(over)
    return action


def sms_body(practice: str = "Maple Family Practice") -> str:
    return (
        f"Hi, this is {practice}. Sorry we missed your call! Book here: https://book.example.org/maple "
        "Reply STOP to opt out."
    )


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
    # Slack: one post, saying what happened and what to do.
    posts = stack.slack.posts(SLACK_PATH)
    assert len(posts) == 1
    text = json.loads(posts[0].body)["text"]
    assert "Missed call: action needed" in text and caller in text and "To do:" in text
    # E-mail: one message through the real SMTP server; the manager sees a masked number.
    assert len(stack.smtp.messages) == 1
    envelope = stack.smtp.messages[0]
    assert envelope.rcpt_tos == ["manager@maple.example.org"]
    mail = message_from_bytes(envelope.content)
    assert mail["Message-ID"] == message_id(alert["action_id"])
    assert "Escalation" in mail["Subject"]
    content = mail.get_payload()
    assert caller not in content and caller[-4:] in content and "urgent callback not completed" in content
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
