"""Console sessions on the real broker: two `ringback console` replicas (same accounts file,
same signing key, same namespace), a third started after the sign-out, and sign-ins from
two client addresses on the loopback interface (127.0.0.1 and 127.0.0.2).

Only the consoles run: sessions need no worker or sinks (the console with every process
of the service: test_console_broker.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from ringback.config.settings import Settings
from ringback.kafka import topics
from tests.conftest import REPO, free_port, wait_for
from tests.support import kafka_tools
from tests.support.console_api import check_httpx

pytestmark = pytest.mark.integration

PASSWORD = "console-test-password"
COOKIE = "rb_console"


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def console(processes, service_env):
    """`console(name)` starts a `ringback console` replica and returns its URL."""
    service_env.update(
        {
            "RINGBACK_CONSOLE_SECRET": "console-sessions-test-key-0123456789",
            # Short delays so that eleven failures take seconds (defaults: 1 s, doubling, at most 60 s).
            "RINGBACK_CONSOLE_LOGIN_DELAY_S": "0.2",
            "RINGBACK_CONSOLE_LOGIN_MAX_DELAY_S": "2",
        }
    )
    for username in ("ana", "bo"):
        added = subprocess.run(
            [sys.executable, "-m", "ringback.cli", "console", "add-user", "--practice", "maple-family"]
            + ["--username", username, "--role", "admin_team", "--password-stdin"],
            env=service_env,
            cwd=str(REPO),
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr

    def start(name: str) -> str:
        port = free_port()
        processes.start(name, "console", "--host", "127.0.0.1", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(url), 90, message=f"{name} ready")
        return url

    return start


def sign_in(url: str, username: str = "ana", password: str = PASSWORD, address: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=address)  # the client address the console sees
    with httpx.Client(base_url=url, transport=transport, timeout=15) as client:
        response = client.post(
            "/api/login", json={"practice_id": "maple-family", "username": username, "password": password}
        )
    check_httpx(response)
    return response


def session_status(url: str, cookie: str, path: str = "/api/session") -> int:
    """What a replica answers to this cookie (as someone who copied it would send it)."""
    with httpx.Client(base_url=url, timeout=15) as client:
        if path == "/api/events":
            with client.stream("GET", path, headers={"Cookie": f"{COOKIE}={cookie}"}) as response:
                return response.status_code
        response = client.get(path, headers={"Cookie": f"{COOKIE}={cookie}"})
    check_httpx(response)
    return response.status_code


def test_after_sign_out_the_old_cookie_gets_401_on_every_replica(console, kafka_bootstrap, namespace):
    a, b = console("console-a"), console("console-b")
    signed_in = sign_in(a)
    assert signed_in.status_code == 200, signed_in.text
    cookie, csrf = signed_in.cookies[COOKIE], signed_in.json()["csrf_token"]
    other = sign_in(b, "bo").cookies[COOKIE]
    for url in (a, b):  # one signing key: each replica accepts the other's sessions
        assert session_status(url, cookie) == 200

    with httpx.Client(base_url=a, timeout=15) as client:
        out = client.post("/api/logout", json={}, headers={"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf})
    check_httpx(out)
    assert out.status_code == 204
    # Stored on the broker before the answer: the revocation is on the topic now.
    topic = topics.topic_name(topics.CONSOLE_SESSIONS, Settings(_env_file=None, ringback_namespace=namespace))
    records = kafka_tools.read_all(kafka_bootstrap, topic)
    assert len(records) == 1 and json.loads(records[0][1])["practice_id"] == "maple-family"

    assert session_status(a, cookie) == 401  # the replica that signed out: at once
    wait_for(lambda: session_status(b, cookie) == 401, 10, interval=0.1, message="replica B refuses the cookie")
    for path in ("/api/tasks", "/api/events"):
        assert session_status(b, cookie, path) == 401, path
    # A replica started after the sign-out reads it from the topic before accepting any cookie.
    c = console("console-c")
    assert session_status(c, cookie) == 401
    # Other sessions go on; the user signs in again with a new session.
    for url in (a, b, c):
        assert session_status(url, other) == 200
    again = sign_in(b)
    assert again.status_code == 200 and session_status(a, again.cookies[COOKIE]) == 200


def test_eleven_wrong_passwords_do_not_stop_the_right_one(console):
    a = console("console-a")

    def guess() -> httpx.Response | None:
        """A wrong password from 127.0.0.2; None while the console says to wait (429)."""
        answer = sign_in(a, password="wrong-password!", address="127.0.0.2")
        return None if answer.status_code == 429 else answer

    for _ in range(11):  # a guesser waiting as told between guesses
        answer = wait_for(guess, 30, interval=0.1, message="the delay to pass")
        assert isinstance(answer, httpx.Response) and answer.json()["error"] == "invalid_credentials"
    refused = sign_in(a, address="127.0.0.2")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    # The right password from her own address: at once.
    assert sign_in(a, address="127.0.0.1").status_code == 200
    # From the guesser's address (say a shared one): once the delay has passed.
    wait_for(lambda: sign_in(a, address="127.0.0.2").status_code == 200, 30, interval=0.1, message="the delay")
