"""`ringback kafka` runs a real broker from the Maven jars, and keeps its data."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from ringback.dev.local_kafka import LocalKafka
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def test_restart_keeps_records(tmp_path):
    broker = LocalKafka(port=free_port(), home=tmp_path / "broker")
    broker.start()
    try:
        topic = f"restart-{uuid.uuid4().hex[:8]}"
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        producer.produce(topic, key=b"k", value=b"written before the restart")
        assert producer.flush(30) == 0

        assert broker.stop()
        assert broker.pid() is None
        broker.start()

        consumer = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": "restart-check", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([topic])
        try:
            msg = None
            for _ in range(60):
                msg = consumer.poll(1)
                if msg is not None and not msg.error():
                    break
            assert msg is not None and msg.value() == b"written before the restart"
        finally:
            consumer.close()
    finally:
        broker.stop()


def test_cli_start_status_stop(tmp_path):
    port = str(free_port())
    data = str(tmp_path / "cli-broker")

    def ringback(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ringback.cli", "kafka", *args, "--port", port, "--data-dir", data],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=180,
        )

    try:
        started = ringback("start")
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        status = ringback("status")
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stopped = ringback("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    after = ringback("status")
    assert after.returncode == 1 and "stopped" in after.stdout


def test_start_refuses_a_port_in_use(tmp_path):
    import socket

    from ringback.dev.local_kafka import KafkaError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        broker = LocalKafka(port=s.getsockname()[1], home=tmp_path / "busy")
        with pytest.raises(KafkaError, match="already in use"):
            broker.start()
