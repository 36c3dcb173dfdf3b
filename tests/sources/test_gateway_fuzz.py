"""Property tests of the gateway: random and mutated payloads at every endpoint.

The gateway runs in-process (aiohttp TestServer/TestClient) with an in-memory producer
that has AckedProducer's `send` signature: a pure logic test, no broker (the broker
behaviour, 503 included, is tested in tests/sources/test_gateway_endpoints.py).

Every endpoint of the registry (`WEBHOOKS`) is fuzzed, so endpoints added there are covered
without touching this file: a path is signed the way its provider module signs (Twilio form,
RingCentral token, Dialpad JWT body, Vonage bearer JWT).

Properties: every answer is a 2xx or 4xx (never a 5xx: the in-memory producer never
fails, so not even 503); a request that is not authentic produces nothing at all (no
event, no dead letter); an authentic one produces well-formed records only (the event
of the practice that owns the number, keyed `practice_id|caller`) or, when its payload
cannot be used (`malformed`: 400, or 200 where the adapter says so), exactly one dead
letter holding the decoded body. Bodies are also sent compressed (gzip, deflate, raw
deflate: the same outcome as plain), compressed and broken (400 / 413 / 415; a dead
letter of the bytes as received where a credential outside the body vouches for the
request), with escaped lone surrogates (`\ud800`) and with invalid UTF-8.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import string
import zlib
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.domain.practice import Practice
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas import codec
from ringback.sources import ringcentral, twilio, vonage
from ringback.sources.gateway import MAX_BODY_BYTES, WEBHOOKS, Gateway
from tests.support import webhooks as wh

pytestmark = pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")

PUBLIC = "https://gateway.example.org"
NOW_S = 1_772_550_280  # the Dialpad vector's time
SECRETS = {
    "FUZZ_TWILIO_TOKEN": "fuzz-twilio-auth-token",
    "FUZZ_RC_TOKEN": "fuzz-ringcentral-token",
    "FUZZ_DIALPAD_SECRET": wh.dialpad_vectors()["dialpad_style_SYNTHETIC"]["secret"],
    "FUZZ_VONAGE_SECRET": "fuzz-vonage-signature-secret-0123456789",
}
MAPLE, HARBOR, LAKE_RC, LAKE_VONAGE = "+13125550100", "+15005550006", "+16175550142", "+16175550143"
CALLER = "+14155550123"
NUMBERS = [
    MAPLE,
    HARBOR,
    LAKE_RC,
    LAKE_VONAGE,
    CALLER,
    "+13125550199",
    "+442079460000",
    "13125550100",
    "(312) 555-0100",
    "anonymous",
    "",
    "+1",
    "0",
]
PATHS = sorted(WEBHOOKS)  # every registered endpoint, those added later included


def provider(path: str) -> str:
    """The provider module that handles a path: how its requests are signed."""
    return WEBHOOKS[path].handle.__module__.rsplit(".", 1)[-1]


TWILIO_PATHS = [p for p in PATHS if provider(p) == twilio.__name__.rsplit(".", 1)[-1]]
# Providers whose credential is outside the body (a header): a request with a body that cannot be
# decoded is still authentic, and must leave a dead letter.
HEADER_CREDENTIAL = {ringcentral.__name__.rsplit(".", 1)[-1], vonage.__name__.rsplit(".", 1)[-1]}
OK_STATUSES = {200, 204}
UNREADABLE = {"bad_encoding", "content_encoding", "too_large"}  # the error codes of a body that cannot be decoded


class MemoryProducer:
    """AckedProducer's `send`, in memory: for this pure logic test only."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes] | None = None
    ) -> tuple[int, int]:
        self.sent.append((topic, key, value))
        return 0, len(self.sent) - 1


