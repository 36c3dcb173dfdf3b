"""The sink channels one by one, against real local servers (no broker): Twilio's
contract (Prism) and the capture server, Slack's HTTP contract, a real SMTP server;
plus templates, staff texts and the retry waits."""

from __future__ import annotations

import copy
import json
from email import message_from_bytes
from pathlib import Path

import pytest
import yaml
from aiosmtpd.controller import Controller
from tenacity import RetryCallState

from ringback.config.practices_file import ConfigError, load_practices, parse_practices
from ringback.config.settings import Settings
from ringback.dev.fake_apis import FakeApiServer
from ringback.sinks import records as rec
from ringback.sinks.channels.email import SmtpMailer, message_id
from ringback.sinks.channels.slack import URGENT_MENTION, SlackWebhook
from ringback.sinks.channels.twilio_sms import SmsRejected, TwilioSms, classify_rest_error, status_callback_url
from ringback.sinks.retry import OptedOut, Permanent, RateLimited, RetryPolicy, Transient
from tests.conftest import REPO, free_port
from tests.sinks.harness import NOON, key, make
from tests.sinks.harness import action as harness_action
from tests.support.prism import PrismMock

ACCOUNT_SID = "AC" + "0" * 31 + "1"
CALLER = "+14155550123"


@pytest.fixture(scope="module")
def practices():
    return load_practices(REPO / "examples" / "practices.yaml").practices


def twilio_env(url: str) -> Settings:
    return Settings(twilio_account_sid=ACCOUNT_SID, twilio_auth_token="tok", twilio_api_base_url=url, _env_file=None)


# ------------------------------------------------------------------ Twilio
async def test_both_sender_kinds_and_the_lookup_pass_twilios_contract(practices, tmp_path):
    prism = PrismMock(tmp_path / "prism.log").start()
    try:
        sms = TwilioSms(twilio_env(prism.url), timeout_s=10)
        callback = "https://rb.example.org/webhooks/twilio/sms/status?practice=maple-family&action=a%3Ab"
        assert (await sms.send(practices[0], CALLER, "hello", callback)).startswith("SM")  # From
        assert (await sms.send(practices[1], CALLER, "hello")).startswith("SM")  # MessagingServiceSid
        assert await sms.find_sent(practices[0], CALLER, "hello", 1_767_000_000_000) is None
        await sms.close()
        assert [r.method for r in prism.requests()] == ["POST", "POST", "GET", "GET"]
        prism.assert_all_valid()
    finally:
        prism.stop()


async def test_prism_helper_reports_a_request_the_contract_rejects(tmp_path):
    import httpx

    prism = PrismMock(tmp_path / "prism.log").start()
    try:
        httpx.post(
            f"{prism.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
            data={"Body": "x"},
            auth=(ACCOUNT_SID, "tok"),
        )
        with pytest.raises(AssertionError, match="required property 'To'"):
            prism.assert_all_valid()
    finally:
        prism.stop()


async def test_form_fields_and_lookup_against_the_capture_server(practices):
    server = FakeApiServer()
    try:
        sms = TwilioSms(twilio_env(server.url), timeout_s=5)
        sid = await sms.send(practices[0], CALLER, "Hi there", "https://cb.example.org/x")
        await sms.send(practices[1], CALLER, "Hi there")
        first, second = server.messages()
        assert (first.form["To"], first.form["From"], first.form["Body"], first.form["StatusCallback"]) == (
            CALLER,
            "+13125550100",
            "Hi there",
            "https://cb.example.org/x",
        )
        assert second.form["MessagingServiceSid"] == practices[1].messaging_service_sid and "From" not in second.form
        assert await sms.find_sent(practices[0], CALLER, "Hi  there", 0) == sid  # whitespace-insensitive
        assert await sms.find_sent(practices[0], CALLER, "another text", 0) is None
        assert await sms.find_sent(practices[0], "+14155550999", "Hi there", 0) is None
        with pytest.raises(SmsRejected):
            await sms.send(practices[0], CALLER, "  ")
        await sms.close()
    finally:
        server.close()


