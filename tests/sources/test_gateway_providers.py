"""`ringback ingest` as a process on the real broker, three practices on four providers.

1. A mix of every provider's webhooks (payloads shaped after the vendor material, the
   Dialpad vendor vector posted byte for byte) for three practices: the call-events topic
   holds exactly the expected canonical events, once each; forged and unknown-number
   webhooks leave nothing; redeliveries come back with identical event ids.
2. SIGKILL of the gateway mid-stream while clients that retry on connection errors and
   503 (as the providers do) keep posting, then a restart: every posted event is on the
   topic, duplicates only as identical event ids.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from twilio.request_validator import RequestValidator

from ringback.kafka import topics as topic_specs
from tests.conftest import ARTIFACTS, Processes, free_port, wait_for
from tests.support import kafka_tools
from tests.support import webhooks as wh

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")]

VECTOR = wh.dialpad_vectors()["dialpad_style_SYNTHETIC"]
MAPLE, HARBOR, LAKE_RC, LAKE_VONAGE = "+13125550100", "+15005550006", "+16175550142", "+16175550143"
# Secrets: two through environment variables, two through files in the secrets directory.
ENV_SECRETS = {
    "MAPLE_TWILIO_TOKEN": "maple-twilio-auth-token",
    "LAKESIDE_VONAGE_SECRET": "lakeside-vonage-signature-secret-0123",
}
FILE_SECRETS = {"HARBOR_DIALPAD_SECRET": VECTOR["secret"], "LAKESIDE_RC_TOKEN": "lakeside-rc-verification-token"}
TWILIO, VONAGE_SECRET = ENV_SECRETS["MAPLE_TWILIO_TOKEN"], ENV_SECRETS["LAKESIDE_VONAGE_SECRET"]
DIALPAD_SECRET, RC_TOKEN = FILE_SECRETS["HARBOR_DIALPAD_SECRET"], FILE_SECRETS["LAKESIDE_RC_TOKEN"]

PRACTICES_YAML = """\
practices:
  - id: maple-family
    name: Maple Family Practice
    time_zone: America/Chicago
    phone_numbers: ["(312) 555-0100"]          # Twilio
    sms_from: "+13125550100"
    booking_link: https://book.example.org/maple
    secrets: {twilio_auth_token: MAPLE_TWILIO_TOKEN}
  - id: harbor-dental
    name: Harbor Dental
    time_zone: America/Los_Angeles
    phone_numbers: ["+1 500 555 0006"]         # Dialpad (the vendor vector's internal_number)
    sms_from: "+15005550006"
    booking_link: https://book.example.org/harbor
    secrets: {dialpad_webhook_secret: HARBOR_DIALPAD_SECRET}
  - id: lakeside-peds
    name: Lakeside Pediatrics
    time_zone: America/New_York
    phone_numbers: ["+16175550142", "+16175550143"]   # RingCentral main line, Vonage line
    sms_from: "+16175550142"
    booking_link: https://book.example.org/lakeside
    secrets:
      ringcentral_verification_token: LAKESIDE_RC_TOKEN
      vonage_signature_secret: LAKESIDE_VONAGE_SECRET