def practices() -> list[Practice]:
    common = {"time_zone": "America/Chicago", "booking_link": "https://book.example.org/x"}
    return [
        Practice(
            id="maple",
            name="Maple",
            phone_numbers=[MAPLE],
            sms_from=MAPLE,
            secrets={"twilio_auth_token": "FUZZ_TWILIO_TOKEN"},
            **common,
        ),
        Practice(
            id="harbor",
            name="Harbor",
            phone_numbers=[HARBOR],
            sms_from=HARBOR,
            secrets={"dialpad_webhook_secret": "FUZZ_DIALPAD_SECRET"},
            **common,
        ),
        Practice(
            id="lakeside",
            name="Lakeside",
            phone_numbers=[LAKE_RC, LAKE_VONAGE],
            sms_from=LAKE_RC,
            secrets={
                "ringcentral_verification_token": "FUZZ_RC_TOKEN",
                "vonage_signature_secret": "FUZZ_VONAGE_SECRET",
            },
            **common,
        ),
    ]


class Answer(NamedTuple):
    status: int
    records: list
    error: str | None  # the `error` of a refusal's JSON body


class Harness:
    def __init__(self, secrets_dir) -> None:
        for name, value in SECRETS.items():
            (secrets_dir / name).write_text(value)
        env = Settings(
            kafka_bootstrap_servers="127.0.0.1:1",
            ringback_namespace="fuzz",
            ringback_secrets_dir=secrets_dir,
            ringback_public_url=PUBLIC,
            twilio_auth_token=None,
        )
        self.env = env
        self.directory = PracticeDirectory(practices())
        self.producer = MemoryProducer()
        self.gateway = Gateway(env, self.directory, self.producer, ManualClock(NOW_S))
        self.loop = asyncio.new_event_loop()
        self.client: TestClient = self.loop.run_until_complete(self._start())

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.gateway.app()))
        await client.start_server()
        return client

    def post(self, hook: wh.Webhook, query: str = "") -> Answer:
        before = len(self.producer.sent)

        async def go():
            async with self.client.post(hook.path + query, data=hook.body, headers=hook.headers) as resp:
                body = await resp.read()
                return resp.status, body

        status, body = self.loop.run_until_complete(go())
        try:
            error = json.loads(body).get("error") if body.startswith(b"{") else None
        except ValueError:
            error = None
        records = self.producer.sent[before:]
        try:  # what the examples reached: pytest --hypothesis-show-statistics
            event(f"{hook.path} → {status} {error or ''}, {len(records)} record(s)")
        except InvalidArgument:  # not inside a hypothesis test
            pass
        return Answer(status, records, error)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("secrets"))
    yield harness
    harness.close()


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def check_authentic(gw: Harness, answer: Answer, body: bytes, path: str) -> None:
    """What an authentic request may lead to (`body`: the payload as decoded)."""
    status, records, error = answer
    assert status in OK_STATUSES | {400, 403, 404}, status
    dead = [r for r in records if r[0] == gw.gateway.dead_topic]
    if error == "malformed" or dead:  # unusable: dead-lettered, answered 400 or the adapter's status
        if error == "malformed":
            assert status == (WEBHOOKS[path].dead_lettered_status or 400), status
        else:  # dead-lettered by the adapter itself (RingCentral: 200, it would resend a 4xx)
            assert status in OK_STATUSES, status
        assert len(dead) == 1 and len(records) == 1
        letter = codec.decode("dead_letter", dead[0][2])
        assert letter["raw"] == body and letter["reason"]
        return
    if status not in OK_STATUSES:
        assert records == []
        return
    assert not dead
    for topic, key, value in records:
        if topic == gw.gateway.status_topic:
            record = codec.decode("message_status", value)
            assert key == topics.join_key(record["practice_id"], record["recipient"])
            continue
        assert topic == gw.gateway.call_topic
        event = codec.decode("call_event", value)
        assert key == topics.join_key(event["practice_id"], event["caller"])
        owner = gw.directory.by_number(event["called"])
        assert owner is not None and owner.id == event["practice_id"]
        assert event["event_type"] in ("SMS", "TRANSCRIPTION") or event["outcome"] in (
            "MISSED",
            "VOICEMAIL",
            "ANSWERED",
        )


