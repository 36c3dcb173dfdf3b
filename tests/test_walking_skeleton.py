"""One missed call end to end on the real broker: webhook → call event → agent →
action command → SMS sink → Twilio Messages API (a local capture server)."""

from __future__ import annotations

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import REPO, free_port, wait_for
from tests.support import kafka_tools

pytestmark = pytest.mark.integration

AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
CALLER = "+14155550123"  # unknown to the practice: a new-patient inquiry
PRACTICE_DID = "+13125550100"  # tests/fixtures/practices.yaml: Maple Family Practice


def status_callback(call_sid: str, caller: str = CALLER) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": PRACTICE_DID,
        "CallStatus": "no-answer",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "Timestamp": "Tue, 24 Nov 2026 15:04:05 +0000",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "2",
    }


@pytest.fixture
def running_service(processes, service_env, kafka_bootstrap, twilio_capture):
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_capture.url,
        "RINGBACK_STORE": "memory://",
    }
    # The example practice with no first-response hold (the stream workflow waits 45 s by
    # default for cancel-if-answered) and SMS allowed all day (the test may run at night).
    applied = processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    port = free_port()
    processes.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(port), env=env)
    processes.start("worker", "worker", env=env)
    processes.start("sinks", "sinks", env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, message="gateway ready")
    return url


def post_signed(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> httpx.Response:
    endpoint = f"{url}/webhooks/twilio/voice/status"
    signature = RequestValidator(token).compute_signature(endpoint, params)
    return httpx.post(endpoint, data=params, headers={"X-Twilio-Signature": signature})


def test_missed_call_from_new_patient_gets_one_booking_sms(
    running_service, twilio_capture, service_env, kafka_bootstrap
):
    ns = service_env["RINGBACK_NAMESPACE"]
    response = post_signed(running_service, status_callback("CA" + "a" * 32))
    assert response.status_code == 204, response.text

    wait_for(lambda: twilio_capture.messages(), 90, message="the SMS request at the Twilio API")
    # Everything the sinks consumed is committed: no second request can still be on its way.
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"),
        30,
        message="sinks caught up with the actions topic",
    )
    messages = twilio_capture.messages()
    assert len(messages) == 1
    sms = messages[0]
    assert sms.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert sms.form["To"] == CALLER
    assert sms.form["From"] == "+13125550100"
    assert "https://book.example.org/maple" in sms.form["Body"]
    assert sms.headers.get("Authorization", "").startswith("Basic ")


def test_forged_signature_is_refused_and_nothing_is_sent(running_service, twilio_capture, service_env, kafka_bootstrap):
    ns = service_env["RINGBACK_NAMESPACE"]
    before = kafka_tools.total_records(kafka_bootstrap, f"{ns}.call-events")
    forged = post_signed(running_service, status_callback("CA" + "b" * 32), token="wrong-token")
    assert forged.status_code == 403
    unsigned = httpx.post(f"{running_service}/webhooks/twilio/voice/status", data=status_callback("CA" + "c" * 32))
    assert unsigned.status_code == 403
    assert kafka_tools.total_records(kafka_bootstrap, f"{ns}.call-events") == before

    # A genuine call afterwards still goes through, and it is the only SMS.
    ok = post_signed(running_service, status_callback("CA" + "d" * 32, caller="+14155550999"))
    assert ok.status_code == 204
    wait_for(lambda: twilio_capture.messages(), 90, message="the genuine call's SMS")
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"), 30, message="sinks caught up"
    )
    assert [m.form["To"] for m in twilio_capture.messages()] == ["+14155550999"]
