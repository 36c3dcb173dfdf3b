"""A `ringback sinks` process on the real broker, with what it talks to: Twilio (Prism or the
fake API server), Slack on a local endpoint, a real SMTP server; actions produced straight
onto the actions topic, results read back from the topics. Shared by the sink, gap-guard
and metrics tests."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from aiosmtpd.controller import Controller

from ringback.config.settings import Settings
from ringback.kafka import topics
from ringback.kafka.producer import AckedProducer
from ringback.schemas import codec
from tests.conftest import ARTIFACTS, REPO, Processes, free_port, wait_for
from tests.support import kafka_tools

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-not-a-secret"
CHICAGO = ZoneInfo("America/Chicago")
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=CHICAGO).timestamp()  # inside every practice's sending hours
SLACK_PATH = "/services/T0000/B0000/sinks-test"


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
