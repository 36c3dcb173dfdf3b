"""Test session plumbing: a real Kafka broker, per-test names, processes, polling.

The session uses `KAFKA_BOOTSTRAP_SERVERS` when it is set (CI starts a broker);
otherwise it starts its own broker on a free port in a temporary folder. Every
test gets its own namespace, so topics and consumer groups never collide and
runs can go side by side.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ringback.dev.waiting import wait_for  # noqa: F401 - re-exported: tests import it from here

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from ringback.dev.local_kafka import LocalKafka

    broker = LocalKafka(port=free_port(), home=tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class Processes:
    """`ringback` subprocesses of one test, with their logs kept as artifacts."""

    def __init__(self, log_dir: Path, base_env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.base_env = base_env
        self.procs: dict[str, subprocess.Popen] = {}
        self._logged: set[str] = set()  # names whose log this test has started

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        # A restart within the test appends to its log; an earlier run's log is replaced
        # (tests read these logs back, and a rerun must not count the last run's lines).
        log = open(self.log_dir / f"{name}.log", "ab" if name in self._logged else "wb")
        self._logged.add(name)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringback.cli", *args],
            env={**self.base_env, **(env or {})},
            cwd=str(REPO),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ringback.cli", *args],
            env={**self.base_env, **(env or {})},
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self.procs.pop(name)


@pytest.fixture
def twilio_capture():
    """A local HTTP server standing in for Twilio's API (and Slack's webhooks): records every request."""
    from ringback.dev.fake_apis import FakeApiServer

    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def service_env(kafka_bootstrap, namespace, tmp_path) -> dict[str, str]:
    """Environment for `ringback` processes of this test: own namespace, own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "RINGBACK_NAMESPACE": namespace,
            "RINGBACK_PARTITIONS": "4",
            "RINGBACK_STATE_DIR": str(tmp_path / "state"),
            "RINGBACK_SECRETS_DIR": str(tmp_path / "secrets"),
            "RINGBACK_WORKER_WEB_PORT": str(free_port()),
            "RINGBACK_SINKS_METRICS_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def processes(request, service_env, tmp_path):
    log_dir = ARTIFACTS / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(log_dir, service_env)
    yield procs
    procs.stop_all()
