"""An urgent caller's nurse is told at once, end to end on the real broker: patient and flag
records → a missed call → the stream worker (clinical task + its notice) → the sinks → a
real SMTP server (aiosmtpd) for the nurse, the Slack stand-in for the manager's escalation.
What leaves ringback for Slack and e-mail names the task by its console link and says
nothing about the patient: no name, no number, no reason for the call."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from urllib.parse import quote

import pytest
import yaml

from ringback.dev.fake_apis import FakeApiServer
from ringback.kafka import topics
from tests.conftest import REPO, wait_for
from tests.support import kafka_tools
from tests.support.sink_stack import SmtpCapture
from tests.worker.test_reference_day import Feed, worker_env

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 31 + "1"
PRACTICE, DID = "maple-family", "+13125550100"
CALLER = "+14155550171"
NAME, REASON = "Ann Example", "Chest pain since this morning"
CONSOLE = "https://console.maple.example.org"
SLACK_PATH = "/services/T0000/B0000/manager"
ESCALATION_S = 4  # the manager's alert comes this long after the call (45 min in a real practice)


@pytest.fixture
def practices_file(tmp_path):
    """tests/fixtures/practices.yaml's Maple practice (no hold, SMS all day), its escalation in seconds."""
    data = yaml.safe_load((REPO / "tests" / "fixtures" / "practices.yaml").read_text())
    maple = next(p for p in data["practices"] if p["id"] == PRACTICE)
    maple["windows"] = {**maple["windows"], "urgent_escalation": ESCALATION_S}
    path = tmp_path / "practices.yaml"
    path.write_text(yaml.safe_dump({"practices": [maple]}))
    return path


def no_patient_data(text: str) -> None:
    for leak in ("Ann", "Example", "Chest", "pain", CALLER, CALLER[-4:]):
        assert leak not in text, (leak, text)


def test_an_urgent_tasks_nurse_is_emailed_at_once_and_the_managers_alert_links_the_task(
    processes, service_env, kafka_bootstrap, twilio_capture, practices_file
):
    smtp = SmtpCapture().start()
    slack = FakeApiServer()
    try:
        env = {
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": "test-auth-token-not-a-secret",
            "TWILIO_API_BASE_URL": twilio_capture.url,
            "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
            "RINGBACK_SMTP_FROM": "ringback@maple.example.org",
            "MAPLE_SLACK_WEBHOOK": slack.url + SLACK_PATH,
            "RINGBACK_CONSOLE_URL": CONSOLE,
            "RINGBACK_STORE": "memory://",
        }
        applied = processes.run("config", "apply", str(practices_file), env=env)
        assert applied.returncode == 0, applied.stderr
        feed = Feed(kafka_bootstrap, service_env["RINGBACK_NAMESPACE"], practice=PRACTICE, did=DID)
        feed.patient(CALLER, NAME)
        feed.flag(CALLER, "fl-1", "callback-requested", REASON, callback_requested=True)
        processes.start("worker", "worker", env={**env, **worker_env()})
        processes.start("sinks", "sinks", env=env)
        ns = service_env["RINGBACK_NAMESPACE"]
        for spec in (topics.PATIENTS, topics.FLAGS):  # the patient is known before the call comes
            wait_for(
                lambda spec=spec: kafka_tools.caught_up(
                    kafka_bootstrap, f"{ns}-streams", topics.topic_name(spec, feed.env)
                ),
                90,
                message=f"the worker read {spec.suffix}",
            )
        feed.call(CALLER)

        def mail_to(address: str) -> list:
            return [m for m in smtp.messages if address in m.rcpt_tos]

        [envelope] = wait_for(lambda: mail_to("nurse@maple.example.org"), 120, message="the nurse's e-mail")
        mail = message_from_bytes(envelope.content, policy=policy.default)
        text = mail.get_content()  # quoted-printable decoded
        task_id_quoted = text.split(f"Task: {CONSOLE}/#task=", 1)[1].split()[0]
        assert task_id_quoted.startswith(quote(f"{PRACTICE}:", safe="")) and task_id_quoted.endswith("clinical_task")
        assert mail["Subject"] == "[Maple Family Practice] URGENT: New task for the nurse (URGENT)"
        assert mail["Importance"] == "high" and "Priority: URGENT" in text and "Due: " in text
        no_patient_data(mail["Subject"] + text)

        def alerts() -> list[str]:
            return [json.loads(p.body)["text"] for p in slack.posts(SLACK_PATH)]

        [alert] = wait_for(alerts, 60, message="the manager's escalation in Slack")
        assert f"Task: {CONSOLE}/#task={task_id_quoted}" in alert.splitlines()
        assert alert.startswith("<!here>") and "Escalation" in alert and "manager_alert" not in alert
        no_patient_data(alert)
        # Nobody else was told anything: one notice, one alert.
        assert [m.rcpt_tos for m in smtp.messages] == [["nurse@maple.example.org"]]
    finally:
        slack.close()
        smtp.stop()
