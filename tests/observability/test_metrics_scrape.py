"""Scrape /metrics of every process after a small scenario on the real broker and check
that the counters and histograms moved by exactly what the scenario implies
(docs/observability.md lists every metric).

Processes (shared by the module): `ringback ingest`, `ringback worker`, `ringback sinks`
and `ringback console`, one namespace, tests/fixtures/practices.yaml (maple-family:
no first-response hold, SMS allowed all day), Twilio and SMTP stand-ins, practice
labels on. The scenario:

  phase 1  three missed calls from new patients A, B, C (Twilio answers the first SMS
           request 429: one retry); a forged signature (403); a call to a number no
           practice owns (404); a signed callback without CallSid (400 + dead letter)
  phase 2  (once the three SMS are out) C calls again and is answered (a response,
           not a conversion: its follow-up gate is cancelled); A replies STOP (an opt-out)
  console  a failed sign-in and an unauthenticated task list
"""

from __future__ import annotations

import os
import random
import re
import string
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from ringback.dev.fake_apis import FakeApiServer
from tests.conftest import ARTIFACTS, REPO, Processes, free_port, wait_for
from tests.support.sink_stack import SmtpCapture

pytestmark = pytest.mark.integration

AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
PRACTICE = "maple-family"
PRACTICE_DID = "+13125550100"
A, B, C = "+14155550161", "+14155550162", "+14155550163"
UNKNOWN_DID = "+13125550777"  # no practice owns it
NEW = "NEW_PATIENT"