"""


class Service:
    """Config applied once for the module; gateways started on demand."""

    def __init__(self, procs: Processes, bootstrap: str, namespace: str) -> None:
        self.procs, self.bootstrap, self.namespace = procs, bootstrap, namespace
        self.call_topic = f"{namespace}.{topic_specs.CALL_EVENTS.suffix}"

    def start_gateway(self, name: str, port: int) -> str:
        url = f"http://127.0.0.1:{port}"
        # The public URL is what the sinks put in status-callback URLs and what Twilio signs.
        self.procs.start(name, "ingest", "--host", "127.0.0.1", "--port", str(port), env={"RINGBACK_PUBLIC_URL": url})
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 60, message=f"{name} ready")
        return url

    def events(self) -> list[tuple[bytes, dict]]:
        return kafka_tools.read_all(self.bootstrap, self.call_topic, "call_event")


@pytest.fixture(scope="module")
def service(kafka_bootstrap, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("providers")
    (tmp / "secrets").mkdir()
    for name, value in FILE_SECRETS.items():
        (tmp / "secrets" / name).write_text(value + "\n")
    (tmp / "practices.yaml").write_text(PRACTICES_YAML)
    namespace = f"t{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RINGBACK_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "RINGBACK_NAMESPACE": namespace,
            "RINGBACK_PARTITIONS": "4",
            "RINGBACK_STATE_DIR": str(tmp / "state"),
            "RINGBACK_SECRETS_DIR": str(tmp / "secrets"),
            "PYTHONUNBUFFERED": "1",
            **ENV_SECRETS,
        }
    )
    log_dir = ARTIFACTS / "test_gateway_providers"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(log_dir, env)
    applied = procs.run("config", "apply", str(tmp / "practices.yaml"))
    assert applied.returncode == 0, applied.stderr
    yield Service(procs, kafka_bootstrap, namespace)
    procs.stop_all()


# ---------------------------------------------------------------- the mix
def mix(url: str) -> tuple[list[tuple[wh.Webhook, int]], dict[str, dict], set[str]]:
    """(webhooks with their expected status, expected events by id, every call id used)."""

    def tw(path, params):
        return wh.twilio(url, path, params, TWILIO)

    a, b, c, d = "+14155550101", "+14155550102", "+14155550103", "(415) 555-0104"
    cs = {k: "CA" + uuid.uuid4().hex for k in ("missed", "vm", "answered", "ringing", "forged", "out")}
    sms = "SM" + uuid.uuid4().hex
    rc = {k: "s-" + uuid.uuid4().hex for k in ("missed", "vm", "answered", "setup")}
    vo = {k: str(uuid.uuid4()) for k in ("unanswered", "busy", "completed", "machine", "started")}
    dp = {k: int(uuid.uuid4().int % 10**12) for k in ("vm", "answered", "ringing")}
    hooks = [
        # maple-family, Twilio
        (tw(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs["missed"], a, MAPLE, "no-answer")), 204),
        (
            tw(
                wh.TWILIO_VOICE_STATUS,
                wh.twilio_voice_status(
                    cs["vm"],
                    b,
                    MAPLE,
                    "completed",
                    CallDuration="38",
                    RecordingSid="RE" + cs["vm"][2:],
                    RecordingUrl="https://api.twilio.com/rec/1",
                ),
            ),
            204,
        ),
        (tw(wh.TWILIO_TRANSCRIPTION, wh.twilio_transcription(cs["vm"], b, MAPLE, "My tooth hurts, call me")), 204),
        (
            tw(
                wh.TWILIO_VOICE_STATUS,
                wh.twilio_voice_status(cs["answered"], c, MAPLE, "completed", CallDuration="240"),
            ),
            204,
        ),
        (tw(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs["ringing"], c, MAPLE, "ringing")), 204),
        (
            tw(
                wh.TWILIO_VOICE_STATUS,
                wh.twilio_voice_status(cs["out"], MAPLE, a, "no-answer", Direction="outbound-api"),
            ),
            204,
        ),
        (tw(wh.TWILIO_SMS_INBOUND, wh.twilio_sms_inbound(sms, a, MAPLE, "Yes please call back")), 200),
        (wh.twilio(url, wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs["forged"], d, MAPLE), "guess"), 403),
        (tw(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs["forged"], d, "+13125550177")), 404),
        # harbor-dental, Dialpad: the vendor vector's body byte for byte, then our own events
        (wh.Webhook(wh.DIALPAD, VECTOR["http_body"].encode(), {"Content-Type": "application/jwt"}), 204),
        (wh.dialpad(wh.dialpad_call(dp["vm"], "voicemail", b, HARBOR), DIALPAD_SECRET), 204),
        (
            wh.dialpad(
                wh.dialpad_call(
                    dp["vm"],
                    "voicemail_uploaded",
                    b,
                    HARBOR,
                    transcription_text="Refill please",
                    voicemail_share_link="https://dialpad.com/v/1",
                ),
                DIALPAD_SECRET,
            ),
            204,
        ),
        (wh.dialpad(wh.dialpad_call(dp["answered"], "connected", c, HARBOR, connected=True), DIALPAD_SECRET), 204),
        (wh.dialpad(wh.dialpad_call(dp["ringing"], "ringing", c, HARBOR), DIALPAD_SECRET), 204),
        (wh.dialpad(wh.dialpad_call(dp["ringing"], "missed", c, HARBOR), "not-the-secret"), 403),
        # lakeside-peds, RingCentral
        (wh.ringcentral_handshake(str(uuid.uuid4())), 200),
        (
            wh.ringcentral(
                wh.ringcentral_session(rc["missed"], a, LAKE_RC, "Disconnected", "NoAnswer", missed=True), RC_TOKEN
            ),
            200,
        ),
        (wh.ringcentral(wh.ringcentral_session(rc["vm"], b, LAKE_RC, "VoiceMail"), RC_TOKEN), 200),
        (wh.ringcentral(wh.ringcentral_session(rc["answered"], c, LAKE_RC, "Answered"), RC_TOKEN), 200),
        (wh.ringcentral(wh.ringcentral_session(rc["setup"], c, LAKE_RC, "Setup"), RC_TOKEN), 200),
        (wh.ringcentral(wh.ringcentral_session(rc["setup"], c, LAKE_RC, "VoiceMail"), "not-the-token"), 403),
        # lakeside-peds, Vonage
        (
            wh.vonage(
                wh.vonage_event(vo["unanswered"], "unanswered", a, LAKE_VONAGE, detail="unavailable"),
                VONAGE_SECRET,
                iat=int(time.time()),
            ),
            204,
        ),
        (wh.vonage(wh.vonage_event(vo["busy"], "busy", b, LAKE_VONAGE), VONAGE_SECRET, iat=int(time.time())), 204),
        (
            wh.vonage(
                wh.vonage_event(vo["completed"], "completed", c, LAKE_VONAGE), VONAGE_SECRET, iat=int(time.time())
            ),
            204,
        ),
        (
            wh.vonage(wh.vonage_event(vo["machine"], "machine", a, LAKE_VONAGE), VONAGE_SECRET, iat=int(time.time())),
            204,
        ),
        (
            wh.vonage(wh.vonage_event(vo["started"], "started", a, LAKE_VONAGE), VONAGE_SECRET, iat=int(time.time())),
            204,
        ),
        (wh.vonage(wh.vonage_event(vo["started"], "busy", a, LAKE_VONAGE), None), 403),
    ]

    def ev(event_id, provider, practice, caller, called, outcome, event_type="CALL"):
        return event_id, {
            "provider": provider,
            "practice_id": practice,
            "caller": caller,
            "called": called,
            "outcome": outcome,
            "event_type": event_type,
            "direction": "INBOUND",
        }

    expected = dict(
        [
            ev(f"twilio:{cs['missed']}:no-answer", "twilio", "maple-family", a, MAPLE, "MISSED"),
            ev(f"twilio:{cs['vm']}:completed", "twilio", "maple-family", b, MAPLE, "VOICEMAIL"),
            ev(f"twilio:{cs['vm']}:transcription", "twilio", "maple-family", b, MAPLE, "VOICEMAIL", "TRANSCRIPTION"),
            ev(f"twilio:{cs['answered']}:completed", "twilio", "maple-family", c, MAPLE, "ANSWERED"),
            ev(f"twilio:{sms}:sms", "twilio", "maple-family", a, MAPLE, None, "SMS"),
            ev("dialpad:1000000001:missed", "dialpad", "harbor-dental", "+14155551234", HARBOR, "MISSED"),
            ev(f"dialpad:{dp['vm']}:voicemail", "dialpad", "harbor-dental", b, HARBOR, "VOICEMAIL"),
            ev(
                f"dialpad:{dp['vm']}:transcription", "dialpad", "harbor-dental", b, HARBOR, "VOICEMAIL", "TRANSCRIPTION"
            ),
            ev(f"dialpad:{dp['answered']}:answered", "dialpad", "harbor-dental", c, HARBOR, "ANSWERED"),
            ev(f"ringcentral:{rc['missed']}:missed", "ringcentral", "lakeside-peds", a, LAKE_RC, "MISSED"),
            ev(f"ringcentral:{rc['vm']}:voicemail", "ringcentral", "lakeside-peds", b, LAKE_RC, "VOICEMAIL"),
            ev(f"ringcentral:{rc['answered']}:answered", "ringcentral", "lakeside-peds", c, LAKE_RC, "ANSWERED"),
            ev(f"vonage:{vo['unanswered']}:missed", "vonage", "lakeside-peds", a, LAKE_VONAGE, "MISSED"),
            ev(f"vonage:{vo['busy']}:missed", "vonage", "lakeside-peds", b, LAKE_VONAGE, "MISSED"),
            ev(f"vonage:{vo['completed']}:answered", "vonage", "lakeside-peds", c, LAKE_VONAGE, "ANSWERED"),
            ev(f"vonage:{vo['machine']}:voicemail", "vonage", "lakeside-peds", a, LAKE_VONAGE, "VOICEMAIL"),
        ]
    )
    call_ids = {*cs.values(), sms, *rc.values(), *vo.values(), *(str(v) for v in dp.values()), "1000000001"}
    return hooks, expected, call_ids


def post(client: httpx.Client, url: str, hook: wh.Webhook) -> httpx.Response:
    return client.post(url + hook.path, content=hook.body, headers=hook.headers)


def test_mix_of_providers_gives_exactly_the_expected_events_once_each(service):
    url = service.start_gateway("gateway-mix", free_port())
    hooks, expected, call_ids = mix(url)
    with httpx.Client(timeout=15) as client:
        for hook, status in hooks:
            response = post(client, url, hook)
            assert response.status_code == status, (hook.path, response.text)
            if "Validation-Token" in hook.headers:
                assert response.headers["Validation-Token"] == hook.headers["Validation-Token"]
        # everything answered 2xx is on the topic already: read it without waiting
        mine = [(k, e) for k, e in service.events() if e["provider_call_id"] in call_ids]
        assert Counter(e["event_id"] for _, e in mine) == Counter(expected.keys()), (
            "exactly the expected events, once each"
        )
        for key, event in mine:
            want = expected[event["event_id"]]
            assert {k: event[k] for k in want} == want, event["event_id"]
            assert key == f"{event['practice_id']}|{event['caller']}".encode()
        first = {e["event_id"]: e for _, e in mine}
        assert (
            first[f"twilio:{next(i for i in call_ids if i.startswith('SM'))}:sms"]["sms_body"] == "Yes please call back"
        )
        assert first["dialpad:1000000001:missed"]["occurred_at"] == VECTOR["decoded_payload"]["event_timestamp"]

        # Redelivery of every accepted webhook, and a later notification of an already
        # reported call (Dialpad's hangup after missed): the same event ids, nothing new.
        for hook, status in hooks:
            if status in (200, 204):
                assert post(client, url, hook).status_code == status
        hangup = wh.dialpad(wh.dialpad_call(1000000001, "hangup", "+14155551234", HARBOR), DIALPAD_SECRET)
        assert post(client, url, hangup).status_code == 204
    mine = [e for _, e in service.events() if e["provider_call_id"] in call_ids]
    counts = Counter(e["event_id"] for e in mine)
    assert counts == Counter({i: 3 if i == "dialpad:1000000001:missed" else 2 for i in expected})
    for event_id in counts:
        # Identical records but for the gateway's receive time, which is also the occurred_at
        # of the callbacks that carry no time of their own (Twilio SMS and transcription).
        no_time = event_id.startswith("twilio:") and event_id.endswith((":sms", ":transcription"))
        copies = [
            {k: v for k, v in e.items() if k != "received_at" and not (no_time and k == "occurred_at")}
            for e in mine
            if e["event_id"] == event_id and e["provider_status"] != "hangup"
        ]
        assert len(copies) == 2 and copies[0] == copies[1], event_id


def test_delivery_receipt_on_the_url_the_sms_sink_gives_twilio(service):
    """The SMS sink's own status-callback URL (percent-encoded action id), signed as Twilio
    signs it, becomes a message_status record keyed practice|recipient."""
    from ringback.config.settings import Settings
    from ringback.sinks.channels.twilio_sms import status_callback_url

    url = service.start_gateway("gateway-receipts", free_port())
    callback = status_callback_url(Settings(ringback_public_url=url), "maple-family", "case-42:first_sms")
    assert "%3A" in callback  # the action id travels percent-encoded
    message_sid = "SM" + uuid.uuid4().hex
    params = wh.twilio_sms_status(message_sid, "+14155550142", MAPLE, "undelivered", "30003")
    signature = RequestValidator(TWILIO).compute_signature(callback, params)
    with httpx.Client(timeout=15) as client:
        response = client.post(callback, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 204, response.text
        forged = client.post(
            callback.replace("maple-family", "lakeside-peds"), data=params, headers={"X-Twilio-Signature": signature}
        )
        assert forged.status_code == 403
    records = kafka_tools.read_all(
        service.bootstrap, f"{service.namespace}.{topic_specs.MESSAGE_STATUS.suffix}", "message_status"
    )
    [(key, record)] = [(k, r) for k, r in records if r["message_sid"] == message_sid]
    assert key == b"maple-family|+14155550142"
    assert (record["status"], record["error_code"], record["action_id"], record["recipient"]) == (
        "undelivered",
        "30003",
        "case-42:first_sms",
        "+14155550142",
    )


# ---------------------------------------------------------------- kill -9 mid-stream
def stream_of_webhooks(url: str, n_per_provider: int) -> list[tuple[wh.Webhook, str]]:
    out = []
    for i in range(n_per_provider):
        caller = f"+1415555{i:04d}"
        cs, session, vid, call_id = (
            "CA" + uuid.uuid4().hex,
            "s-" + uuid.uuid4().hex,
            str(uuid.uuid4()),
            int(uuid.uuid4().int % 10**12),
        )
        out += [
            (
                wh.twilio(url, wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs, caller, MAPLE), TWILIO),
                f"twilio:{cs}:no-answer",
            ),
            (
                wh.ringcentral(wh.ringcentral_session(session, caller, LAKE_RC, "Disconnected", "NoAnswer"), RC_TOKEN),
                f"ringcentral:{session}:missed",
            ),
            (
                wh.dialpad(wh.dialpad_call(call_id, "missed", caller, HARBOR), DIALPAD_SECRET),
                f"dialpad:{call_id}:missed",
            ),
            (
                wh.vonage(wh.vonage_event(vid, "unanswered", caller, LAKE_VONAGE), VONAGE_SECRET, iat=int(time.time())),
                f"vonage:{vid}:missed",
            ),
        ]
    return out


def deliver(
    client: httpx.Client, url: str, hook: wh.Webhook, deadline: float, stats: Counter, lock: threading.Lock
) -> int:
    """Post until a definitive answer, as providers do: retry connection errors and 503."""
    while time.monotonic() < deadline:
        try:
            response = post(client, url, hook)
        except httpx.TransportError as exc:
            with lock:  # ConnectError: nobody listening; ReadError / RemoteProtocolError: killed mid-request
                stats[type(exc).__name__] += 1
            time.sleep(0.05)
            continue
        if response.status_code == 503:
            with lock:
                stats["503"] += 1
            time.sleep(0.05)
            continue
        return response.status_code
    raise AssertionError("a webhook was never accepted")


def test_kill_9_mid_stream_loses_nothing(service):
    port = free_port()
    url = service.start_gateway("gateway-kill", port)
    stream = stream_of_webhooks(url, 100)  # 400 webhooks, four providers
    accepted = [0]
    lock = threading.Lock()
    stats: Counter = Counter()
    killed = threading.Event()
    kill_at = len(stream) // 3
    restart_took: list[float] = []
    accepted_at_kill: list[int] = []

    def killer() -> None:
        wait_for(lambda: accepted[0] >= kill_at, 120, interval=0.01, message="a third of the stream accepted")
        service.procs.kill("gateway-kill", signal.SIGKILL)
        accepted_at_kill.append(accepted[0])
        killed.set()
        started = time.monotonic()
        service.start_gateway("gateway-kill", port)
        restart_took.append(time.monotonic() - started)

    deadline = time.monotonic() + 240
    started = time.monotonic()
    with httpx.Client(timeout=15, limits=httpx.Limits(max_connections=8)) as client, ThreadPoolExecutor(8) as pool:
        kill_thread = threading.Thread(target=killer)
        kill_thread.start()

        def send(item: tuple[wh.Webhook, str]) -> tuple[int, str]:
            status = deliver(client, url, item[0], deadline, stats, lock)
            with lock:
                accepted[0] += 1
            return status, item[1]

        statuses = list(pool.map(send, stream))
        kill_thread.join(timeout=120)
    assert killed.is_set() and restart_took
    assert kill_at <= accepted_at_kill[0] < len(stream), "the gateway died mid-stream"
    assert all(status in (200, 204) for status, _ in statuses), Counter(s for s, _ in statuses)
    elapsed = time.monotonic() - started
    posted = {event_id for _, event_id in stream}
    call_ids = {event_id.split(":")[1] for event_id in posted}
    on_topic = Counter(e["event_id"] for _, e in service.events() if e["provider_call_id"] in call_ids)
    missing = posted - set(on_topic)
    assert not missing, f"{len(missing)} accepted events lost"
    assert set(on_topic) == posted, "a retry made another event id"
    duplicates = sum(on_topic.values()) - len(posted)
    print(
        f"\nkill -9 after {accepted_at_kill[0]} of {len(stream)} webhooks; all accepted in {elapsed:.1f}s, "
        f"restart to ready {restart_took[0]:.1f}s; retried: {dict(stats)}; "
        f"{duplicates} duplicate records (same event id)"
    )