def check_not_authentic(answer: Answer) -> None:
    assert answer.status in {200, 400, 403, 404, 413, 415}, answer.status
    assert answer.records == [], "an unauthenticated request produced something"


# ---------------------------------------------------------------- strategies
printable = st.text(
    alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", ""), max_size=40
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(NUMBERS)
    | st.sampled_from([10**400, -(10**30), 2**63, 1e308, 0.5, "x" * 3000]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
TWILIO_FIELDS = [
    "CallSid",
    "AccountSid",
    "From",
    "To",
    "CallStatus",
    "Direction",
    "Timestamp",
    "CallDuration",
    "RecordingSid",
    "RecordingUrl",
    "TranscriptionText",
    "TranscriptionStatus",
    "Body",
    "MessageSid",
    "MessageStatus",
    "ErrorCode",
    "SmsStatus",
]
TWILIO_VALUES = st.sampled_from(
    NUMBERS
    + [
        "no-answer",
        "busy",
        "completed",
        "ringing",
        "failed",
        "canceled",
        "in-progress",
        "delivered",
        "undelivered",
        "outbound-api",
        "inbound",
        "outbound-dial",
        "CA" + "1" * 32,
        "SM" + "2" * 32,
        "30003",
        "3",
        "-1",
        "1e400",
        "nan",
        "Tue, 24 Nov 2026 15:04:05 +0000",
        "Mon, 99 Foo",
    ]
)
twilio_forms = st.builds(
    lambda numbers, extra: {**numbers, **extra},
    # To/From mostly from a practice's or a caller's numbers, so examples get past the lookup
    st.fixed_dictionaries({"To": st.sampled_from([MAPLE] * 6 + NUMBERS)}, optional={"From": st.sampled_from(NUMBERS)}),
    st.dictionaries(
        st.sampled_from(TWILIO_FIELDS) | st.text(max_size=10), TWILIO_VALUES | st.text(max_size=30), max_size=12
    ),
)
content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/json",
        "application/jwt",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded; charset=nonexistent-charset",
        "application/x-www-form-urlencoded; charset=utf-16",
        "",
    ]
)


def random_bodies() -> st.SearchStrategy[bytes]:
    return (
        st.binary(max_size=600)
        | st.text(max_size=300).map(str.encode)
        | json_values.map(lambda v: json.dumps(v).encode())
        | twilio_forms.map(lambda f: urlencode(f).encode())
    )


# ---------------------------------------------------------------- 1. random requests, random headers
@FUZZ
@given(
    path=st.sampled_from(PATHS),
    body=random_bodies(),
    content_type=content_types,
    headers=st.dictionaries(
        st.sampled_from(["X-Twilio-Signature", "Verification-Token", "Authorization", "Validation-Token"]),
        printable,
        max_size=3,
    ),
    bearer=st.booleans(),
)
def test_random_requests_are_refused_and_produce_nothing(gw, path, body, content_type, headers, bearer):
    headers = dict(headers)
    if content_type:
        headers["Content-Type"] = content_type
    if bearer and "Authorization" in headers:
        headers["Authorization"] = "Bearer " + headers["Authorization"]
    answer = gw.post(wh.Webhook(path, body, headers))
    check_not_authentic(answer)
    if answer.status == 200:  # only the RingCentral handshake answers 200 to a stranger
        assert path == wh.RINGCENTRAL and "Validation-Token" in headers


# ---------------------------------------------------------------- 2. random forms, validly signed (Twilio)
@FUZZ
@given(
    path=st.sampled_from(TWILIO_PATHS),
    form=twilio_forms,
    query=st.sampled_from(["", "?practice=maple&action=case-1:sms1", "?practice=nobody", "?action=x"]),
)
def test_signed_random_twilio_forms(gw, path, form, query):
    hook = wh.twilio(PUBLIC, path + (query if path == wh.TWILIO_SMS_STATUS else ""), form, SECRETS["FUZZ_TWILIO_TOKEN"])
    answer = gw.post(wh.Webhook(path, hook.body, hook.headers), query if path == wh.TWILIO_SMS_STATUS else "")
    check_authentic(gw, answer, hook.body, path)


