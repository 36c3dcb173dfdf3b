"""A broker outage under a running stream worker: a few WARNING lines per interval, not
thousands of ERROR lines (observability/client_errors.py, docs/logging.md).

Measured before the filter, on this test's set-up: a worker wrote about 1,900 aiokafka
ERROR lines a second while the broker was away, and its confluent-kafka consumers ~50 raw
librdkafka lines a second besides.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from tests.conftest import REPO, wait_for
from tests.kafka.own_broker import own_broker, own_kafka_bootstrap  # noqa: F401 - fixtures
from tests.support import kafka_tools
from tests.worker.test_reference_day import Feed, worker_env

pytestmark = pytest.mark.integration

INTERVAL_S = 5
OUTAGE_S = 15
OUTAGE_ERROR_S = 10  # RINGBACK_LOG_CLIENT_OUTAGE_ERROR_S


def lines(log: str) -> list[dict]:
    """The worker's JSON log lines (anything else: a line no logger wrote, e.g. raw librdkafka)."""
    out = []
    for line in log.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"level": "RAW", "logger": "-", "msg": line})
    return out


def test_a_broker_outage_logs_one_warning_per_broker_and_interval(broker, processes, service_env):
    env = worker_env(
        RINGBACK_STORE="memory://",
        RINGBACK_LOG_FORMAT="json",
        RINGBACK_LOG_CLIENT_ERRORS_INTERVAL_S=str(INTERVAL_S),
        RINGBACK_LOG_CLIENT_OUTAGE_ERROR_S=str(OUTAGE_ERROR_S),
    )
    ns = service_env["RINGBACK_NAMESPACE"]
    applied = processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    processes.start("worker", "worker", env=env)
    Feed(broker.bootstrap, ns).call("+17735550142")
    wait_for(
        lambda: kafka_tools.caught_up(broker.bootstrap, f"{ns}-streams", f"{ns}.call-events"),
        90,
        message="the worker read the call",
    )

    before = len(processes.log("worker").splitlines())
    broker.stop()
    stopped = time.monotonic()

    def outage_logged() -> list[dict] | None:
        during = lines(processes.log("worker"))[before:]
        errors = [e for e in during if e["level"] == "ERROR" and "kafka_broker" in e]
        return during if errors and time.monotonic() - stopped >= OUTAGE_S else None

    during = wait_for(outage_logged, 60, interval=0.5, message=f"{OUTAGE_S} s of outage and its ERROR line")
    broker.start()

    loud = [e for e in during if e["level"] in ("WARNING", "ERROR", "CRITICAL", "RAW")]
    connection = [e for e in loud if "kafka_broker" in e]
    print(f"{len(during)} lines in {OUTAGE_S} s of outage, {len(loud)} at WARNING or above:")
    for e in loud:
        print(f"  {e['level']} {e['logger']} {e['msg'][:160]}")
    # Per broker (address or node) at most one line per interval, and each later one says how
    # many it stood for.
    brokers = {e["kafka_broker"] for e in connection}
    assert connection and len(brokers) <= 3
    per_broker_bound = OUTAGE_S // INTERVAL_S + 2  # the first line, one per interval, the ERROR
    assert all(sum(e["kafka_broker"] == b for e in connection) <= per_broker_bound for b in brokers)
    assert sum(e["suppressed"] for e in connection) > 10 * len(connection)
    # Each broker's outage starts with a WARNING; the ERROR comes once, and only once that
    # broker has been away for the 10 s threshold.
    errors = [e for e in connection if e["level"] == "ERROR"]
    assert errors and len({e["kafka_broker"] for e in errors}) == len(errors)
    for error in errors:
        first = next(e for e in connection if e["kafka_broker"] == error["kafka_broker"])
        assert first["level"] == "WARNING"
        away_s = (datetime.fromisoformat(error["ts"]) - datetime.fromisoformat(first["ts"])).total_seconds()
        assert away_s >= OUTAGE_ERROR_S - 1, away_s  # the first line may come up to a second into the outage
    # Everything else the worker said at WARNING or above in those 15 s: a handful of lines.
    assert len(loud) - len(connection) <= 20, [e["msg"][:120] for e in loud if "kafka_broker" not in e]

    # The worker carries on once the broker is back.
    feed = Feed(broker.bootstrap, ns)
    feed.call("+17735550143")
    wait_for(
        lambda: kafka_tools.caught_up(broker.bootstrap, f"{ns}-streams", f"{ns}.call-events"),
        120,
        message="the worker read the call after the outage",
    )
