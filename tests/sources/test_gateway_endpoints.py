"""Every gateway endpoint, in-process, against the real broker (AckedProducer, acks=all).

A `Gateway` runs in an aiohttp TestServer; records are read back from the broker right
after the 2xx (no polling: an answered webhook is already on the topic), and a second
gateway whose producer points at a port with no broker answers 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.kafka.producer import AckedProducer
from ringback.sources.gateway import MAX_BODY_BYTES, WEBHOOKS, Gateway
from tests.conftest import free_port
from tests.support import kafka_tools
from tests.support import webhooks as wh

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")]

PUBLIC = "https://gateway.example.org"
NOW_S = 1_772_550_280
SECRETS = {
    "GW_TWILIO_TOKEN": "gw-twilio-auth-token",
    "GW_RC_TOKEN": "gw-ringcentral-verification-token",
    "GW_DIALPAD_SECRET": "test_secret",
    "GW_VONAGE_SECRET": "gw-vonage-signature-secret-0123456789",
    # account-wide secrets, for practices whose `secrets` map names none
    "DIALPAD_WEBHOOK_SECRET": "account-wide-dialpad-secret",
}
ACCOUNT_TWILIO_TOKEN = "account-wide-twilio-token"
MAPLE, HARBOR, LAKE_RC, LAKE_VONAGE, BIRCH = (
    "+13125550100",
    "+15005550006",
    "+16175550142",
    "+16175550143",
    "+12065550111",
)
CALLER = "+14155550123"


def practices() -> list[Practice]:
    common = {"time_zone": "America/Chicago", "booking_link": "https://book.example.org/x"}
    return [
        Practice(
            id="maple",
            name="Maple",
            phone_numbers=[MAPLE],
            sms_from=MAPLE,
            secrets={"twilio_auth_token": "GW_TWILIO_TOKEN"},
            **common,
        ),
        Practice(
            id="harbor",
            name="Harbor",
            phone_numbers=[HARBOR],
            sms_from=HARBOR,
            secrets={"dialpad_webhook_secret": "GW_DIALPAD_SECRET"},
            **common,
        ),
        Practice(
            id="lakeside",
            name="Lakeside",
            phone_numbers=[LAKE_RC, LAKE_VONAGE],
            sms_from=LAKE_RC,
            secrets={"ringcentral_verification_token": "GW_RC_TOKEN", "vonage_signature_secret": "GW_VONAGE_SECRET"},
            **common,
        ),
        # no secrets of its own: the account-wide ones apply (Twilio's auth token, Dialpad's secret)
        Practice(id="birch", name="Birch", phone_numbers=[BIRCH], sms_from=BIRCH, **common),
    ]


class Served:
    """A Gateway behind an aiohttp TestServer, on its own event loop (tests stay sync)."""

    def __init__(self, env: Settings, producer) -> None:
        self.producer = producer
        self.gateway = Gateway(env, PracticeDirectory(practices()), producer, ManualClock(NOW_S))
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start())

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.gateway.app()))
        await client.start_server()
        return client

    def post(self, hook: wh.Webhook, query: str = ""):
        async def go():
            async with self.client.post(hook.path + query, data=hook.body, headers=hook.headers) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        return self.loop.run_until_complete(go())

    def get(self, path: str) -> str:
        async def go():
            async with self.client.get(path) as resp:
                return await resp.text()

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.producer.close()


@pytest.fixture(scope="module")
def env(kafka_bootstrap, tmp_path_factory):
    secrets_dir = tmp_path_factory.mktemp("secrets")
    for name, value in SECRETS.items():
        (secrets_dir / name).write_text(value + "\n")
    env = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        ringback_namespace=f"t{uuid.uuid4().hex[:10]}",
        ringback_partitions=4,
        ringback_secrets_dir=secrets_dir,
        ringback_public_url=PUBLIC,
        twilio_auth_token=ACCOUNT_TWILIO_TOKEN,
    )
    admin.ensure_topics(env)
    return env


@pytest.fixture(scope="module")
def served(env):
    s = Served(env, AckedProducer(env.kafka_bootstrap_servers, timeout_s=5))
    yield s
    s.close()


class Topics:
    def __init__(self, env: Settings) -> None:
        self.env = env
        self.names = {
            "call": topics.topic_name(topics.CALL_EVENTS, env),
            "dead": topics.topic_name(topics.DEAD_LETTERS, env),
            "status": topics.topic_name(topics.MESSAGE_STATUS, env),
        }
        self.schemas = {"call": "call_event", "dead": "dead_letter", "status": "message_status"}

    def counts(self) -> dict[str, int]:
        return {k: kafka_tools.total_records(self.env.kafka_bootstrap_servers, n) for k, n in self.names.items()}

    def read(self, which: str) -> list[tuple[bytes, dict]]:
        return kafka_tools.read_all(self.env.kafka_bootstrap_servers, self.names[which], self.schemas[which])


@pytest.fixture(scope="module")
def topic(env) -> Topics:
    return Topics(env)


def twilio(path: str, params: dict, token: str = "gw-twilio-auth-token", query: str = "") -> tuple[wh.Webhook, str]:
    hook = wh.twilio(PUBLIC, path + query, params, token)
    return wh.Webhook(path, hook.body, hook.headers), query


def sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def valid_webhooks() -> list[tuple[str, wh.Webhook, str, int, str]]:
    """(name, webhook, query, expected status, expected event id) of one of each kind."""
    cs, ms, session, call_id, vid = (
        sid("CA"),
        sid("SM"),
        "s-" + uuid.uuid4().hex,
        int(uuid.uuid4().int % 10**12),
        str(uuid.uuid4()),
    )
    return [
        (
            "twilio status",
            *twilio(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs, CALLER, MAPLE)),
            204,
            f"twilio:{cs}:no-answer",
        ),
        (
            "twilio transcription",
            *twilio(wh.TWILIO_TRANSCRIPTION, wh.twilio_transcription(cs, CALLER, MAPLE)),
            204,
            f"twilio:{cs}:transcription",
        ),
        (
            "twilio sms",
            *twilio(wh.TWILIO_SMS_INBOUND, wh.twilio_sms_inbound(ms, CALLER, MAPLE, "Can I come at 3?")),
            200,
            f"twilio:{ms}:sms",
        ),
        (
            "ringcentral",
            wh.ringcentral(
                wh.ringcentral_session(session, CALLER, LAKE_RC, "Disconnected", "NoAnswer"), SECRETS["GW_RC_TOKEN"]
            ),
            "",
            200,
            f"ringcentral:{session}:missed",
        ),
        (
            "dialpad",
            wh.dialpad(wh.dialpad_call(call_id, "voicemail", CALLER, HARBOR), "test_secret"),
            "",
            204,
            f"dialpad:{call_id}:voicemail",
        ),
        (
            "vonage",
            wh.vonage(wh.vonage_event(vid, "unanswered", CALLER, LAKE_VONAGE), SECRETS["GW_VONAGE_SECRET"], iat=NOW_S),
            "",
            204,
            f"vonage:{vid}:missed",
        ),
    ]


def test_each_endpoint_answers_2xx_once_the_event_is_on_the_broker(served, topic):
    for name, hook, query, expected, event_id in valid_webhooks():
        status, headers, body = served.post(hook, query)
        assert status == expected, (name, body)
        # No waiting: the answer came after the broker's acknowledgement.
        found = [(k, e) for k, e in topic.read("call") if e["event_id"] == event_id]
        assert len(found) == 1, name
        key, event = found[0]
        assert key == topics.join_key(event["practice_id"], CALLER) and event["caller"] == CALLER
        # a redelivery: the same record again (same event id), which the stream app drops
        assert served.post(hook, query)[0] == expected
        again = [e for _, e in topic.read("call") if e["event_id"] == event_id]
        assert again == [event, event], name
    sms = served.post(*twilio(wh.TWILIO_SMS_INBOUND, wh.twilio_sms_inbound(sid("SM"), CALLER, MAPLE, "hi")))
    assert sms[1]["Content-Type"].startswith("text/xml") and b"<Response/>" in sms[2]


def test_sms_status_callback_becomes_a_message_status_record(served, topic):
    msid = sid("SM")
    query = "?practice=maple&action=case-7:sms1"
    status, _, _ = served.post(
        *twilio(
            wh.TWILIO_SMS_STATUS,
            wh.twilio_sms_status(msid, "(415) 555-0123", MAPLE, "undelivered", "30003"),
            query=query,
        )
    )
    assert status == 204
    [(key, record)] = [(k, r) for k, r in topic.read("status") if r["message_sid"] == msid]
    assert key == b"maple|" + CALLER.encode()
    assert record == {
        "message_sid": msid,
        "status": "undelivered",
        "error_code": "30003",
        "practice_id": "maple",
        "recipient": CALLER,
        "action_id": "case-7:sms1",
        "received_at": NOW_S * 1000,
    }
    # the query is signed: changing it (another practice's id) breaks the signature
    hook, _ = twilio(wh.TWILIO_SMS_STATUS, wh.twilio_sms_status(sid("SM"), CALLER, MAPLE), query=query)
    assert served.post(hook, "?practice=lakeside&action=case-7:sms1")[0] == 403
    before = topic.counts()
    unknown = served.post(
        *twilio(
            wh.TWILIO_SMS_STATUS,
            wh.twilio_sms_status(sid("SM"), CALLER, MAPLE),
            token=ACCOUNT_TWILIO_TOKEN,
            query="?practice=gone&action=a",
        )
    )
    assert unknown[0] == 404 and b"unknown_practice" in unknown[2]
    assert topic.counts() == before


def test_ringcentral_validation_handshake(served, topic):
    before = topic.counts()
    status, headers, _ = served.post(wh.ringcentral_handshake("0b8c1a5e-3c7d-4c1e-9a0f-6b2e4d8f1a3c"))
    assert status == 200 and headers["Validation-Token"] == "0b8c1a5e-3c7d-4c1e-9a0f-6b2e4d8f1a3c"
    assert topic.counts() == before


def test_forged_and_missing_signatures_are_403_and_produce_nothing(served, topic):
    cs = sid("CA")
    params = wh.twilio_voice_status(cs, CALLER, MAPLE)
    forged = [
        twilio(wh.TWILIO_VOICE_STATUS, params, token="wrong")[0],
        wh.Webhook(
            wh.TWILIO_VOICE_STATUS,
            twilio(wh.TWILIO_VOICE_STATUS, params)[0].body,
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),  # unsigned
        # the account-wide token does not sign for a practice that has its own
        twilio(wh.TWILIO_VOICE_STATUS, params, token=ACCOUNT_TWILIO_TOKEN)[0],
        wh.ringcentral(wh.ringcentral_session("s-x", CALLER, LAKE_RC, "VoiceMail"), "wrong-token"),
        wh.ringcentral(wh.ringcentral_session("s-x", CALLER, LAKE_RC, "VoiceMail"), None),
        wh.dialpad(wh.dialpad_call(1, "missed", CALLER, HARBOR), "wrong_secret"),
        wh.dialpad(wh.dialpad_call(1, "missed", CALLER, HARBOR), None),  # plain JSON: unsigned
        wh.vonage(wh.vonage_event(str(uuid.uuid4()), "busy", CALLER, LAKE_VONAGE), "wrong-secret-wrong-secret-01"),
        wh.vonage(wh.vonage_event(str(uuid.uuid4()), "busy", CALLER, LAKE_VONAGE), None),
        # a genuine token taken from one webhook, put on another body
        wh.vonage(
            wh.vonage_event("u-1", "busy", "+14155550000", LAKE_VONAGE),
            SECRETS["GW_VONAGE_SECRET"],
            iat=NOW_S,
            hash_body=b'{"status":"answered"}',
        ),
    ]
    before = topic.counts()
    for hook in forged:
        status, _, body = served.post(hook)
        assert status == 403, (hook.path, body)
    assert topic.counts() == before


def rejected(endpoint: str, reason: str) -> float:
    return REGISTRY.get_sample_value("ringback_rejected_inputs_total", {"endpoint": endpoint, "reason": reason}) or 0.0


def test_unknown_called_number_is_404_with_a_counter(served, topic):
    stranger = "+13125550177"
    cases = [
        (
            "twilio_voice_status",
            twilio(
                wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(sid("CA"), CALLER, stranger), token=ACCOUNT_TWILIO_TOKEN
            )[0],
        ),
        ("ringcentral", wh.ringcentral(wh.ringcentral_session("s-u", CALLER, stranger, "VoiceMail"), "any")),
        ("dialpad", wh.dialpad(wh.dialpad_call(5, "missed", CALLER, stranger), "account-wide-dialpad-secret")),
        ("vonage_event", wh.vonage(wh.vonage_event("u-2", "busy", CALLER, stranger), "any-secret-any-secret-123")),
    ]
    before = topic.counts()
    for endpoint, hook in cases:
        count = rejected(endpoint, "unknown_number")
        status, _, body = served.post(hook)
        assert status == 404, (endpoint, body)
        assert b"belongs to no configured practice" in body and stranger.encode() not in body
        assert rejected(endpoint, "unknown_number") == count + 1
    assert 'reason="unknown_number"' in served.get("/metrics")
    # With an account-wide secret the signature is checked first: a forgery is 403, not 404.
    forged = twilio(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(sid("CA"), CALLER, stranger), token="x")[0]
    assert served.post(forged)[0] == 403
    assert topic.counts() == before


def test_account_wide_secrets_sign_for_practices_without_their_own(served, topic):
    cs, call_id = sid("CA"), int(uuid.uuid4().int % 10**12)
    ok = [
        twilio(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(cs, CALLER, BIRCH), token=ACCOUNT_TWILIO_TOKEN)[0],
        wh.dialpad(wh.dialpad_call(call_id, "missed", CALLER, BIRCH), "account-wide-dialpad-secret"),
    ]
    for hook in ok:
        assert served.post(hook)[0] == 204
    ids = {e["event_id"] for _, e in topic.read("call") if e["practice_id"] == "birch"}
    assert {f"twilio:{cs}:no-answer", f"dialpad:{call_id}:missed"} <= ids
    # a practice's own secret is not accepted for another practice
    assert served.post(wh.dialpad(wh.dialpad_call(call_id, "missed", CALLER, BIRCH), "test_secret"))[0] == 403


def test_malformed_but_authentic_is_400_and_dead_lettered(served, topic):
    # RingCentral answers such a notification 200 (tests/sources/test_ringcentral_gateway.py)
    cs = sid("CA")
    no_caller = wh.twilio_voice_status(cs, "anonymous", MAPLE)
    cases = [
        ("twilio_voice_status", twilio(wh.TWILIO_VOICE_STATUS, no_caller)[0], "From"),
        (
            "twilio_voice_status",
            twilio(
                wh.TWILIO_VOICE_STATUS, {**wh.twilio_voice_status(sid("CA"), CALLER, MAPLE), "Timestamp": "yesterday"}
            )[0],
            "RFC 2822",
        ),
        (
            "dialpad",
            wh.dialpad({**wh.dialpad_call(9, "missed", CALLER, HARBOR), "call_id": None}, "test_secret"),
            "call_id",
        ),
        (
            "vonage_event",
            wh.vonage(
                {**wh.vonage_event("u-3", "busy", CALLER, LAKE_VONAGE), "from": "Unknown"},
                SECRETS["GW_VONAGE_SECRET"],
                iat=NOW_S,
            ),
            "from",
        ),
        # authentic (account-wide token) but names no practice number at all
        (
            "twilio_voice_status",
            twilio(wh.TWILIO_VOICE_STATUS, {"CallSid": sid("CA"), "CallStatus": "busy"}, token=ACCOUNT_TWILIO_TOKEN)[0],
            "no practice number",
        ),
    ]
    calls_before = topic.counts()["call"]
    for source, hook, reason in cases:
        status, _, body = served.post(hook)
        # RingCentral is answered 200 once dead-lettered: it blacklists subscriptions that collect 4xx
        assert status == (200 if source == "ringcentral" else 400) and b"malformed" in body, (source, body)
        letters = [r for _, r in topic.read("dead") if r["raw"] == hook.body]
        assert len(letters) == 1, source
        assert letters[0]["source"] == source and reason in letters[0]["reason"]
        assert letters[0]["content_type"] == hook.headers["Content-Type"].split(";")[0]
    assert topic.counts()["call"] == calls_before


def test_compressed_bodies_broken_or_not_on_every_endpoint(served, topic):
    """gzip bodies are read like plain ones; a broken stream is a 400 at every endpoint (never the 500
    of aiohttp's payload error), and where a credential outside the body proves the request
    authentic (RingCentral's token, Vonage's bearer JWT) its bytes as received are dead-lettered:
    RingCentral answers 200 then (it blacklists subscriptions that collect 4xx)."""
    for name, hook, query, expected, event_id in valid_webhooks():
        packed = gzip.compress(hook.body)
        status, _, body = served.post(
            wh.Webhook(hook.path, packed, {**hook.headers, "Content-Encoding": "gzip"}), query
        )
        assert status == expected, (name, body)
        assert [e for _, e in topic.read("call") if e["event_id"] == event_id], name
    vouched = {wh.RINGCENTRAL: 200, wh.VONAGE: 400}
    for name, hook, query, _, _ in valid_webhooks():
        cut = gzip.compress(hook.body)[:-6]
        calls_before = topic.counts()["call"]
        status, _, body = served.post(wh.Webhook(hook.path, cut, {**hook.headers, "Content-Encoding": "gzip"}), query)
        assert status == vouched.get(hook.path, 400) and b"bad_encoding" in body, (name, body)
        letters = [r for _, r in topic.read("dead") if r["raw"] == cut]
        if hook.path in vouched:
            assert len(letters) == 1 and "truncated" in letters[0]["reason"] and letters[0]["practice_id"] == "lakeside"
        else:  # the signature covers the body: nothing proves the request authentic
            assert letters == [], name
        assert topic.counts()["call"] == calls_before
    assert set(vouched) == {p for p, a in WEBHOOKS.items() if a.vouch is not None} - {wh.DIALPAD}


def test_an_authentic_payload_that_cannot_be_encoded_is_dead_lettered(served, topic):
    """An escaped lone surrogate (valid JSON, no UTF-8 form) in a field the event carries: the codec
    refuses the record, the raw body is dead-lettered and the answer stops the provider retrying."""
    vid, call_id, session = str(uuid.uuid4()), int(uuid.uuid4().int % 10**12), "s-" + uuid.uuid4().hex
    vonage_body = json.dumps(wh.vonage_event(vid, "unanswered", CALLER, LAKE_VONAGE, detail="\ud800")).encode()
    vonage_hook = wh.vonage({}, SECRETS["GW_VONAGE_SECRET"], iat=NOW_S, hash_body=vonage_body).with_body(vonage_body)
    dialpad_claims = json.dumps({**wh.dialpad_call(call_id, "missed", CALLER, HARBOR), "call_id": "9\ud8009"}).encode()
    dialpad_hook = wh.Webhook(
        wh.DIALPAD, jwt.PyJWS().encode(dialpad_claims, "test_secret", algorithm="HS256").encode(), {}
    ).with_headers(**{"Content-Type": "application/jwt"})
    rc_body = json.dumps(wh.ringcentral_session(session, CALLER, LAKE_RC, "VoiceMail")).replace(session, "s-\\ud800")
    rc_hook = wh.ringcentral({}, SECRETS["GW_RC_TOKEN"]).with_body(rc_body.encode())
    calls_before = topic.counts()["call"]
    for source, hook, expected in [
        ("vonage_event", vonage_hook, 400),
        ("dialpad", dialpad_hook, 400),
        ("ringcentral", rc_hook, 200),
    ]:
        status, _, body = served.post(hook)
        assert status == expected and b"malformed" in body, (source, body)
        [letter] = [r for _, r in topic.read("dead") if r["raw"] == hook.body]
        assert letter["source"] == source and "cannot encode" in letter["reason"], letter["reason"]
    assert topic.counts()["call"] == calls_before


def test_oversized_body_is_413(served, topic):
    before = topic.counts()
    for path in (wh.TWILIO_VOICE_STATUS, wh.RINGCENTRAL, wh.DIALPAD, wh.VONAGE):
        status, _, _ = served.post(wh.Webhook(path, b"x" * (MAX_BODY_BYTES + 1), {"Content-Type": "text/plain"}))
        assert status == 413
    assert topic.counts() == before


def test_broker_unreachable_is_503_with_retry_after(env):
    dead = env.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    served = Served(dead, AckedProducer(dead.kafka_bootstrap_servers, timeout_s=0.5))
    try:
        cases = [(hook, query) for _, hook, query, _, _ in valid_webhooks()]
        cases.append(
            twilio(
                wh.TWILIO_SMS_STATUS,
                wh.twilio_sms_status(sid("SM"), CALLER, MAPLE),
                query="?practice=maple&action=case-7:sms1",
            )
        )
        cases.append((twilio(wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status(sid("CA"), "anonymous", MAPLE))[0], ""))
        for hook, query in cases:  # ... and a dead letter cannot be stored either
            started = time.monotonic()
            status, headers, body = served.post(hook, query)
            assert status == 503 and headers["Retry-After"] == "5", (hook.path, body)
            assert time.monotonic() - started < 5  # the producer's short timeout, not a hang
    finally:
        served.close()
