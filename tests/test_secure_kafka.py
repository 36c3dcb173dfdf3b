"""The service on a broker as a health system runs it: SASL_SSL with SCRAM, a CA made by the
session, KRaft's StandardAuthorizer on. Every process connects with SCRAM credentials from its
secrets folder; one with no or a wrong password stops at start with a message naming the setting."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import REPO, free_port, wait_for
from tests.support import kafka_tools
from tests.support.secure_kafka import secure_kafka_fixture, with_credentials  # noqa: F401 - fixture secure_kafka
from tests.test_walking_skeleton import ACCOUNT_SID, AUTH_TOKEN, CALLER, post_signed, status_callback

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka_bootstrap(secure_kafka):  # this module's broker is the secured one
    """The kafka_tools readers connect as the super user."""
    return secure_kafka.client_config()


@pytest.fixture
def service_env(service_env, secure_kafka):
    """Every `ringback` process of the test connects as the super user, its password in a file."""
    return with_credentials(service_env, secure_kafka)


def test_missed_call_gets_its_sms_and_the_console_serves_on_a_sasl_ssl_broker(
    processes, service_env, kafka_bootstrap, twilio_capture
):
    assert service_env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and "KAFKA_SASL_PASSWORD" not in service_env
    ns = service_env["RINGBACK_NAMESPACE"]
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_capture.url,
        "RINGBACK_STORE": "memory://",
        "RINGBACK_CONSOLE_SECRET": "console-test-session-key-0123456789",
    }
    applied = processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    gateway, console = free_port(), free_port()
    processes.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(gateway), env=env)
    processes.start("worker", "worker", env=env)
    processes.start("sinks", "sinks", env=env)
    processes.start("console", "console", "--host", "127.0.0.1", "--port", str(console), env=env)
    url, console_url = f"http://127.0.0.1:{gateway}", f"http://127.0.0.1:{console}"
    wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 90, message="gateway ready")

    response = post_signed(url, status_callback("CA" + "e" * 32))
    assert response.status_code == 204, response.text
    wait_for(lambda: twilio_capture.messages(), 120, message="the SMS request at the Twilio API")
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"), 60, message="sinks caught up"
    )
    assert [m.form["To"] for m in twilio_capture.messages()] == [CALLER]

    wait_for(lambda: httpx.get(f"{console_url}/readyz").status_code == 200, 90, message="console ready")


@pytest.mark.parametrize("command", [("config", "apply", "tests/fixtures/practices.yaml"), ("worker",)])
def test_a_wrong_password_stops_the_process_at_start_naming_the_setting(processes, service_env, secure_kafka, command):
    secure_kafka.add_scram_user("clinic-ops", "the-right-password")
    env = with_credentials(service_env, secure_kafka, "clinic-ops", "a-wrong-password")
    done = processes.run(*command, env=env, timeout=60)
    assert done.returncode != 0
    assert "KAFKA_SASL_PASSWORD" in done.stderr and "refused" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_no_password_or_no_ca_stops_the_process_at_start_naming_the_setting(
    processes, service_env, secure_kafka, tmp_path
):
    (tmp_path / "secrets" / "KAFKA_SASL_PASSWORD").unlink()
    done = processes.run("config", "apply", "tests/fixtures/practices.yaml", timeout=60)
    assert done.returncode != 0
    assert "KAFKA_SASL_PASSWORD is not set" in done.stderr, done.stderr

    (tmp_path / "secrets" / "KAFKA_SASL_PASSWORD").write_text(secure_kafka.admin_password())
    done = processes.run("ingest", "--port", str(free_port()), env={"KAFKA_SSL_CA_FILE": ""}, timeout=60)
    assert done.returncode != 0
    assert "KAFKA_SSL_CA_FILE" in done.stderr and "certificate verify failed" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_plaintext_client_is_told_the_broker_expects_tls(processes, service_env):
    done = processes.run(
        "config", "apply", "tests/fixtures/practices.yaml", env={"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    )
    assert done.returncode != 0
    assert "KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in done.stderr and "expect TLS" in done.stderr, done.stderr
