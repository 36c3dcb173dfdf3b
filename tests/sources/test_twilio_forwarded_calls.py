"""Calls forwarded with `<Dial>` through the ready-made Twilio flow, end to end on the broker:
`ringback ingest` + `worker` + `sinks` processes, Twilio's Messages API a local capture
server. Practice `forward-test` of tests/fixtures/practices.yaml: a 6 s first-response hold.

Each call is posted the way Twilio sends it, signed over the URLs the flow's TwiML names
(`ringback.dev.simulator.webhooks.twilio_forwarded`). "No SMS" is checked against a marker:
a later missed call whose SMS is due after the one that must not come; once the marker's
SMS is out and the sinks are caught up, anything due before it would have been sent.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from email.utils import formatdate

import httpx
import pytest

from ringback.dev.simulator import webhooks as wh
from tests.conftest import ARTIFACTS, REPO, Processes, free_port, wait_for
from tests.support import kafka_tools

pytestmark = pytest.mark.integration

TOKEN = "test-auth-token-not-a-secret"
PRACTICE, NUMBER, DESK = "forward-test", "+13125550500", "+13125550581"


class Stack:
    def __init__(self, bootstrap: str, capture, tmp) -> None:
        self.bootstrap = bootstrap
        self.ns = f"t{uuid.uuid4().hex[:10]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "RINGBACK_NAMESPACE": self.ns,
                "RINGBACK_PARTITIONS": "4",
                "RINGBACK_STATE_DIR": str(tmp / "state"),
                "RINGBACK_SECRETS_DIR": str(tmp / "secrets"),
                "RINGBACK_WORKER_WEB_PORT": str(free_port()),
                "RINGBACK_SINKS_METRICS_PORT": str(free_port()),
                "RINGBACK_STORE": "memory://",
                "TWILIO_ACCOUNT_SID": wh.ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": TOKEN,
                "TWILIO_API_BASE_URL": capture.url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        log_dir = ARTIFACTS / "test_twilio_forwarded_calls"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(log_dir, env)
        self.capture = capture
        applied = self.procs.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"))
        assert applied.returncode == 0, applied.stderr
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.procs.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(port))
        self.procs.start("worker", "worker")
        self.procs.start("sinks", "sinks")
        wait_for(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, 60, message="gateway ready")

    def call(self, outcome: str, caller: str, talk_s: int = 95) -> list[wh.Webhook]:
        """A call placed now: Twilio stamps its status callbacks to the second."""
        sid = "CA" + uuid.uuid4().hex
        stamp = formatdate(math.floor(time.time()), usegmt=True)
        return wh.twilio_forwarded(
            self.url, TOKEN, PRACTICE, sid, caller, NUMBER, DESK, outcome, talk_s=talk_s, stamp=stamp
        )

    def post(self, hooks: list[wh.Webhook]) -> None:
        for hook in hooks:
            response = httpx.post(self.url + hook.path, content=hook.body, headers=hook.headers)
            assert response.status_code in (200, 204), (hook.path, response.status_code, response.text)

    def sms_to(self, caller: str) -> list:
        return [m for m in self.capture.messages() if m.form.get("To") == caller]

    def settled(self, marker: str) -> None:
        """Until the marker caller's SMS was sent and the sinks consumed every action."""
        wait_for(lambda: self.sms_to(marker), 90, message="the marker call's SMS")
        wait_for(
            lambda: kafka_tools.caught_up(self.bootstrap, f"{self.ns}-sinks", f"{self.ns}.actions"),
            30,
            message="sinks caught up with the actions topic",
        )

    def close(self) -> None:
        self.procs.stop_all()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    from ringback.dev.fake_apis import FakeApiServer

    capture = FakeApiServer()
    s = Stack(kafka_bootstrap, capture, tmp_path_factory.mktemp("forwarded"))
    yield s
    s.close()
    capture.close()


def _without(hooks: list[wh.Webhook], path: str) -> tuple[list[wh.Webhook], wh.Webhook]:
    """The call's callbacks minus its last one at `path` (to post that one elsewhere in the order)."""
    index = max(i for i, h in enumerate(hooks) if h.path.split("?")[0] == path)
    return hooks[:index] + hooks[index + 1 :], hooks[index]


def test_a_forwarded_call_nobody_answered_gets_one_sms_in_either_order(stack):
    dial_first, parent_first = "+14155550601", "+14155550602"
    hooks = stack.call(wh.FORWARD_MISSED, dial_first)
    assert [h.path.split("?")[0] for h in hooks] == [
        wh.TWILIO_VOICE_INCOMING,
        wh.TWILIO_VOICE_DIAL,
        wh.TWILIO_VOICE_STATUS,  # the leg's no-answer
        wh.TWILIO_VOICE_STATUS,  # the parent's completed, CallDuration = the ringing time
    ]
    stack.post(hooks)
    # The parent's `completed` (ANSWERED by Twilio's own reading) first, the Dial verdict after.
    rest, dial = _without(stack.call(wh.FORWARD_MISSED, parent_first), wh.TWILIO_VOICE_DIAL)
    stack.post(rest)
    stack.post([dial])
    stack.settled(parent_first)
    wait_for(lambda: stack.sms_to(dial_first), 30, message="the SMS of the call whose Dial verdict came first")
    assert len(stack.sms_to(dial_first)) == 1 and len(stack.sms_to(parent_first)) == 1
    assert "https://book.example.org/forward" in stack.sms_to(dial_first)[0].form["Body"]


def test_a_forwarded_call_answered_by_a_cell_phones_voicemail_is_missed(stack):
    caller = "+14155550611"
    hooks = stack.call(wh.FORWARD_MACHINE, caller, talk_s=40)
    assert [h.path.split("?")[0] for h in hooks] == [
        wh.TWILIO_VOICE_INCOMING,
        wh.TWILIO_VOICE_STATUS,  # the leg answered (by the cell's voicemail)
        wh.TWILIO_VOICE_AMD,  # machine_start
        wh.TWILIO_VOICE_STATUS,  # the leg completed
        wh.TWILIO_VOICE_DIAL,  # completed, 40 s
        wh.TWILIO_VOICE_STATUS,  # the parent completed
    ]
    stack.post(hooks)
    wait_for(lambda: stack.sms_to(caller), 90, message="the SMS of the call a machine answered")
    stack.settled(caller)
    assert len(stack.sms_to(caller)) == 1


def test_a_call_answered_within_the_hold_cancels_the_first_sms(stack):
    patient, marker = "+14155550621", "+14155550622"
    stack.post(stack.call(wh.FORWARD_MISSED, patient))  # missed: the first SMS waits for the 6 s hold
    # The patient calls back (a later second than the miss: Twilio's Timestamp has whole seconds).
    second = math.floor(time.time()) + 1
    wait_for(lambda: time.time() >= second, 5, interval=0.05, message="the next second")
    answered = stack.call(wh.FORWARD_ANSWERED, patient, talk_s=300)
    # The call back gets through: the leg's `answered`, and seconds later machine detection's `human` ...
    incoming, leg_answered, human, *when_it_ends = answered
    stack.post([incoming, leg_answered, human])
    stack.post(stack.call(wh.FORWARD_MISSED, marker))  # its SMS is due after the patient's would have been
    stack.settled(marker)
    assert stack.sms_to(patient) == []
    # ... the rest minutes later (a 300 s conversation) changes nothing.
    stack.post(when_it_ends)
    stack.post(stack.call(wh.FORWARD_MISSED, marker := "+14155550623"))
    stack.settled(marker)
    assert stack.sms_to(patient) == []