async def test_twilio_failures_are_classified(practices):
    server = FakeApiServer(script=[500, (429, {"Retry-After": "7"}), 429, ("hang", 2)])
    try:
        sms = TwilioSms(twilio_env(server.url), timeout_s=0.5)
        with pytest.raises(Transient) as e500:
            await sms.send(practices[0], CALLER, "x")
        with pytest.raises(RateLimited) as e429:
            await sms.send(practices[0], CALLER, "x")
        with pytest.raises(RateLimited) as bare429:
            await sms.send(practices[0], CALLER, "x")
        with pytest.raises(Transient) as slow:
            await sms.send(practices[0], CALLER, "x")
        assert (e500.value.ambiguous, e429.value.ambiguous, slow.value.ambiguous) == (True, False, True)
        assert (e429.value.retry_after, bare429.value.retry_after) == (7.0, 1.0)  # Retry-After, else 1 s
        await sms.close()
    finally:
        server.close()
    refused = TwilioSms(twilio_env(f"http://127.0.0.1:{free_port()}"), timeout_s=2)
    with pytest.raises(Transient) as nobody:
        await refused.send(practices[0], CALLER, "x")
    assert nobody.value.ambiguous is False  # never left: a resend is safe
    await refused.close()


def test_rest_error_mapping_and_callback_url():
    from twilio.base.exceptions import TwilioRestException

    assert isinstance(classify_rest_error(TwilioRestException(400, "u", code=21610)), OptedOut)
    assert isinstance(classify_rest_error(TwilioRestException(400, "u", code=21211)), Permanent)
    assert classify_rest_error(TwilioRestException(503, "u")).ambiguous is True
    env = Settings(ringback_public_url="https://rb.example.org/", _env_file=None)
    assert status_callback_url(env, "maple-family", "maple-family:abc:first_sms") == (
        "https://rb.example.org/webhooks/twilio/sms/status?practice=maple-family&action=maple-family%3Aabc%3Afirst_sms"
    )
    assert status_callback_url(Settings(ringback_public_url=None, _env_file=None), "p", "a") is None


# ------------------------------------------------------------------ Slack
async def test_slack_contract():
    server = FakeApiServer(other_script=[(429, {"Retry-After": "3"}), 500, 404])
    try:
        slack = SlackWebhook(timeout_s=5)
        url = server.url + "/services/T/B/x"
        with pytest.raises(Transient) as limited:
            await slack.post(url, "hello")
        assert limited.value.retry_after == 3.0
        with pytest.raises(Transient):
            await slack.post(url, "hello")
        with pytest.raises(Permanent, match="404"):
            await slack.post(url, "hello")
        await slack.post(url, "hello")  # 200 ok
        await slack.post(url, "an urgent task", urgent=True)
        texts = [json.loads(r.body) for r in server.posts("/services/T/B/x")]
        assert texts == [{"text": "hello"}] * 4 + [{"text": f"{URGENT_MENTION} an urgent task"}]
        assert URGENT_MENTION.startswith("<!here>")  # Slack's mention of the channel's active members
        await slack.close()
    finally:
        server.close()


async def test_slack_unreachable_is_retryable_and_a_silent_slack_is_ambiguous():
    """A refused connection sent nothing (retry freely); a post with no answer may have
    been delivered (retried as ambiguous, at least once)."""
    import socket

    slack = SlackWebhook(timeout_s=0.3)
    with socket.socket() as bound, socket.socket() as silent:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: the connection is refused
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts into the backlog and never answers
        try:
            with pytest.raises(Transient, match="cannot connect") as refused:
                await slack.post(f"http://127.0.0.1:{bound.getsockname()[1]}/services/T/B/x", "hello")
            assert refused.value.ambiguous is False
            with pytest.raises(Transient, match="broke off") as unanswered:
                await slack.post(f"http://127.0.0.1:{silent.getsockname()[1]}/services/T/B/x", "hello")
            assert unanswered.value.ambiguous is True
        finally:
            await slack.close()


