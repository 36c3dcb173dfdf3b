"""Kafka clients' connection errors under a broker outage (observability/client_errors.py):
WARNING, one line per broker per interval with the count suppressed, one ERROR past the
threshold; everything else untouched. Time is a fake clock."""

from __future__ import annotations

import json
import logging

import pytest

from ringback.observability import logs
from ringback.observability.client_errors import QuietClientErrors

REFUSED = "Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 9092)"
METADATA = "Unable to update metadata from [1]"
RDKAFKA = (
    "FAIL [rdkafka#consumer-4] [thrd:127.0.0.1:9092/bootstrap]: 127.0.0.1:9092/bootstrap: "
    "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def quiet(clock) -> QuietClientErrors:
    return QuietClientErrors(interval_s=10, error_after_s=60, clock=clock)


def record(msg: str, *args, logger: str = "aiokafka", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.getLogger(logger).makeRecord(logger, level, __file__, 1, msg, args, None)


def outage(quiet, clock, seconds: float, every: float = 1 / 128, messages=(REFUSED, METADATA)) -> list:
    """Lines the filter lets through while a client logs `messages` every `every` s (a binary
    fraction: exact clock values) for `seconds`."""
    written = []
    start = clock.now
    for i in range(int(seconds / every)):
        clock.now = start + i * every
        r = record(messages[i % len(messages)])
        if quiet.filter(r):
            written.append(r)
    clock.now = start + seconds
    return written


def test_an_outage_writes_one_warning_per_interval_with_the_count_suppressed(quiet, clock):
    written = outage(quiet, clock, 25)  # 3,200 ERROR lines from aiokafka
    assert [r.levelname for r in written] == ["WARNING"] * 3
    assert [r.suppressed for r in written] == [0, 1279, 1279]
    assert [r.outage_s for r in written] == [0, 10, 20]
    assert all(r.kafka_broker == "node 1" for r in written)
    assert written[0].getMessage() == f"{REFUSED} [Kafka broker node 1 unreachable for 0 s; at most one line per 10 s]"
    assert (
        written[1]
        .getMessage()
        .endswith(
            "[Kafka broker node 1 unreachable for 10 s; 1279 similar lines suppressed since the last one; "
            "at most one line per 10 s]"
        )
    )


def test_one_error_once_the_outage_outlasts_the_threshold(quiet, clock):
    written = outage(quiet, clock, 95, every=0.125)
    levels = [r.levelname for r in written]
    assert levels.count("ERROR") == 1
    error = written[levels.index("ERROR")]
    assert error.outage_s == 60 and "unreachable for 60 s (over 60 s)" in error.getMessage()
    assert len(written) == 10  # 0, 10, ... 50, the ERROR at 60, then 70, 80, 90


def test_after_a_quiet_interval_the_next_outage_starts_over(quiet, clock):
    outage(quiet, clock, 65, every=0.5)
    clock.now += 11  # the broker came back
    [first, *_] = outage(quiet, clock, 1)
    assert first.levelname == "WARNING" and first.outage_s == 0
    assert "unreachable for 0 s" in first.getMessage()


def test_each_broker_has_its_own_interval_and_addresses_count_as_their_node(quiet, clock):
    assert quiet.filter(record(REFUSED))  # learns 127.0.0.1:9092 is node 1
    assert not quiet.filter(record(RDKAFKA, logger="librdkafka"))  # the same broker, from librdkafka
    other = "Unable connect to node with id 2: [Errno 111] Connect call failed ('127.0.0.1', 9093)"
    r = record(other)
    assert quiet.filter(r) and r.kafka_broker == "node 2"
    assert not quiet.filter(record(other))
    unknown = record("Failed fetch messages: NodeNotReadyError: Attempt to send a request to node which is not ready")
    assert quiet.filter(unknown) and unknown.kafka_broker == "cluster"


def test_warnings_and_faust_lines_count_too_and_so_do_librdkafka_addresses_alone(quiet, clock):
    r = record("Heartbeat failed for group g: coordinator (node 3) is either not started", level=logging.WARNING)
    assert quiet.filter(r) and r.kafka_broker == "node 3" and r.levelname == "WARNING"
    r = record(RDKAFKA.replace("9092", "9094"), logger="librdkafka")
    assert quiet.filter(r) and r.kafka_broker == "127.0.0.1:9094"
    r = record("Fetch failed: KafkaConnectionError: Connection at 10.0.0.5:9092 closed", logger="faust.transport")
    assert quiet.filter(r) and r.kafka_broker == "10.0.0.5:9092"


@pytest.mark.parametrize(
    "logger,level,msg",
    [
        ("ringback.sinks.app", logging.ERROR, REFUSED),  # our own lines: never rate-limited
        ("aiokafka", logging.ERROR, "Unexpected error in sender routine"),  # not a connection error
        ("aiokafka", logging.INFO, REFUSED),  # below WARNING: the level decides already
        ("faust.tables.recovery", logging.ERROR, "Crashed reason=ConsistencyError(...)"),
    ],
)
def test_other_lines_pass_unchanged(quiet, clock, logger, level, msg):
    for _ in range(3):
        r = record(msg, logger=logger, level=level)
        assert quiet.filter(r)
        assert r.levelno == level and r.getMessage() == msg and not hasattr(r, "suppressed")


def test_the_handler_set_up_by_configure_is_quiet(capsys):
    root = logging.getLogger()
    handlers, level, current = root.handlers[:], root.level, logs._current
    try:
        logs.configure("json", "INFO", client_errors_interval_s=3600, client_outage_error_s=7200)
        [handler] = root.handlers
        assert [type(f) for f in handler.filters] == [QuietClientErrors, logs.RedactPhoneNumbers]
        for _ in range(500):
            logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, REFUSED[34:])
        logs.librdkafka_logger().error(RDKAFKA)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(e["level"], e["logger"], e["suppressed"]) for e in lines] == [("WARNING", "aiokafka", 0)]
        # Faust workers get the same settings.
        [faust_filter] = [
            f for f in logs.faust_worker_options()["logging_config"]["filters"].values() if "interval_s" in f
        ]
        assert faust_filter["interval_s"] == 3600 and faust_filter["error_after_s"] == 7200
    finally:
        logs._current = current
        root.handlers[:] = handlers
        root.setLevel(level)