# ---------------------------------------------------------------- 3. valid payloads, mutated, then signed
def valid_payloads() -> st.SearchStrategy[tuple[str, object]]:
    twilio = st.sampled_from(
        [
            (wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status("CA" + "a" * 32, CALLER, MAPLE, "no-answer")),
            (
                wh.TWILIO_VOICE_STATUS,
                wh.twilio_voice_status("CA" + "b" * 32, CALLER, MAPLE, "completed", CallDuration="80"),
            ),
            (wh.TWILIO_TRANSCRIPTION, wh.twilio_transcription("CA" + "c" * 32, CALLER, MAPLE)),
            (wh.TWILIO_SMS_INBOUND, wh.twilio_sms_inbound("SM" + "d" * 32, CALLER, MAPLE, "Can I book?")),
            (wh.TWILIO_SMS_STATUS, wh.twilio_sms_status("SM" + "e" * 32, CALLER, MAPLE, "undelivered", "30003")),
        ]
    )
    rc = st.sampled_from(["Disconnected", "VoiceMail", "Answered", "Gone"]).map(
        lambda code: (
            wh.RINGCENTRAL,
            wh.ringcentral_session("s-1", CALLER, LAKE_RC, code, "NoAnswer", missed=code == "Gone"),
        )
    )
    dp = st.sampled_from(["missed", "voicemail", "voicemail_uploaded", "hangup", "connected", "ringing"]).map(
        lambda state: (wh.DIALPAD, wh.dialpad_call(42, state, CALLER, HARBOR, connected=state == "connected"))
    )
    vo = st.sampled_from(["unanswered", "busy", "answered", "completed", "machine", "started"]).map(
        lambda status: (wh.VONAGE, wh.vonage_event("aaaaaaaa-bbbb-cccc-dddd-0123456789ab", status, CALLER, LAKE_VONAGE))
    )
    return twilio | rc | dp | vo


def mutate(payload: object, data) -> object:
    """Delete, replace or add fields, at the top level or one level down."""
    payload = copy.deepcopy(payload)
    for _ in range(data.draw(st.integers(0, 4))):
        target = payload
        if isinstance(payload, dict) and payload and data.draw(st.booleans()):
            nested = [k for k, v in payload.items() if isinstance(v, dict)]
            if nested:
                target = payload[data.draw(st.sampled_from(nested))]
        if not isinstance(target, dict):
            break
        action = data.draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and target:
            target.pop(data.draw(st.sampled_from(sorted(target))))
        elif action == "replace" and target:
            target[data.draw(st.sampled_from(sorted(target)))] = data.draw(json_values)
        else:
            target[data.draw(st.text(max_size=10))] = data.draw(json_values)
    return payload


def sign(path: str, payload: object, good: bool) -> tuple[wh.Webhook, str]:
    """A request to `path` carrying `payload`, signed as the path's provider signs."""
    query = "?practice=maple&action=case-9:sms1" if path == wh.TWILIO_SMS_STATUS else ""
    family = provider(path)
    if family == "twilio":
        form = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()}
        hook = wh.twilio(PUBLIC, path + query, form, SECRETS["FUZZ_TWILIO_TOKEN"] if good else "forged")
    elif family == "ringcentral":
        hook = wh.ringcentral(payload, SECRETS["FUZZ_RC_TOKEN"] if good else "forged-token")
    elif family == "dialpad":
        hook = wh.dialpad(payload, SECRETS["FUZZ_DIALPAD_SECRET"] if good else "forged-secret")
    else:
        assert family == "vonage", f"no signer for {path} ({family}): add one here"
        secret = SECRETS["FUZZ_VONAGE_SECRET"] if good else "forged-secret-forged-secret-1234"
        hook = wh.vonage(payload, secret, iat=NOW_S)
    return wh.Webhook(path, hook.body, hook.headers), query