# ------------------------------------------------------------------ e-mail
async def test_email_through_a_real_smtp_server():
    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd names its hooks so
            got.append(envelope)
            return "250 OK"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd names its hooks so
            if address.startswith("nobody@"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", sender="ringback@maple.example.org")
        await mailer.send("maple-family:abc:notify", "desk@maple.example.org", "[Maple] Missed call", "Call back")
        msg = message_from_bytes(got[0].content)
        assert got[0].rcpt_tos == ["desk@maple.example.org"] and got[0].mail_from == "ringback@maple.example.org"
        assert msg["Subject"] == "[Maple] Missed call" and msg["Message-ID"] == message_id("maple-family:abc:notify")
        assert msg.get_payload().strip() == "Call back"
        assert msg["Importance"] is None and msg["X-Priority"] is None
        await mailer.send("maple-family:abc:clinical_task_notice", "nurse@maple.example.org", "s", "t", urgent=True)
        urgent = message_from_bytes(got[1].content)
        assert urgent["Importance"] == "high" and urgent["X-Priority"] == "1"
        with pytest.raises(Permanent):
            await mailer.send("a", "nobody@maple.example.org", "s", "t")
    finally:
        controller.stop()
    with pytest.raises(Transient):
        await SmtpMailer(f"smtp://127.0.0.1:{free_port()}", timeout_s=2).send("a", "x@y.org", "s", "t")
    with pytest.raises(ValueError):
        SmtpMailer("http://mail.example.org")


# ------------------------------------------------------------------ templates (practices file)
EXAMPLE = yaml.safe_load((REPO / "examples" / "practices.yaml").read_text())


@pytest.mark.parametrize(
    "template, reason",
    [
        ("Your results for {diagnosis} are in", "placeholder {diagnosis} is not allowed"),
        ("Hi {patient_name}", "placeholder {patient_name} is not allowed"),
        ("Hi {practice_name!r}", "format spec or conversion"),
        ("Hi {practice_name:>20}", "format spec or conversion"),
        ("Hi {}", "placeholder {} is not allowed"),
        ("Hi {practice_name.__class__}", "is not allowed"),
        ("Hi {booking_link", "not a valid template"),
    ],
)
def test_template_with_unknown_or_clinical_field_is_rejected_with_its_path(template, reason):
    data = copy.deepcopy(EXAMPLE)
    data["practices"][1]["templates"] = {"new_patient_first": template}
    with pytest.raises(ConfigError) as err:
        parse_practices(data)
    assert "practices.1.templates.new_patient_first" in str(err.value)
    assert reason in str(err.value)


def test_templates_with_the_allowed_placeholders_pass():
    data = copy.deepcopy(EXAMPLE)
    data["practices"][0]["templates"] = {
        "new_patient_first": "Hi, {practice_name} here. Book: {booking_link} or call {callback_number}. "
        "Reschedule: {reschedule_link} {{literal}} Reply STOP to opt out."
    }
    assert parse_practices(data).practices[0].templates["new_patient_first"].startswith("Hi, {practice_name}")


# ------------------------------------------------------------------ staff text, tasks, waits
STAFF_ACTION = {
    "action_id": "maple-family:c1:manager_alert",
    "case_id": "maple-family:c1",
    "kind": "ALERT_MANAGER",
    "step": "manager_alert",
    "reason": "urgent callback not completed in time",
    "created_at": 1_764_000_000_000,
    "missed_at": 1_763_997_300_000,
    "priority": "URGENT",
    "body": "Escalation: an urgent clinical callback task was not completed within 45 min of the missed call.",
    "params": {"caller": CALLER, "role": "department_manager", "task_id": "maple-family:c1:clinical_task"},
    "due_at": None,
}


def test_the_managers_alert_links_the_task_it_is_about_not_its_own_id():
    m = rec.staff_message(STAFF_ACTION, "Maple Family Practice", "America/Chicago", "https://console.example.org/")
    assert "Task: https://console.example.org/#task=maple-family%3Ac1%3Aclinical_task" in m.text.splitlines()
    assert "manager_alert" not in m.text and "Escalation" in m.subject and m.urgent
    assert m.subject == "[Maple Family Practice] URGENT: Escalation: task overdue (URGENT)"
    # Minimum necessary: no number (not even masked), no reason for the call.
    assert "0123" not in m.text and STAFF_ACTION["reason"] not in m.text
    # Without the console's URL the task is named by its id.
    plain = rec.staff_message(STAFF_ACTION, "Maple", "America/Chicago", None)
    assert "Task: task maple-family:c1:clinical_task in the staff console" in plain.text


def test_a_task_notice_says_practice_role_priority_due_and_link_and_nothing_else():
    notice = {
        **STAFF_ACTION,
        "action_id": "maple-family:c1:clinical_task_notice",
        "kind": "NOTIFY_STAFF",
        "step": "clinical_task_notice",
        "reason": "a task was created for this role",
        "missed_at": 1_763_999_000_000,
        "body": "URGENT: a new urgent clinical callback task for the nurse. Open it now.",
        "due_at": 1_764_001_800_000,
        "params": {"role": "nurse", "task_id": "maple-family:c1:clinical_task"},
    }
    m = rec.staff_message(notice, "Maple Family Practice", "America/Chicago", "https://console.example.org")
    assert m.subject == "[Maple Family Practice] URGENT: New task for the nurse (URGENT)" and m.urgent
    assert m.text.splitlines() == [
        "Maple Family Practice: New task for the nurse",
        "URGENT: a new urgent clinical callback task for the nurse. Open it now.",
        "Priority: URGENT",
        "Due: Mon 24 Nov 10:30 CST",
        "Task: https://console.example.org/#task=maple-family%3Ac1%3Aclinical_task",
    ]
    normal = rec.staff_message({**notice, "priority": "NORMAL"}, "Maple", "America/Chicago", None)
    assert not normal.urgent and "URGENT" not in normal.subject


def test_retry_wait_honours_retry_after_with_a_cap_else_backs_off(monkeypatch):
    policy = RetryPolicy(attempts=5, base_s=1.0, max_s=8.0, retry_after_cap_s=30.0, jitter_s=0.5)
    wait = policy.wait()

    def state(exc: Exception, attempt: int) -> RetryCallState:
        rs = RetryCallState(None, None, (), {})
        rs.attempt_number = attempt
        rs.set_exception((type(exc), exc, None))
        return rs

    assert wait(state(Transient("429", retry_after=12), 1)) == 12
    assert wait(state(Transient("429", retry_after=600), 1)) == 30
    # The jitter drawn (tenacity: random.uniform(0, jitter)) fixed at both ends: doubling from
    # 1 s, the jitter added on top, never more than 8 s.
    attempts = (1, 2, 3, 4, 5, 6)
    monkeypatch.setattr("tenacity.wait.random.uniform", lambda low, high: low)
    assert [wait(state(Transient("500"), n)) for n in attempts] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    monkeypatch.setattr("tenacity.wait.random.uniform", lambda low, high: high)
    assert [wait(state(Transient("500"), n)) for n in attempts] == [1.5, 2.5, 4.5, 8.0, 8.0, 8.0]


def test_package_json_pins_prism_and_the_lock_file_exists():
    pkg = json.loads((REPO / "package.json").read_text())
    assert "@stoplight/prism-cli" in pkg["devDependencies"]
    lock = json.loads((REPO / "package-lock.json").read_text())
    assert "node_modules/@stoplight/prism-cli" in lock["packages"]
    assert Path(REPO / "node_modules" / ".bin" / "prism").exists()


async def test_the_task_the_sink_puts_in_place_of_a_blocked_sms_is_notified_to_its_role(practices):
    ex = make(practices)
    stop = {
        "event_type": "SMS",
        "direction": "INBOUND",
        "practice_id": "maple-family",
        "caller": CALLER,
        "sms_body": "STOP",
        "occurred_at": int(NOON * 1000),
    }
    await ex.on_call_event(key(), stop)
    sms = harness_action()
    assert await ex.handle_action(key(), sms, 0) == rec.SUPPRESSED
    [(to, subject, text)] = ex.mailer.calls
    assert to == "frontdesk@maple.example.org" and subject.endswith("New task for the scheduling coordinator (NORMAL)")
    assert f"Task: task {sms['action_id']}:callback in the staff console" in text and CALLER[-4:] not in text
    assert ex.t.sent_log[sms["case_id"] + ":first_sms_callback_notice"]["state"] == rec.SENT
    assert await ex.handle_action(key(), sms, 0) == "DUPLICATE" and len(ex.mailer.calls) == 1
