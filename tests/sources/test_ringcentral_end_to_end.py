"""RingCentral sessions end to end on the real broker: `ringback ingest` + `worker` + `sinks`
processes, notifications posted as RingCentral delivers them (shuffled, some twice), the
SMS at a local stand-in for Twilio's API.

A session with an IVR leg and a ring group where one member answered → no SMS; a session
where nobody answered → exactly one SMS."""

from __future__ import annotations

import json
import random
import uuid

import httpx
import pytest

from tests.conftest import free_port, wait_for
from tests.support import kafka_tools
from tests.support import webhooks as wh

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-not-a-secret"
RC_TOKEN = "lakeside-ringcentral-verification-token"
DID = "+16175550142"
ANSWERED_CALLER, MISSED_CALLER = "+14155550181", "+14155550182"
PRACTICES = f"""
practices:
  - id: lakeside-rc
    name: Lakeside Pediatrics
    time_zone: America/New_York
    phone_numbers: ["{DID}"]
    sms_from: "{DID}"
    booking_link: https://book.example.org/lakeside
    routing:
      scheduling_coordinator: email:desk@lakeside.example.org
    windows:
      first_response_hold: 2
    quiet_hours: {{start: "00:00", end: "00:00"}}
    secrets:
      ringcentral_verification_token: LAKESIDE_RC_TOKEN
"""


@pytest.fixture
def running(processes, service_env, tmp_path, twilio_capture):
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_capture.url,
        "LAKESIDE_RC_TOKEN": RC_TOKEN,
        "RINGBACK_STORE": "memory://",
    }
    (tmp_path / "practices.yaml").write_text(PRACTICES)
    applied = processes.run("config", "apply", str(tmp_path / "practices.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    port = free_port()
    processes.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(port), env=env)
    processes.start("worker", "worker", env=env)
    processes.start("sinks", "sinks", env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, message="gateway ready")
    return url


def session(name: str, caller: str) -> list[dict]:
    raw = (wh.VENDOR / "ringcentral" / f"{name}.json").read_text()
    old = json.loads(raw)[0]["body"]["telephonySessionId"]
    return json.loads(raw.replace(old[2:], uuid.uuid4().hex).replace("+14155550123", caller))


def post(url: str, notifications: list[dict]) -> None:
    for note in notifications:
        hook = wh.ringcentral(note, RC_TOKEN)
        response = httpx.post(url + hook.path, content=hook.body, headers=hook.headers)
        assert response.status_code == 200, response.text


def test_ring_group_answered_gets_no_sms_and_nobody_answered_gets_one(running, twilio_capture, service_env):
    ns, bootstrap = service_env["RINGBACK_NAMESPACE"], service_env["KAFKA_BOOTSTRAP_SERVERS"]
    rng = random.Random(3)
    answered = session("inbound_ivr_ring_group_answered", ANSWERED_CALLER)
    missed = session("inbound_ivr_ring_group_missed", MISSED_CALLER)
    post(running, rng.sample(answered, len(answered)) + answered[:4])  # out of order, some twice
    post(running, rng.sample(missed, len(missed)) + missed[-3:])

    wait_for(lambda: twilio_capture.messages(), 90, message="the SMS for the session nobody answered")
    wait_for(
        lambda: kafka_tools.caught_up(bootstrap, f"{ns}-streams", f"{ns}.call-events"),
        30,
        message="worker caught up with the call events",
    )
    wait_for(lambda: kafka_tools.caught_up(bootstrap, f"{ns}-sinks", f"{ns}.actions"), 30, message="sinks caught up")
    messages = twilio_capture.messages()
    assert [(m.form["To"], m.form["From"]) for m in messages] == [(MISSED_CALLER, DID)]
    assert "https://book.example.org/lakeside" in messages[0].form["Body"]