def sign_raw(path: str, raw: bytes) -> wh.Webhook:
    """A JSON provider's request whose body is exactly `raw` (any bytes), validly signed."""
    family = provider(path)
    if family == "ringcentral":
        headers = {"Content-Type": "application/json", "Verification-Token": SECRETS["FUZZ_RC_TOKEN"]}
        return wh.Webhook(path, raw, headers)
    if family == "dialpad":  # the claims are the JWS payload: signed as bytes, whatever they are
        token = jwt.PyJWS().encode(raw, SECRETS["FUZZ_DIALPAD_SECRET"], algorithm="HS256")
        return wh.Webhook(path, token.encode(), {"Content-Type": "application/jwt"})
    assert family == "vonage", family
    hook = wh.vonage({}, SECRETS["FUZZ_VONAGE_SECRET"], iat=NOW_S, hash_body=raw)
    return wh.Webhook(path, raw, hook.headers)


def example(path: str) -> object:
    """A valid payload for any registered path, from its provider's family."""
    return {
        "twilio": wh.twilio_voice_status("CA" + "9" * 32, CALLER, MAPLE, "no-answer"),
        "ringcentral": wh.ringcentral_session("s-9", CALLER, LAKE_RC, "Disconnected", "NoAnswer"),
        "dialpad": wh.dialpad_call(49, "missed", CALLER, HARBOR),
        "vonage": wh.vonage_event("99999999-bbbb-cccc-dddd-0123456789ab", "busy", CALLER, LAKE_VONAGE),
    }[provider(path)]


@FUZZ
@given(valid=valid_payloads(), data=st.data())
def test_valid_payloads_mutated_then_signed(gw, valid, data):
    path, payload = valid
    mutated = mutate(payload, data)
    hook, query = sign(path, mutated, good=True)
    answer = gw.post(hook, query)
    check_authentic(gw, answer, hook.body, path)
    if mutated == payload:  # untouched: accepted
        assert answer.status in OK_STATUSES


@FUZZ
@given(valid=valid_payloads(), data=st.data())
def test_forged_signatures_produce_nothing(gw, valid, data):
    path, payload = valid
    hook, query = sign(path, mutate(payload, data), good=False)
    answer = gw.post(hook, query)
    check_not_authentic(answer)
    assert answer.status in {403, 404}


@FUZZ
@given(valid=valid_payloads(), data=st.data())
def test_signed_bodies_with_flipped_bytes(gw, valid, data):
    """The signature made for one body, sent with another (a byte flipped or cut)."""
    path, payload = valid
    hook, query = sign(path, payload, good=True)
    body = bytearray(hook.body)
    if data.draw(st.booleans()) and len(body) > 1:
        body = body[: data.draw(st.integers(0, len(body) - 1))]
    else:
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = (body[i] + data.draw(st.integers(1, 255))) % 256
    answer = gw.post(hook.with_body(bytes(body)), query)
    assert answer.status in OK_STATUSES | {400, 403, 404}, answer.status
    # A change that leaves the content as signed (`+` vs `%20`, JSON whitespace) may pass;
    # whatever passes is a well-formed record of the right practice. A RingCentral token does
    # not cover the body: what it vouches for is a dead letter when unusable.
    if answer.status in OK_STATUSES or answer.error == "malformed":
        check_authentic(gw, answer, bytes(body), path)
    else:
        assert answer.records == []


