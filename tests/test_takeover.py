"""kill -9 of the worker, of the sinks and of the broker under a flow of missed calls:
every call the gateway accepted gets its SMS, and no caller gets two.

The whole pipeline on a broker of the test's own (it is killed too): `ringback ingest`,
`ringback worker` (RocksDB), `ringback sinks`, Twilio as the local capture server. The
worker and the sinks are static group members (`RINGBACK_INSTANCE_ID`) and are started
again at once after their kill, under the same name, as a supervisor would. Each kill
lands while calls are on their way through the pipeline, and more calls arrive while the
process is down. How fast the SMS flow resumes is figure (e) of `ringback bench`
(docs/benchmarks.md); this test asserts only what must hold whatever the timing.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import REPO, free_port, wait_for
from tests.kafka.own_broker import own_broker, own_kafka_bootstrap  # noqa: F401 - fixtures
from tests.support import kafka_tools
from tests.worker.test_reference_day import Collector

pytestmark = pytest.mark.integration

AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
PRACTICE_DID = "+13125550100"  # tests/fixtures/practices.yaml: Maple Family Practice, no first-response hold
BATCH = 4


class Pipeline:
    """The processes of the test, the webhook poster and what Twilio received."""

    def __init__(self, processes, env: dict[str, str], twilio) -> None:
        self.processes = processes
        self.env = env
        self.twilio = twilio
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[str] = []
        self._n = 0

    def start(self, role: str) -> None:
        if role == "gateway":
            self.processes.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(self.port), env=self.env)
            return
        # The same name every time: the restarted process is the dead one coming back.
        env = {**self.env, "RINGBACK_INSTANCE_ID": f"takeover-{role}", "RINGBACK_STORE": "rocksdb://"}
        self.processes.start(role, role, env=env)

    def post(self) -> httpx.Response:
        """A signed no-answer status callback from a new caller; the caller is remembered as
        accepted on a 2xx only (a 503 means: not stored, retry)."""
        self._n += 1
        caller = f"+1415555{self._n:04d}"
        params = {
            "CallSid": f"CA{self._n:032x}",
            "AccountSid": ACCOUNT_SID,
            "From": caller,
            "To": PRACTICE_DID,
            "CallStatus": "no-answer",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        endpoint = f"{self.url}/webhooks/twilio/voice/status"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(endpoint, params)
        response = httpx.post(endpoint, data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
        if response.is_success:
            self.accepted.append(caller)
        return response

    def batch(self) -> None:
        for _ in range(BATCH):
            assert self.post().is_success

    def texted(self) -> Counter:
        """Messages created at Twilio per recipient (what the patients receive)."""
        return Counter(m["to"] for m in list(self.twilio.created))

    def wait_all_texted(self, what: str) -> None:
        wait_for(
            lambda: set(self.accepted) <= set(self.texted()),
            180,
            interval=0.5,
            message=f"an SMS for every accepted call {what}",
        )


def test_kill_9_of_worker_sinks_and_broker_loses_no_sms_and_sends_none_twice(
    broker, processes, service_env, twilio_capture
):
    ns = service_env["RINGBACK_NAMESPACE"]
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_capture.url,
    }
    applied = processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    pipeline = Pipeline(processes, env, twilio_capture)
    for role in ("gateway", "worker", "sinks"):
        pipeline.start(role)
    wait_for(lambda: httpx.get(f"{pipeline.url}/readyz").status_code == 200, 90, message="the gateway ready")
    pipeline.batch()
    pipeline.wait_all_texted("before any kill")

    for role in ("worker", "sinks"):
        pipeline.batch()  # on their way through the pipeline when the process dies
        processes.kill(role)  # SIGKILL: no commit, no goodbye to the group
        pipeline.batch()  # arriving while it is down
        pipeline.start(role)
        pipeline.wait_all_texted(f"after the {role}'s kill -9")

    pipeline.batch()
    broker.kill()
    refused = pipeline.post()
    assert refused.status_code == 503 and refused.headers["Retry-After"]  # not stored: the provider retries
    broker.start()
    wait_for(lambda: pipeline.post().is_success, 120, interval=0.5, message="the gateway accepting calls again")
    pipeline.batch()
    pipeline.wait_all_texted("after the broker's kill -9")
    wait_for(
        lambda: kafka_tools.caught_up(broker.bootstrap, f"{ns}-sinks", f"{ns}.actions"),
        60,
        message="the sinks committed every action",
    )

    texted = pipeline.texted()
    assert len(pipeline.accepted) == BATCH * (1 + 2 * 2 + 2) + 1
    assert {caller: n for caller, n in texted.items() if n > 1} == {}, "a caller texted twice"
    assert set(texted) == set(pipeline.accepted)  # nobody else texted: the refused call was never stored
    collector = Collector(broker.bootstrap, ns)  # reads the actions topic from the start, in the background

    def sms_actions() -> set[str]:
        return {a["recipient"] for a in collector.actions() if a["kind"] == "SEND_SMS"}

    try:
        wait_for(lambda: sms_actions() >= set(pipeline.accepted), 60, message="every SMS action read back")
        emitted = Counter(a["action_id"] for a in collector.actions())
    finally:
        collector.close()
    assert {i: n for i, n in emitted.items() if n > 1} == {}, "the worker emitted an action twice"
