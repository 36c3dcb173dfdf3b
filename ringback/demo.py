"""`ringback demo`: a local broker, the whole pipeline, and simulated missed calls.

Starts (or reuses, with KAFKA_BOOTSTRAP_SERVERS) a broker, publishes the example
practices file, runs the gateway, a stream worker and the sinks as separate
processes, posts signed Twilio missed-call webhooks, and prints every SMS that
reached the local Twilio stand-in with its latency. Cleans up what it started,
also on Ctrl-C.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator

from ringback.local_kafka import REPO_ROOT, LocalKafka, free_port
from ringback.settings import load_practices
from ringback.standin_http import CaptureServer

DEMO_TOKEN = "demo-auth-token-not-a-secret"
DEMO_ACCOUNT = "AC" + "d" * 32


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def run_demo(calls: int = 5, seed: int = 7) -> int:
    rng = random.Random(seed)
    practices_file = REPO_ROOT / "examples" / "practices.yaml"
    practice = load_practices(practices_file).practices[0]
    run_dir = REPO_ROOT / "var" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    broker: LocalKafka | None = None
    twilio = CaptureServer()
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = LocalKafka(port=free_port(), home=run_dir / "kafka")
            print(f"· starting a local Kafka broker ({broker.bootstrap}) …", flush=True)
            t0 = time.monotonic()
            broker.start()
            bootstrap = broker.bootstrap
            print(f"  broker ready in {time.monotonic() - t0:.1f}s", flush=True)
        port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "RINGBACK_NAMESPACE": f"demo{uuid.uuid4().hex[:6]}", "RINGBACK_PARTITIONS": "4",
               "RINGBACK_STATE_DIR": str(run_dir / "state"), "RINGBACK_STORE": "memory://",
               "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT, "TWILIO_AUTH_TOKEN": DEMO_TOKEN,
               "TWILIO_API_BASE_URL": twilio.url, "RINGBACK_WORKER_WEB_PORT": str(free_port()),
               "RINGBACK_SINKS_METRICS_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}

        def ringback(*args: str) -> subprocess.Popen:
            log = open(run_dir / f"{args[0]}.log", "ab")
            proc = subprocess.Popen([sys.executable, "-m", "ringback.cli", *args], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            started.append(proc)
            return proc

        print("· publishing examples/practices.yaml to the config topic …", flush=True)
        subprocess.run([sys.executable, "-m", "ringback.cli", "config", "apply", str(practices_file)],
                       env=env, check=True)
        print("· starting the gateway, a stream worker and the sinks …", flush=True)
        ringback("ingest", "--host", "127.0.0.1", "--port", str(port))
        ringback("worker")
        ringback("sinks")
        gateway = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{gateway}/readyz").status_code == 200, 90, "the gateway")

        endpoint = f"{gateway}/webhooks/twilio/voice/status"
        validator = RequestValidator(DEMO_TOKEN)
        sent_at: dict[str, float] = {}
        print(f"· {calls} missed calls to {practice.name} from numbers it does not know …", flush=True)
        for i in range(calls):
            caller = f"+1415555{rng.randrange(10000):04d}"
            params = {"CallSid": "CA" + uuid.uuid4().hex, "AccountSid": DEMO_ACCOUNT, "From": caller,
                      "To": practice.phone_numbers[0], "CallStatus": rng.choice(["no-answer", "busy"]),
                      "Direction": "inbound", "ApiVersion": "2010-04-01"}
            signature = validator.compute_signature(endpoint, params)
            response = httpx.post(endpoint, data=params, headers={"X-Twilio-Signature": signature})
            sent_at[caller] = time.monotonic()
            print(f"  call {i + 1}: …{caller[-4:]} {params['CallStatus']:9} → gateway {response.status_code}",
                  flush=True)
        _wait(lambda: len({m.form.get("To") for m in twilio.messages()}) >= len(sent_at), 120,
              "the SMS of every call (first start of a Faust worker takes a few seconds)")
        print("\nSMS sent through the Twilio API stand-in:")
        for m in twilio.messages():
            to = m.form.get("To", "")
            print(f"  to …{to[-4:]}: {m.form.get('Body')!r}")
        print(f"\n{len(twilio.messages())} SMS for {len(sent_at)} missed calls; logs in {run_dir}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", flush=True)
        return 130
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        twilio.close()
        if broker is not None:
            broker.stop()