# ---------------------------------------------------------------- 4. compressed bodies, valid and broken
def raw_deflate(body: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(body) + packer.flush()


# (Content-Encoding, how the body is compressed): each gives the body back exactly
VALID_CODINGS = [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", raw_deflate),  # without the zlib header, as some clients send it
    ("identity", lambda b: b),
    ("gzip, identity", gzip.compress),
    ("deflate, gzip", lambda b: gzip.compress(zlib.compress(b))),
]
# codings with a checksum, so a broken stream cannot decode to other content
CHECKED_CODINGS = [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress)]


@FUZZ
@given(valid=valid_payloads(), coding=st.sampled_from(VALID_CODINGS))
def test_compressed_bodies_are_read_as_plain_ones(gw, valid, coding):
    path, payload = valid
    hook, query = sign(path, payload, good=True)
    header, compress = coding
    plain = gw.post(hook, query)
    answer = gw.post(wh.Webhook(path, compress(hook.body), {**hook.headers, "Content-Encoding": header}), query)
    check_authentic(gw, answer, hook.body, path)
    assert (answer.status, answer.error, len(answer.records)) == (plain.status, plain.error, len(plain.records))


def a_coding(header: str) -> bool:
    """Whether a Content-Encoding names some coding besides `identity`."""
    return any(c.strip() and c.strip().lower() != "identity" for c in header.split(","))


def broken(data, compressed: bytes) -> bytes:
    how = data.draw(st.sampled_from(["truncate", "flip", "trailing", "garbage"]))
    if how == "truncate":
        return compressed[: data.draw(st.integers(0, len(compressed) - 1))]
    if how == "flip":
        body = bytearray(compressed)
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] ^= data.draw(st.integers(1, 255))
        return bytes(body)
    if how == "trailing":
        return compressed + data.draw(st.binary(min_size=1, max_size=20))
    return data.draw(st.binary(max_size=200))


@FUZZ
@given(path=st.sampled_from(PATHS), data=st.data())
def test_broken_compressed_bodies_are_4xx_and_dead_lettered_when_authentic(gw, path, data):
    """Every registered endpoint, a validly signed request whose body does not decompress (or
    decompresses past the limit, or names a coding we do not decode): never a 5xx; a dead letter
    of the bytes as received exactly when a credential outside the body vouches for it."""
    hook, query = sign(path, example(path), good=True)
    kind = data.draw(st.sampled_from(["broken", "bomb", "unsupported"]))
    if kind == "broken":
        header, compress = data.draw(st.sampled_from(CHECKED_CODINGS))
        sent = broken(data, compress(hook.body))
    elif kind == "bomb":  # small on the wire, past the body limit once inflated
        header, sent = "gzip", gzip.compress(b"0" * (MAX_BODY_BYTES * 4))
    else:
        header = data.draw(st.sampled_from(["br", "zstd", "compress", "gzip, br"]) | printable.filter(a_coding))
        sent = data.draw(st.binary(max_size=100))
    answer = gw.post(wh.Webhook(path, sent, {**hook.headers, "Content-Encoding": header}), query)
    assert answer.status < 500, answer
    if answer.error not in UNREADABLE:  # a coding we read after all (`identity`), or a flip in gzip's header
        check_authentic(gw, answer, hook.body, path)
        return
    if provider(path) not in HEADER_CREDENTIAL:  # the signature covers the body: not known authentic
        assert answer.status in {400, 413, 415} and answer.records == []
        return
    [(topic, _, value)] = answer.records
    letter = codec.decode("dead_letter", value)
    assert topic == gw.gateway.dead_topic and letter["raw"] == sent and header.strip()[:20] in letter["reason"]
    assert letter["practice_id"] == "lakeside"
    assert answer.status == WEBHOOKS[path].dead_lettered_status or answer.status in {400, 413, 415}


# ---------------------------------------------------------------- 5. text that cannot be encoded
MARK = "ZZmarkZZ"  # survives urlencoding and JSON unchanged
# What replaces a string field in the JSON as sent: escaped lone surrogates (valid JSON, not
# encodable as UTF-8), and bytes that are not UTF-8 at all.
INJECTIONS = [b"\\ud800", b"\\udfff", b"a\\udc80b", b"+1312555\\ud8000100", b"\xff", b"\xed\xa0\x80", b"\xc3"]


