"""A state folder kept across a broker created anew: the worker and the sinks come up, say
which table partitions they wiped, count them, restore them from the (new) changelogs and
handle new input as if the caller were new (kafka/state_healing.py).

Before: the worker crash-looped with faust's ConsistencyError ("The persisted offset for
changelog topic partition ... is higher than the last offset in that topic").
"""

from __future__ import annotations

import signal

import pytest

from tests.conftest import REPO, wait_for
from tests.kafka.own_broker import own_broker, own_kafka_bootstrap, recreate  # noqa: F401 - fixtures
from tests.kafka.test_gap_guard_broker import metric_total
from tests.worker.test_reference_day import Feed, worker_env

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 31 + "1"
PRACTICE, DID = "maple-family", "+13125550100"  # tests/fixtures/practices.yaml: no first-response hold
CALLER = "+14155550177"
WIPED = "ringback_state_partitions_wiped_total"


def test_a_state_folder_kept_across_a_broker_created_anew_is_wiped_and_restored(
    broker, processes, service_env, twilio_capture
):
    env = worker_env(
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN="test-auth-token-not-a-secret",
        TWILIO_API_BASE_URL=twilio_capture.url,
        RINGBACK_STORE="rocksdb://",  # as in production: the state folder keeps the tables
        RINGBACK_SINKS_STORE="rocksdb://",
        RINGBACK_SINKS_SESSION_TIMEOUT_S="6",
    )
    fixture = str(REPO / "tests" / "fixtures" / "practices.yaml")

    def start(generation: int) -> None:
        applied = processes.run("config", "apply", fixture, env=env)
        assert applied.returncode == 0, applied.stderr
        processes.start(f"worker-{generation}", "worker", env=env)
        processes.start(f"sinks-{generation}", "sinks", env=env)

    def sms_to_caller() -> int:
        return sum(1 for m in twilio_capture.messages() if m.form.get("To") == CALLER)

    start(1)
    Feed(broker.bootstrap, service_env["RINGBACK_NAMESPACE"], practice=PRACTICE, did=DID).call(CALLER)
    wait_for(lambda: sms_to_caller() == 1, 120, message="the first SMS")
    for name in ("worker-1", "sinks-1"):  # a clean stop: the stores keep their changelog offsets
        processes.kill(name, signal.SIGTERM)

    recreate(broker)  # same address, new cluster: the changelogs start again at offset 0
    start(2)
    # The same caller again: with the old state kept, their case would still be open (no new SMS).
    Feed(broker.bootstrap, service_env["RINGBACK_NAMESPACE"], practice=PRACTICE, did=DID).call(CALLER)
    wait_for(lambda: sms_to_caller() == 2, 120, message="an SMS for the call after the broker was created anew")

    worker_log, sinks_log = processes.log("worker-2"), processes.log("sinks-2")
    for log in (worker_log, sinks_log):
        assert "ConsistencyError" not in log
        assert CALLER not in log
    assert "WARNING ringback.kafka.state_healing table state partition" in worker_log
    assert "local state wiped, restoring it from the changelog" in worker_log
    assert "WARNING ringback.kafka.state_healing table sent-log partition" in sinks_log
    worker_port = int(service_env["RINGBACK_WORKER_WEB_PORT"])
    sinks_port = int(service_env["RINGBACK_SINKS_METRICS_PORT"])
    assert metric_total(worker_port, WIPED) == worker_log.count("local state wiped") >= 1
    assert metric_total(sinks_port, WIPED) == sinks_log.count("local state wiped") >= 1
