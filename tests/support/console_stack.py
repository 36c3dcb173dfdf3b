"""The whole service for the staff-console tests, on the real broker: gateway, stream
worker, sinks and `ringback console`, with two practices, EHR records for the callers,
console accounts made with `ringback console add-user`, and readers of the topics."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import yaml
from confluent_kafka import Producer
from twilio.request_validator import RequestValidator

from ringback.config.settings import Settings
from ringback.dev.fake_apis import FakeApiServer
from ringback.kafka import topics
from ringback.schemas import codec
from tests.conftest import ARTIFACTS, Processes, free_port, wait_for
from tests.support import kafka_tools

AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
PASSWORD = "console-test-password"
MAPLE_DID = "+13125550100"
LAKESIDE_DID = "+16175550142"


def practices(urgent_escalation_s: int) -> dict:
    # Staff notifications and manager alerts go to a local Slack stand-in (the FakeApiServer).
    routing = {
        role: "slack:CONSOLE_TEST_SLACK"
        for role in ("scheduling_coordinator", "scheduling_queue", "nurse", "department_manager", "admin_team")
    }
    common = {
        "booking_link": "https://book.example.org/x",
        "quiet_hours": {"start": "00:00", "end": "00:00"},
        "secrets": {"twilio_auth_token": "TWILIO_AUTH_TOKEN"},
        "routing": routing,
    }
    return {
        "practices": [
            {
                "id": "maple-family",
                "name": "Maple Family Practice",
                "time_zone": "America/Chicago",
                "phone_numbers": [MAPLE_DID],
                "sms_from": MAPLE_DID,
                **common,
                "windows": {
                    "first_response_hold": 0,
                    "urgent_ack": 1,
                    "urgent_window": 900,
                    "urgent_escalation": urgent_escalation_s,
                },
            },
            {
                "id": "lakeside-peds",
                "name": "Lakeside Pediatrics",
                "time_zone": "America/New_York",
                "phone_numbers": [LAKESIDE_DID],
                "sms_from": LAKESIDE_DID,
                **common,
                "windows": {"first_response_hold": 0, "urgent_ack": 1, "urgent_escalation": urgent_escalation_s},
            },
        ]
    }


class ConsoleStack:
    def __init__(
        self, bootstrap: str, name: str, urgent_escalation_s: int, tmp: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.ns = f"t{uuid.uuid4().hex[:10]}"
        self.urgent_escalation_s = urgent_escalation_s
        self.log_dir = ARTIFACTS / name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.twilio = FakeApiServer()
        self.gateway_port, self.console_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_", "SMTP_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "RINGBACK_NAMESPACE": self.ns,
                "RINGBACK_PARTITIONS": "4",
                "RINGBACK_STATE_DIR": str(tmp / "state"),
                "RINGBACK_SECRETS_DIR": str(tmp / "secrets"),
                "RINGBACK_STORE": "memory://",
                "RINGBACK_SINKS_STORE": "memory://",
                "RINGBACK_WORKER_WEB_PORT": str(free_port()),
                "RINGBACK_SINKS_METRICS_PORT": str(free_port()),
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_API_BASE_URL": self.twilio.url,
                "RINGBACK_CONSOLE_SECRET": "console-test-session-key-0123456789",
                "CONSOLE_TEST_SLACK": self.twilio.url + "/slack/console-test",
                "PYTHONUNBUFFERED": "1",
                **(extra_env or {}),  # e.g. TWILIO_API_BASE_URL of a Prism mock
            }
        )
        self.env = env
        self.procs = Processes(self.log_dir, env)
        self.settings = Settings(kafka_bootstrap_servers=bootstrap, ringback_namespace=self.ns, ringback_partitions=4)
        # Java's partitioner (murmur2), as every ringback producer uses: records land with their caller.
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random"}
        )
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.console = f"http://127.0.0.1:{self.console_port}"

    # ------------------------------------------------------------------ start / stop
    def start(self, users: list[tuple[str, str, list[str]]]) -> ConsoleStack:
        practices_file = self.tmp / "practices.yaml"
        practices_file.write_text(yaml.safe_dump(practices(self.urgent_escalation_s)))
        applied = self.procs.run("config", "apply", str(practices_file))
        assert applied.returncode == 0, applied.stderr
        for practice, username, roles in users:
            args = ["console", "add-user", "--practice", practice, "--username", username, "--password-stdin"]
            for role in roles:
                args += ["--role", role]
            added = self.run_cli(args, stdin=PASSWORD + "\n")
            assert added.returncode == 0, added.stderr
        self.procs.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(self.gateway_port))
        self.procs.start("worker", "worker")
        self.procs.start("sinks", "sinks")
        self.procs.start("console", "console", "--host", "127.0.0.1", "--port", str(self.console_port))
        wait_for(lambda: httpx.get(f"{self.gateway}/readyz").status_code == 200, 90, message="gateway ready")
        wait_for(lambda: httpx.get(f"{self.console}/readyz").status_code == 200, 90, message="console ready")
        return self

    def run_cli(self, args: list[str], stdin: str = ""):
        import subprocess
        import sys

        return subprocess.run(
            [sys.executable, "-m", "ringback.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def close(self) -> None:
        self.procs.stop_all()
        self.producer.flush(10)
        self.twilio.close()

    # ------------------------------------------------------------------ inputs
    def produce(
        self, spec: topics.TopicSpec, schema: str, key: str, record: dict, partition_key: str | None = None
    ) -> None:
        """Produce and wait for the acknowledgement (synchronous: Playwright's sync API runs a loop)."""
        extra = {"partition": topics.partition_for(partition_key.encode(), 4)} if partition_key else {}
        errors: list = []
        self.producer.produce(
            self.topic(spec),
            key=key.encode(),
            value=codec.encode(schema, record),
            on_delivery=lambda err, msg: err and errors.append(err),
            **extra,
        )
        assert self.producer.flush(15) == 0 and not errors, errors

    def known_patient(self, practice: str, phone: str, name: str, urgent: str | None = None) -> None:
        """A patient in the EHR topics; `urgent`: an active callback-requested flag with that text."""
        now = kafka_now()
        self.produce(
            topics.PATIENTS,
            "patient",
            f"{practice}|{phone}",
            {
                "practice_id": practice,
                "phone": phone,
                "patient_id": f"p-{uuid.uuid4().hex[:8]}",
                "display_name": name,
                "deceased": False,
                "assigned_provider": None,
                "updated_at": now,
            },
        )
        if urgent:
            flag_id = f"f-{uuid.uuid4().hex[:8]}"
            self.produce(
                topics.FLAGS,
                "flag",
                f"{practice}|{phone}|{flag_id}",
                {
                    "practice_id": practice,
                    "flag_id": flag_id,
                    "patient_id": "p",
                    "phone": phone,
                    "code": "callback-requested",
                    "display": urgent,
                    "priority": "PH",
                    "status": "active",
                    "callback_requested": True,
                    "updated_at": now,
                },
                partition_key=f"{practice}|{phone}",
            )

    def direct_task(
        self,
        practice: str,
        caller: str,
        role: str,
        *,
        due_in_s: float,
        missed_ago_s: float,
        reason: str,
        todo: str,
        priority: str = "NORMAL",
        scenario: str = "NEW_PATIENT",
    ) -> dict:
        """A CREATE_TASK action produced straight onto the actions topic (as the workflow would
        emit it), for a task whose times a missed call cannot give quickly (one already overdue)."""
        now = kafka_now()
        case = f"{practice}:{uuid.uuid4().hex[:20]}"
        action = {
            "action_id": f"{case}:callback_task",
            "case_id": case,
            "practice_id": practice,
            "kind": "CREATE_TASK",
            "step": "callback_task",
            "scenario": scenario,
            "recipient": "slack:CONSOLE_TEST_SLACK",
            "body": None,
            "reason": reason,
            "priority": priority,
            "created_at": now,
            "due_at": int(now + due_in_s * 1000),
            "missed_at": int(now - missed_ago_s * 1000),
            "call_reported_at": None,
            "params": {"role": role, "caller": caller, "todo": todo},
        }
        self.produce(topics.ACTIONS, "action_command", f"{practice}|{caller}", action)
        return action

    def ehr_loaded(self) -> None:
        """Wait until the stream worker has read every patient and flag record: a call's join
        with them is only as good as what the worker has read (topics are read side by side)."""
        for spec in (topics.PATIENTS, topics.FLAGS):
            if kafka_tools.total_records(self.bootstrap, self.topic(spec)) == 0:
                continue
            wait_for(
                lambda spec=spec: kafka_tools.caught_up(self.bootstrap, f"{self.ns}-streams", self.topic(spec)),
                60,
                interval=0.3,
                message=f"the stream worker caught up with {spec.suffix}",
            )

    def missed_call(self, caller: str, did: str = MAPLE_DID) -> str:
        call_sid = "CA" + uuid.uuid4().hex
        params = {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "From": caller,
            "To": did,
            "CallStatus": "no-answer",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "2",
        }
        endpoint = f"{self.gateway}/webhooks/twilio/voice/status"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(endpoint, params)
        response = httpx.post(endpoint, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 204, response.text
        return call_sid

    # ------------------------------------------------------------------ readers
    def topic(self, spec: topics.TopicSpec) -> str:
        return topics.topic_name(spec, self.settings)

    def actions(self) -> list[dict]:
        return [v for _, v in kafka_tools.read_all(self.bootstrap, self.topic(topics.ACTIONS), "action_command")]

    def task_action(self, practice: str, scenario: str, step: str, after: set[str] = frozenset()) -> dict | None:
        found = [
            a
            for a in self.actions()
            if a["kind"] == "CREATE_TASK"
            and a["practice_id"] == practice
            and a["scenario"] == scenario
            and a["step"] == step
            and a["action_id"] not in after
        ]
        return found[0] if found else None

    def task_updates(self) -> list[tuple[bytes, dict]]:
        return kafka_tools.read_all(self.bootstrap, self.topic(topics.TASK_UPDATES), "task_update")

    def tasks(self) -> dict:
        """The latest task per task_id, read from the tasks topic (what the sinks persisted)."""
        records = kafka_tools.read_all(self.bootstrap, self.topic(topics.TASKS), "task")
        return {key.decode(): value for key, value in records if key is not None}

    def outcomes(self, case_id: str) -> list[dict]:
        return [
            v
            for _, v in kafka_tools.read_all(self.bootstrap, self.topic(topics.OUTCOMES), "outcome")
            if v["case_id"] == case_id
        ]


def kafka_now() -> int:
    from ringback.clock import Clock

    return Clock().now_ms()
