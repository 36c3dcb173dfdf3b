"""A patient whose EHR record prefers Spanish, end to end on the real broker: patient and
flag records → a missed call → the stream worker → the SMS sink → Twilio's Messages API
as Prism serves its OpenAPI contract. A recording proxy in front of Prism keeps the form
the sink posted (Prism's log has no bodies), so the test reads the body Twilio would get."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx
import pytest

from ringback.domain import templates
from ringback.kafka import topics
from ringback.kafka.producer import AckedProducer
from ringback.schemas import codec
from tests.conftest import ARTIFACTS, REPO, wait_for
from tests.support import kafka_tools
from tests.support.prism import PrismMock
from tests.worker.test_reference_day import DAY_MS, Feed, now_ms, worker_env

pytestmark = pytest.mark.integration

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-not-a-secret"
PRACTICE, DID = "maple-family", "+13125550100"  # tests/fixtures/practices.yaml: no hold, SMS all day
SPANISH, UNKNOWN_LANGUAGE = "+14155550161", "+14155550162"


class RecordingProxy:
    """Forwards every request to `upstream` and keeps the form of each POST."""

    def __init__(self, upstream: str) -> None:
        self.forms: list[dict[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if method == "POST":
                    proxy.forms.append({k: v[0] for k, v in parse_qs(body.decode()).items()})
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(method, upstream + self.path, content=body, headers=headers, timeout=30)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_POST(self) -> None:
                self._forward("POST")

            def do_GET(self) -> None:
                self._forward("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def twilio_contract(request):
    log_dir = ARTIFACTS / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    prism = PrismMock(log_dir / "prism.log").start()
    proxy = RecordingProxy(prism.url)
    yield prism, proxy
    proxy.close()
    prism.stop()


def test_a_patient_preferring_spanish_gets_the_spanish_acknowledgement_at_twilio(
    processes, service_env, kafka_bootstrap, twilio_contract
):
    prism, proxy = twilio_contract
    ns = service_env["RINGBACK_NAMESPACE"]
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": proxy.url,
        "RINGBACK_STORE": "memory://",
    }
    applied = processes.run("config", "apply", str(REPO / "tests" / "fixtures" / "practices.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr

    # The EHR: two urgent patients, one preferring Spanish, one Vietnamese (no texts: the default).
    feed = Feed(kafka_bootstrap, ns, practice=PRACTICE, did=DID)
    producer = AckedProducer(kafka_bootstrap, timeout_s=10)
    try:
        for phone, language in ((SPANISH, "es"), (UNKNOWN_LANGUAGE, "vi")):
            record = {
                "practice_id": PRACTICE,
                "phone": phone,
                "patient_id": "pat-" + phone[-4:],
                "display_name": "Test Patient",
                "deceased": False,
                "assigned_provider": None,
                "language": language,
                "updated_at": now_ms() - DAY_MS,
            }
            topic = topics.topic_name(topics.PATIENTS, feed.env)
            producer.send_sync(topic, topics.join_key(PRACTICE, phone), codec.encode("patient", record))
            feed.flag(phone, "fl-" + phone[-4:], "callback-requested", "Nurse line: call back", callback_requested=True)
    finally:
        producer.close()

    processes.start("worker", "worker", env={**env, **worker_env()})
    processes.start("sinks", "sinks", env=env)
    for spec in (topics.PATIENTS, topics.FLAGS):  # the morning load is in before the calls come
        wait_for(
            lambda spec=spec: kafka_tools.caught_up(
                kafka_bootstrap, f"{ns}-streams", topics.topic_name(spec, feed.env)
            ),
            90,
            message=f"the worker read {spec.suffix}",
        )
    feed.call(SPANISH)
    feed.call(UNKNOWN_LANGUAGE)

    wait_for(lambda: len(proxy.forms) >= 2, 120, message="both acknowledgements at the Twilio API")
    wait_for(
        lambda: kafka_tools.caught_up(kafka_bootstrap, f"{ns}-sinks", f"{ns}.actions"), 30, message="sinks caught up"
    )
    bodies = {form["To"]: form["Body"] for form in proxy.forms}
    assert len(proxy.forms) == 2 and set(bodies) == {SPANISH, UNKNOWN_LANGUAGE}
    # urgent_minutes: the practice's urgent window, 30 min by default
    spanish = templates.SHIPPED["es"]["urgent_ack"].format(practice_name="Maple Family Practice", urgent_minutes="30")
    assert bodies[SPANISH] == spanish
    assert bodies[UNKNOWN_LANGUAGE].startswith("Maple Family Practice: your call is flagged for our clinical team")
    assert bodies[UNKNOWN_LANGUAGE].endswith("Reply STOP to opt out.")
    assert all(form["From"] == DID for form in proxy.forms)
    # Twilio's contract accepted both requests (201 from Prism, nothing rejected).
    prism.assert_all_valid()
    assert [r.status for r in prism.messages_created()] == [201, 201]