def string_fields(value: object, at: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in string_fields(v, (*at, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in string_fields(v, (*at, i))]
    return [at] if isinstance(value, (str, int)) and not isinstance(value, bool) and at else []


def marked(payload: object, at: tuple) -> object:
    payload = copy.deepcopy(payload)
    target = payload
    for step in at[:-1]:
        target = target[step]
    target[at[-1]] = MARK
    return payload


@FUZZ
@given(valid=valid_payloads(), data=st.data(), coding=st.sampled_from(VALID_CODINGS))
def test_signed_payloads_with_unencodable_text(gw, valid, data, coding):
    """An authentic payload with an escaped lone surrogate or invalid UTF-8 in any field: never a
    5xx, never lost (a dead letter of the decoded body when it cannot be used)."""
    path, payload = valid
    at = data.draw(st.sampled_from(string_fields(payload)))
    injection = data.draw(st.sampled_from(INJECTIONS))
    if provider(path) == "twilio":  # a form: percent-escaped bytes (read as U+FFFD), or raw ones
        hook, query = sign(path, marked(payload, at), good=True)
        escaped = "".join(f"%{b:02X}" for b in injection.decode("unicode_escape").encode("utf-8", "surrogatepass"))
        raw = hook.body.replace(MARK.encode(), escaped.encode() if data.draw(st.booleans()) else injection)
        form = dict(parse_form(raw))
        signed = wh.twilio(PUBLIC, path + query, form, SECRETS["FUZZ_TWILIO_TOKEN"])
        hook = wh.Webhook(path, raw, signed.headers)
    else:
        query = ""
        raw = json.dumps(marked(payload, at)).encode().replace(MARK.encode(), injection)
        hook = sign_raw(path, raw)
    header, compress = coding
    answer = gw.post(wh.Webhook(path, compress(hook.body), {**hook.headers, "Content-Encoding": header}), query)
    if provider(path) == "twilio" and answer.error == "unreadable_body":  # raw bytes that are not UTF-8
        assert answer.status == 400 and answer.records == []
        return
    check_authentic(gw, answer, hook.body, path)
    if provider(path) != "twilio":  # a signature we can check without a practice: never a 403
        assert answer.status != 403, answer


def parse_form(raw: bytes) -> list[tuple[str, str]]:
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)


# ---------------------------------------------------------------- examples worth keeping explicit
@pytest.mark.parametrize("path", PATHS)
def test_oversized_body_is_413_at_every_endpoint(gw, path):
    status, records, _ = gw.post(
        wh.Webhook(path, b"a=" + b"x" * MAX_BODY_BYTES, {"Content-Type": "application/x-www-form-urlencoded"})
    )
    assert status == 413 and records == []


def test_every_valid_example_is_accepted_once_per_post(gw):
    for path, payload in [
        (wh.TWILIO_VOICE_STATUS, wh.twilio_voice_status("CA" + "f" * 32, CALLER, MAPLE)),
        (wh.RINGCENTRAL, wh.ringcentral_session("s-2", CALLER, LAKE_RC, "VoiceMail")),
        (wh.DIALPAD, wh.dialpad_call(43, "missed", CALLER, HARBOR)),
        (wh.VONAGE, wh.vonage_event("bbbbbbbb-bbbb-cccc-dddd-0123456789ab", "busy", CALLER, LAKE_VONAGE)),
    ]:
        hook, query = sign(path, payload, good=True)
        status, records, _ = gw.post(hook, query)
        assert status in OK_STATUSES and len(records) == 1, (path, status)
        again_status, again, _ = gw.post(hook, query)  # redelivery: the same event id
        assert again_status == status
        assert (
            codec.decode("call_event", again[0][2])["event_id"] == codec.decode("call_event", records[0][2])["event_id"]
        )