class Scrape:
    """One /metrics page, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(
            s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def series(self, name: str) -> list[dict]:
        return [s.labels for s in self.samples if s.name == name]

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


class Stack:
    def __init__(self, procs: Processes, ns: str, urls: dict[str, str], twilio: FakeApiServer) -> None:
        self.procs, self.ns, self.urls, self.twilio = procs, ns, urls, twilio
        self.posted: dict[str, float] = {}  # caller -> when its missed-call webhook was posted

    def scrape(self, process: str) -> Scrape:
        response = httpx.get(f"{self.urls[process]}/metrics", timeout=5)
        assert response.status_code == 200, (process, response.status_code)
        assert response.headers["content-type"].startswith("text/plain"), response.headers["content-type"]
        return Scrape(response.text)

    def post_twilio(self, path: str, params: dict[str, str], token: str = AUTH_TOKEN) -> httpx.Response:
        url = f"{self.urls['gateway']}{path}"
        signature = RequestValidator(token).compute_signature(url, params)
        return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def voice_status(
    call_sid: str, caller: str, status: str = "no-answer", to: str = PRACTICE_DID, **extra: str
) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": to,
        "CallStatus": status,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "Timestamp": formatdate(usegmt=True),
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "2",
        **extra,
    }


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    # Letters only: a label value with 7 digits in a row can then only be a leak.
    ns = "tm" + "".join(random.choices(string.ascii_lowercase, k=10))
    tmp: Path = tmp_path_factory.mktemp("metrics")
    twilio = FakeApiServer()
    twilio.script.append((429, {}))  # the first SMS request is refused once: one retry
    smtp = SmtpCapture().start()
    ports = {name: free_port() for name in ("gateway", "worker", "sinks", "console")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_", "KAFKA_CLIENT_ID"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "RINGBACK_NAMESPACE": ns,
            "RINGBACK_PARTITIONS": "4",
            "RINGBACK_STATE_DIR": str(tmp / "state"),
            "RINGBACK_SECRETS_DIR": str(tmp / "secrets"),
            "RINGBACK_WORKER_WEB_PORT": str(ports["worker"]),
            "RINGBACK_SINKS_METRICS_PORT": str(ports["sinks"]),
            "RINGBACK_STORE": "memory://",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": twilio.url,
            "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
            "RINGBACK_SINK_RETRY_BASE_S": "0.05",
            "RINGBACK_SINK_RETRY_JITTER_S": "0",
            "RINGBACK_LAG_INTERVAL_S": "1",
            "RINGBACK_METRICS_PRACTICE_LABELS": "on",
            "RINGBACK_CONSOLE_SECRET": "metrics-test-session-key-0123456789",
        }
    )
    log_dir = ARTIFACTS / "test_metrics_scrape"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(log_dir, env)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    s = Stack(procs, ns, urls, twilio)
    try:
        applied = procs.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"))
        assert applied.returncode == 0, applied.stderr
        procs.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(ports["gateway"]))
        procs.start("worker", "worker")
        procs.start("sinks", "sinks")
        procs.start("console", "console", "--host", "127.0.0.1", "--port", str(ports["console"]))
        wait_for(lambda: httpx.get(f"{urls['gateway']}/readyz").status_code == 200, 60, message="gateway ready")
        wait_for(lambda: httpx.get(f"{urls['console']}/readyz").status_code == 200, 60, message="console ready")
        # Agents running on their partitions: they process their own ticks.
        wait_for(
            lambda: s.scrape("worker").value("ringback_stream_inputs_total", input="tick") > 0,
            90,
            message="worker processing",
        )
        wait_for(lambda: s.scrape("sinks").value("ringback_sink_ticks_total") > 0, 90, message="sinks processing")
        run_scenario(s)
        yield s
    finally:
        procs.stop_all()
        twilio.close()
        smtp.stop()


def run_scenario(s: Stack) -> None:
    voice = "/webhooks/twilio/voice/status"
    # phase 1
    for n, caller in enumerate((A, B, C), 1):
        s.posted[caller] = time.time()
        assert s.post_twilio(voice, voice_status(sid("CA", n), caller)).status_code == 204
    assert s.post_twilio(voice, voice_status(sid("CA", 4), "+14155550164"), token="forged").status_code == 403
    assert s.post_twilio(voice, voice_status(sid("CA", 5), "+14155550165", to=UNKNOWN_DID)).status_code == 404
    no_sid = voice_status(sid("CA", 6), "+14155550166")
    del no_sid["CallSid"]
    assert s.post_twilio(voice, no_sid).status_code == 400
    wait_for(lambda: len(s.twilio.created) == 3, 60, message="three SMS at Twilio")
    # phase 2
    answered = voice_status(sid("CA", 7), C, status="completed", CallDuration="95")
    assert s.post_twilio(voice, answered).status_code == 204
    stop = {
        "MessageSid": sid("SM", 1),
        "AccountSid": ACCOUNT_SID,
        "From": A,
        "To": PRACTICE_DID,
        "Body": "STOP",
        "NumMedia": "0",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    assert s.post_twilio("/webhooks/twilio/sms/inbound", stop).status_code == 200
    # console
    console = s.urls["console"]
    assert (
        httpx.post(
            f"{console}/api/login",
            json={"practice_id": PRACTICE, "username": "nobody", "password": "wrong-password-123"},
        ).status_code
        == 401
    )
    assert httpx.get(f"{console}/api/tasks").status_code == 401
    # Everything settled: the worker handled the five call events and C's response,
    # the sinks the six actions and the opt-out.
    wait_for(
        lambda: s.scrape("worker").value("ringback_stream_timers_cancelled_total", timer="followup") == 1,
        60,
        message="C's response in the worker",
    )
    wait_for(
        lambda: s.scrape("sinks").value("ringback_sink_consent_changes_total", change="opt_out") == 1,
        60,
        message="the opt-out in the sinks",
    )
    wait_for(
        lambda: s.scrape("sinks").value("ringback_sink_actions_total", result="sent") == 6,
        60,
        message="six actions carried out",
    )


def test_gateway_counts_requests_events_rejections_and_dead_letters(stack):
    m = stack.scrape("gateway")
    voice = "twilio_voice_status"
    assert m.value("ringback_gateway_requests_total", endpoint=voice, status="204") == 4
    assert m.value("ringback_gateway_requests_total", endpoint=voice, status="403") == 1
    assert m.value("ringback_gateway_requests_total", endpoint=voice, status="404") == 1
    assert m.value("ringback_gateway_requests_total", endpoint=voice, status="400") == 1
    assert m.value("ringback_gateway_requests_total", endpoint="twilio_sms_inbound", status="200") == 1
    assert m.value("ringback_gateway_requests_total") == 8
    events = {
        (s["provider"], s["outcome"], s["practice"]): m.value("ringback_call_events_total", **s)
        for s in m.series("ringback_call_events_total")
    }
    assert events == {
        ("twilio", "MISSED", PRACTICE): 3,
        ("twilio", "ANSWERED", PRACTICE): 1,
        ("twilio", "SMS", PRACTICE): 1,
    }
    assert m.value("ringback_rejected_inputs_total", endpoint=voice, reason="signature") == 1
    assert m.value("ringback_rejected_inputs_total", endpoint=voice, reason="unknown_number") == 1
    assert m.value("ringback_rejected_inputs_total", endpoint=voice, reason="malformed") == 1
    assert m.value("ringback_rejected_inputs_total") == 3
    assert m.value("ringback_dead_letters_total", source=voice) == 1
    assert m.value("ringback_dead_letters_total") == 1
    # Every endpoint's series exists from the start (at 0), so increase() sees a first dead letter.
    assert {s["source"] for s in m.series("ringback_dead_letters_total")} >= {voice, "dialpad", "vonage_event"}
    # Broker-acknowledged requests only (the five accepted ones), each well under a second here.
    assert m.value("ringback_gateway_ack_seconds_count") == 5
    assert m.value("ringback_gateway_ack_seconds_bucket", le="1.0") == 5


def test_worker_counts_cases_actions_gates_and_outcomes(stack):
    m = stack.scrape("worker")
    assert m.value("ringback_stream_inputs_total", input="call_event") == 5
    assert m.value("ringback_stream_cases_opened_total", scenario=NEW) == 3
    assert m.value("ringback_stream_cases_opened_total") == 3
    assert m.value("ringback_stream_actions_total", kind="SEND_SMS", step="first_sms") == 3
    assert m.value("ringback_stream_actions_total", kind="NOTIFY_STAFF", step="notify_coordinator") == 3
    assert m.value("ringback_stream_actions_total") == 6
    assert m.value("ringback_stream_outcomes_total", state="OPEN") == 3
    assert m.value("ringback_stream_outcomes_total", state="RESPONDED") == 3
    assert m.value("ringback_stream_outcomes_total", final="true") == 0  # a response is not a conversion
    # Zero hold: each first_response gate fired while its call was processed, at once.
    assert m.value("ringback_stream_timers_fired_total", timer="first_response") == 3
    assert m.value("ringback_stream_timers_fired_total") == 3
    assert m.value("ringback_stream_timer_lag_seconds_count", timer="first_response") == 3
    assert m.value("ringback_stream_timer_lag_seconds_bucket", timer="first_response", le="5.0") == 3
    # C's response (a call that reached staff) dropped its follow-up gate; the case stays open.
    assert m.value("ringback_stream_timers_cancelled_total", timer="followup") == 1
    assert m.value("ringback_stream_timers_cancelled_total") == 1
    assert m.value("ringback_timers_overdue_seconds") == 0
    assert m.value("ringback_dead_letters_total") == 0
    assert {s["source"] for s in m.series("ringback_dead_letters_total")} >= {"streams.call_event", "streams.patient"}
    assert m.value("ringback_stream_ignored_total") == 0
    # The state table holds at least the three callers.
    assert m.value("ringback_table_keys", table="state") >= 3


def test_sinks_count_actions_latency_retries_and_opt_outs(stack):
    m = stack.scrape("sinks")
    assert m.value("ringback_sink_actions_total", kind="SEND_SMS", result="sent", practice=PRACTICE) == 3
    assert m.value("ringback_sink_actions_total", kind="NOTIFY_STAFF", result="sent", practice=PRACTICE) == 3
    assert m.value("ringback_sink_actions_total") == 6
    assert m.value("ringback_sink_retries_total", sink="twilio") == 1
    assert m.value("ringback_sink_retries_total") == 1
    assert m.value("ringback_sink_consent_changes_total", change="opt_out", source="keyword") == 1
    assert m.value("ringback_sink_consent_changes_total") == 1
    assert m.value("ringback_sink_sms_deferred_total") == 0
    assert m.value("ringback_dead_letters_total") == 0
    assert {s["source"] for s in m.series("ringback_dead_letters_total")} >= {"sinks.send_sms", f"{stack.ns}.actions"}
    assert len(stack.twilio.messages()) == 4  # three SMS, one of them tried twice

    first = "ringback_first_response_latency_seconds"
    assert m.value(f"{first}_count", scenario=NEW, practice=PRACTICE) == 3
    assert m.value(f"{first}_count") == 3
    # Each observation lies between 0 and (request at Twilio - webhook posted): the call was
    # reported after it was posted, and the attempt started before Twilio saw it.
    arrived = {r.form["To"]: r.received_at for r in stack.twilio.messages()}  # the last attempt per number
    bound = sum(arrived[c] - stack.posted[c] for c in (A, B, C))
    assert 0 < m.value(f"{first}_sum") <= bound
    assert m.value(f"{first}_bucket", scenario=NEW, le="30.0") == 3
    assert m.value(f"{first}_bucket", scenario=NEW, le="0.05") < 3  # the retried one waited its backoff

    # Table sizes: one sent-log entry per action, the opt-out, three SMS histories, nothing deferred.
    assert m.value("ringback_table_keys", table="sent-log") == 6
    assert m.value("ringback_table_keys", table="consent") == 1
    assert m.value("ringback_table_keys", table="sms-history") == 3
    assert m.value("ringback_table_keys", table="deferred") == 0


def test_console_counts_sign_ins_and_requests(stack):
    m = stack.scrape("console")
    assert m.value("ringback_console_logins_total", result="failed") == 1
    assert m.value("ringback_console_requests_total", route="login", status="401") == 1
    assert m.value("ringback_console_requests_total", route="tasks", status="401") == 1


def test_faust_workers_serve_faust_metrics_and_consumer_lag(stack):
    for process, prefix, group, topic in (
        ("worker", "ringback_worker_faust", f"{stack.ns}-streams", "call-events"),
        ("sinks", "ringback_sinks_faust", f"{stack.ns}-sinks", "actions"),
    ):
        m = stack.scrape(process)
        # Faust's own monitor and our registry on one page.
        assert m.value(f"{prefix}_messages_received_total") > 0, process
        assert m.value(f"{prefix}_assignment_operations_total", operation="completed") >= 1, process

        # Lag per assigned partition the group has committed (a series appears with the first
        # commit of the partition, every commit interval); caught up on the input topic.
        def lag_series(process=process, topic=topic):
            return [
                s
                for s in stack.scrape(process).series("ringback_consumer_lag_messages")
                if s["topic"] == f"{stack.ns}.{topic}"
            ]

        wait_for(lambda: lag_series() != [], 30, message=f"{process}: a lag series for {topic}")
        lag = lag_series()
        assert all(s["consumer_group"] == group for s in lag), (process, lag)
        wait_for(
            lambda process=process, topic=topic: (
                stack.scrape(process).value("ringback_consumer_lag_messages", topic=f"{stack.ns}.{topic}") == 0
            ),
            30,
            message=f"{process} lag on {topic} back to 0",
        )
    ticks = {
        s["partition"]
        for s in stack.scrape("worker").series("ringback_consumer_lag_messages")
        if s["topic"] == f"{stack.ns}.stream-ticks"
    }
    assert ticks == {"0", "1", "2", "3"}  # every partition is ticked, so every one is committed


PHONE_LIKE = re.compile(r"\d{7}")


def test_the_broker_tells_the_process_kinds_apart(stack, kafka_bootstrap):
    """An SRE reading the broker's logs, request metrics or quotas sees which kind of
    process a client belongs to (KAFKA_CLIENT_ID, by default ringback-<command>)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for group, client_id in ((f"{stack.ns}-streams", "ringback-worker"), (f"{stack.ns}-sinks", "ringback-sinks")):
        members = admin.describe_consumer_groups([group], request_timeout=10)[group].result().members
        assert members and {m.client_id for m in members} == {client_id}, group


def test_no_label_value_looks_like_a_phone_number(stack):
    national = [n[-10:] for n in (A, B, C, PRACTICE_DID, UNKNOWN_DID, "+14155550164", "+14155550165", "+14155550166")]
    for process in ("gateway", "worker", "sinks", "console"):
        m = stack.scrape(process)
        values = {v for s in m.samples for v in s.labels.values()}
        assert values, process
        leaks = {
            v
            for v in values
            if PHONE_LIKE.search(re.sub(r"[\s().+-]", "", v)) or any(n in re.sub(r"\D", "", v) for n in national)
        }
        assert not leaks, (process, leaks)
        assert PRACTICE in values or process in ("worker", "console"), process
