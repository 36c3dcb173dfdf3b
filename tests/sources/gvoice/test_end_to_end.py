"""Google Voice end to end on the real broker: a missed-call e-mail delivered to the test's IMAP
server → `ringback gvoice watch` → call event → worker → SMS sink → Twilio's API (a local
capture server): exactly one first SMS, also across a watcher restart, and an unreadable
e-mail is a dead letter, not an SMS."""

from __future__ import annotations

import signal

import pytest

from ringback.schemas import codec
from tests.conftest import wait_for
from tests.sources.gvoice.broker import apply_practices, start_watcher, store_password
from tests.sources.gvoice.mail import notification, now
from tests.sources.topic_records import read_topic
from tests.support import kafka_tools

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 31 + "1"
FIRST, SECOND = "+14155550131", "+14155550132"  # unknown to the practice: new-patient inquiries


@pytest.fixture
def service(processes, service_env, imap_server, twilio_capture):
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": "test-auth-token-not-a-secret",
        "TWILIO_API_BASE_URL": twilio_capture.url,
        "RINGBACK_STORE": "memory://",
    }
    apply_practices(processes, env)
    store_password(service_env)
    processes.start("worker", "worker", env=env)
    processes.start("sinks", "sinks", env=env)
    start_watcher(processes, imap_server, "gvoice", env)
    return env


def sms_to(twilio_capture) -> list[str]:
    return [m.form["To"] for m in twilio_capture.messages()]


def test_a_missed_call_email_gets_one_sms_and_a_watcher_restart_sends_nothing_twice(
    service, processes, imap_server, twilio_capture, service_env, kafka_bootstrap
):
    ns = service_env["RINGBACK_NAMESPACE"]
    imap_server.deliver(notification("missed-call.eml", caller=FIRST, when=now())[0])
    wait_for(lambda: sms_to(twilio_capture), 90, message="the first SMS at the Twilio API")
    sms = twilio_capture.messages()[0]
    assert sms.form["To"] == FIRST and sms.form["From"] == "+13125550100"
    assert "https://book.example.org/maple" in sms.form["Body"]

    # Killed at any moment and started again: the first e-mail is not acted on again, the
    # ones delivered while it was down are.
    processes.kill("gvoice", signal.SIGKILL)
    junk, _ = notification("not-a-notification.eml")
    imap_server.deliver(junk, notification("missed-call.eml", caller=SECOND, when=now())[0])
    start_watcher(processes, imap_server, "gvoice", service)
    wait_for(lambda: SECOND in sms_to(twilio_capture), 90, message="the second caller's SMS")
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"),
        30,
        message="sinks caught up with the actions topic",
    )
    assert sorted(sms_to(twilio_capture)) == [FIRST, SECOND]
    dead = [codec.decode("dead_letter", r["value"]) for r in read_topic(kafka_bootstrap, f"{ns}.dead-letters")]
    assert [d["raw"] for d in dead if d["source"] == "gvoice"] == [junk]
