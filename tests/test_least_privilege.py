"""Least privilege on a health system's Kafka: every process with its own principal and only its ACLs.

One SASL_SSL broker with the StandardAuthorizer on (tests/support/secure_kafka.py) serves the
module, and one namespace: a SCRAM user `User:<ns>-<kind>` per kind of process, the ACLs of
`ringback kafka acls --apply` run as the super user, `ringback config apply` as the admin
principal. Then the gateway, the stream worker, the sinks and the console run, each with its
own principal's username and password in a secrets folder of its own and nothing else:

* a missed call gets exactly one SMS and its outcome is recorded; the console lists a task;
* kill -9 of the worker and of the sinks while calls flow, each restarted with the same
  principal: every accepted call gets its SMS, nobody gets two, no action is emitted twice;
* what the principals may not do: the gateway's cannot read the patients (nor the call events it
  writes), the report's reads outcomes but not call events; a process whose principal lacks an
  ACL it needs stops at start naming the topic, instead of retrying.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from twilio.request_validator import RequestValidator

from ringback.dev.fake_apis import FakeApiServer
from ringback.dev.local_kafka import LocalKafka
from tests.conftest import ARTIFACTS, REPO, Processes, free_port, wait_for
from tests.support import kafka_tools
from tests.support.secure_kafka import SECRET_NAMES, secure_kafka_fixture  # noqa: F401 - the fixture secure_kafka

pytestmark = pytest.mark.integration

AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
MAPLE_DID = "+13125550100"  # tests/fixtures/practices.yaml: no first-response hold, follow-ups hours later
REFERENCE_DID = "+13125550300"  # the scaled-down practice: a callback task seconds after the miss
CONSOLE_PASSWORD = "console-test-password"
# The kinds of process this module runs, each as User:<ns>-<kind>.
KINDS = ("admin", "gateway", "worker", "sinks", "console", "report")


class Principals:
    """The SCRAM users of one namespace and the environment of a process connecting as one of them."""

    def __init__(self, broker: LocalKafka, ns: str, root: Path) -> None:
        self.broker, self.ns, self.root = broker, ns, root
        self.passwords: dict[str, str] = {}

    def add(self, kind: str) -> None:
        self.passwords[kind] = secrets.token_hex(12)
        self.broker.add_scram_user(self.user(kind), self.passwords[kind])

    def user(self, kind: str) -> str:
        return f"{self.ns}-{kind}"

    def env(self, kind: str) -> dict[str, str]:
        """The security settings, and the username and password as files in a secrets folder of the
        process kind's own (as a Kubernetes Secret per workload would mount them)."""
        settings = self.broker.client_env(self.user(kind), self.passwords[kind])
        folder = self.root / f"secrets-{self.ns}-{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in SECRET_NAMES:
            (folder / name).write_text(settings.pop(name))
        return {**settings, "RINGBACK_SECRETS_DIR": str(folder)}

    def client_config(self, kind: str) -> dict[str, str]:
        return self.broker.client_config(self.user(kind), self.passwords[kind])


def base_env(ns: str, root: Path, twilio: FakeApiServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_", "KAFKA_"))}
    env.update(
        {
            "RINGBACK_NAMESPACE": ns,
            "RINGBACK_PARTITIONS": "4",
            "RINGBACK_STATE_DIR": str(root / "state"),
            "RINGBACK_STORE": "rocksdb://",  # as in production: the kill -9 leaves a local store behind
            "RINGBACK_SESSION_TIMEOUT_S": "6",
            "RINGBACK_HEARTBEAT_INTERVAL_S": "1",
            "RINGBACK_WORKER_WEB_PORT": str(free_port()),
            "RINGBACK_SINKS_METRICS_PORT": str(free_port()),
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": twilio.url,
            "RINGBACK_CONSOLE_SECRET": "console-test-session-key-0123456789",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 90):
    return subprocess.run(
        [sys.executable, "-m", "ringback.cli", *args],
        env=env,
        cwd=str(REPO),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(secure_kafka):
    """The test's own readers (kafka_tools) connect as the super user."""
    return secure_kafka.client_config()


class Service:
    """The module's processes, each as its own principal, and the webhook poster."""

    def __init__(self, principals: Principals, env: dict[str, str], twilio: FakeApiServer, log_dir: Path) -> None:
        self.principals = principals
        self.ns = principals.ns
        self.env = env
        self.twilio = twilio
        self.procs = Processes(log_dir, env)
        self.gateway_url = f"http://127.0.0.1:{free_port()}"
        self.console_url = f"http://127.0.0.1:{free_port()}"
        self.accepted: list[str] = []
        self._n = 0

    def start(self, kind: str) -> None:
        env = self.principals.env(kind)
        if kind == "gateway":
            port = self.gateway_url.rsplit(":", 1)[1]
            self.procs.start(kind, "ingest", "--host", "127.0.0.1", "--port", port, env=env)
        elif kind == "console":
            port = self.console_url.rsplit(":", 1)[1]
            self.procs.start(kind, "console", "--host", "127.0.0.1", "--port", port, env=env)
        else:  # the same member name at every start: a restart is the dead process coming back
            self.procs.start(kind, kind, env={**env, "RINGBACK_INSTANCE_ID": f"lp-{kind}"})

    def post(self, did: str = MAPLE_DID) -> str:
        """A signed no-answer status callback from a new caller; the caller, once the gateway stored it."""
        self._n += 1
        caller = f"+1415556{self._n:04d}"
        params = {
            "CallSid": f"CA{uuid.uuid4().hex}",
            "AccountSid": ACCOUNT_SID,
            "From": caller,
            "To": did,
            "CallStatus": "no-answer",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        endpoint = f"{self.gateway_url}/webhooks/twilio/voice/status"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(endpoint, params)
        response = httpx.post(endpoint, data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
        assert response.is_success, response.text
        self.accepted.append(caller)
        return caller

    def texted(self) -> Counter:
        """Messages created at Twilio per recipient (what the patients receive)."""
        return Counter(m["to"] for m in list(self.twilio.created))

    def wait_all_texted(self, what: str) -> None:
        wait_for(lambda: set(self.accepted) <= set(self.texted()), 180, interval=0.5, message=f"an SMS per call {what}")


@pytest.fixture(scope="module")
def service(secure_kafka, tmp_path_factory):
    ns = f"t{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp("least-privilege")
    twilio = FakeApiServer()
    env = base_env(ns, root, twilio)
    principals = Principals(secure_kafka, ns, root)
    for kind in KINDS:
        principals.add(kind)
    log_dir = ARTIFACTS / "test_least_privilege"
    log_dir.mkdir(parents=True, exist_ok=True)
    service = Service(principals, env, twilio, log_dir)
    try:
        # The super user (admin of the cluster, not of ringback) grants every kind its ACLs...
        super_user = {**env, **secure_kafka.client_env()}
        granted = run_cli(super_user, "kafka", "acls", "--apply")
        assert granted.returncode == 0, granted.stderr
        (log_dir / "acls.txt").write_text(granted.stdout)
        # ...ringback's admin principal creates the topics and publishes the practices...
        practices = str(REPO / "tests" / "fixtures" / "practices.yaml")
        applied = run_cli({**env, **principals.env("admin")}, "config", "apply", practices)
        assert applied.returncode == 0, applied.stderr
        added = run_cli(
            env,
            *("console", "add-user", "--practice", "reference-day", "--username", "desk"),
            *("--role", "scheduling_coordinator", "--password-stdin"),
            stdin=CONSOLE_PASSWORD + "\n",
        )
        assert added.returncode == 0, added.stderr
        # ...and every other kind runs with its own.
        for kind in ("gateway", "worker", "sinks", "console"):
            service.start(kind)
        wait_for(lambda: httpx.get(f"{service.gateway_url}/readyz").status_code == 200, 120, message="gateway ready")
        yield service
    finally:
        service.procs.stop_all()
        twilio.close()


def test_a_missed_call_gets_one_sms_and_its_outcome_with_each_process_its_own_principal(service, kafka_bootstrap):
    ns = service.ns
    caller = service.post()
    service.wait_all_texted("of the first call")
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"), 60, message="sinks caught up"
    )
    assert service.texted() == Counter({caller: 1})
    outcomes = [v for _, v in kafka_tools.read_all(kafka_bootstrap, f"{ns}.outcomes", "outcome")]
    assert outcomes and {o["practice_id"] for o in outcomes} == {"maple-family"}
    for kind in ("gateway", "worker", "sinks", "console"):
        assert service.procs.procs[kind].poll() is None, service.procs.log(kind)


def test_the_console_as_its_principal_lists_a_task(service, kafka_bootstrap):
    service.post(REFERENCE_DID)  # a new patient: a callback task for the coordinator seconds later
    wait_for(lambda: httpx.get(f"{service.console_url}/readyz").status_code == 200, 120, message="console ready")
    http = httpx.Client(base_url=service.console_url, timeout=15)
    signed_in = http.post(
        "/api/login", json={"practice_id": "reference-day", "username": "desk", "password": CONSOLE_PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    tasks = wait_for(lambda: http.get("/api/tasks").json()["tasks"], 120, message="a task in the console")
    assert tasks[0]["role"] == "scheduling_coordinator"


def test_kill_9_of_the_worker_and_the_sinks_restarted_as_their_principals_loses_nothing(service, kafka_bootstrap):
    ns = service.ns
    first = len(service.accepted)
    for kind in ("worker", "sinks"):
        for _ in range(3):
            service.post()  # on their way through the pipeline when the process dies
        service.procs.kill(kind)  # SIGKILL: no commit, no goodbye to the group
        for _ in range(3):
            service.post()  # arriving while it is down
        service.start(kind)
        service.wait_all_texted(f"after the {kind}'s kill -9")
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"), 60, message="sinks caught up"
    )
    texted = service.texted()
    callers = service.accepted[first:]  # new patients of Maple: one SMS each, the follow-up hours later
    assert len(callers) == 12 and all(texted[caller] == 1 for caller in callers), texted
    assert set(texted) == set(service.accepted)
    actions = [v for _, v in kafka_tools.read_all(kafka_bootstrap, f"{ns}.actions", "action_command")]
    emitted = Counter(a["action_id"] for a in actions)
    assert {i: n for i, n in emitted.items() if n > 1} == {}, "the worker emitted an action twice"


def authorization_error(config: dict, topic: str) -> int | None:
    """The error a consumer with these credentials gets reading partition 0 of `topic` (assigned, its
    group never joined), or None once it reads a record."""
    group = f"{topic.split('.')[0]}.probe-{uuid.uuid4().hex[:8]}"  # of the namespace: may look its coordinator up
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])

        def answer() -> tuple[str, int | None] | None:
            msg = consumer.poll(0.5)
            if msg is None:
                return None
            return ("error", msg.error().code()) if msg.error() else ("record", None)

        _, code = wait_for(answer, 30, message=f"an answer reading {topic}")
        return code
    finally:
        consumer.close()


def test_the_gateway_principal_cannot_read_the_patients_nor_the_call_events(service, kafka_bootstrap):
    gateway = service.principals.client_config("gateway")
    for suffix in ("patients", "call-events"):
        assert authorization_error(gateway, f"{service.ns}.{suffix}") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_report_principal_reads_outcomes_and_cannot_read_call_events(service, kafka_bootstrap, tmp_path):
    report = service.principals.client_config("report")
    assert authorization_error(report, f"{service.ns}.call-events") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    done = run_cli({**service.env, **service.principals.env("report")}, "report", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.json").exists()


def test_a_topic_only_admin_may_create_stops_the_gateway_at_start_naming_it(service, secure_kafka, tmp_path):
    """Another namespace whose topics nobody created yet: its gateway, with only its ACLs, stops."""
    other = Principals(secure_kafka, f"t{uuid.uuid4().hex[:10]}", tmp_path)
    other.add("gateway")
    env = {**service.env, "RINGBACK_NAMESPACE": other.ns}
    granted = run_cli({**env, **secure_kafka.client_env()}, "kafka", "acls", "--process", "gateway", "--apply")
    assert granted.returncode == 0, granted.stderr
    done = run_cli({**env, **other.env("gateway")}, "ingest", "--port", str(free_port()), timeout=60)
    assert done.returncode != 0
    assert f"topic {other.ns}." in done.stderr and "ringback config apply" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_worker_run_with_a_principal_lacking_its_acls_stops_at_start_naming_a_topic(service):
    """The report's principal may read outcomes only: as a stream worker it stops at once."""
    env = {**service.principals.env("report"), "RINGBACK_WORKER_WEB_PORT": str(free_port())}
    done = run_cli({**service.env, **env}, "worker", timeout=90)
    assert done.returncode != 0
    assert f"topic {service.ns}-streams-" in done.stderr and "may not create it" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_console_run_with_the_gateways_principal_stops_at_start_naming_what_it_may_not_read(service):
    """The topics exist and the principal sees them, but may not read them: a start-up check,
    not a task cache retrying for ever behind a console that answers /readyz 503."""
    env = {**service.env, **service.principals.env("gateway")}
    done = run_cli(env, "console", "--host", "127.0.0.1", "--port", str(free_port()), timeout=60)
    assert done.returncode != 0
    assert f"may not READ {service.ns}.call-events" in done.stderr, done.stderr
    assert f"READ {service.ns}.tasks" in done.stderr and "--process console --apply" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
