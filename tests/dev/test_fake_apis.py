"""The Twilio/Slack stand-in (src/ringback/dev/fake_apis.py): its latency, its Messages
list and fetch checked against Twilio's OpenAPI description (tests/vendor/twilio/), its
errors, and the SMS sink's look-up of an ambiguous send carried out against it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from twilio.base.exceptions import TwilioRestException

from ringback.config.practices_file import load_practices
from ringback.config.settings import Settings
from ringback.dev.fake_apis import FakeApiServer, Latency, list_page, parse_date_sent
from ringback.sinks.channels.twilio_sms import TwilioSms
from ringback.sinks.retry import Transient
from tests.conftest import REPO, wait_for

ACCOUNT_SID = "AC" + "0" * 31 + "1"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CALLER = "+14155550123"
OTHER = "+14155550999"
TWILIO_SPEC = REPO / "tests" / "vendor" / "twilio" / "twilio_api_v2010.json"


@pytest.fixture(scope="module")
def practices():
    return load_practices(REPO / "examples" / "practices.yaml").practices


@pytest.fixture(scope="module")
def twilio_contract() -> OpenAPI:
    return OpenAPI.from_dict(json.loads(TWILIO_SPEC.read_text()))


@pytest.fixture
def server():
    s = FakeApiServer(latency_s=0)
    yield s
    s.close()


def sms_client(url: str, timeout_s: float = 5) -> TwilioSms:
    env = Settings(twilio_account_sid=ACCOUNT_SID, twilio_auth_token="tok", twilio_api_base_url=url, _env_file=None)
    return TwilioSms(env, timeout_s=timeout_s)


def create(server: FakeApiServer, to: str, body: str, sender: str = "+13125550100") -> httpx.Response:
    return httpx.post(server.url + MESSAGES, data={"To": to, "From": sender, "Body": body}, auth=(ACCOUNT_SID, "t"))


def assert_contract(api: OpenAPI, method: str, url: str, response: httpx.Response) -> None:
    """The stand-in's answer is one Twilio's OpenAPI description allows for that request."""
    parts = httpx.URL(url)
    request = MockRequest("https://api.twilio.com", method, parts.path, args=dict(parts.params))
    api.validate_response(request, MockResponse(response.content, status_code=response.status_code))


# ------------------------------------------------------------------ latency
def test_latency_is_uniform_within_half_either_side_and_seeded():
    draws = [Latency(0.25, 0.5, seed=3).next() for _ in range(3)]
    assert len(set(draws)) == 1  # a fresh generator with the same seed starts the same
    one = Latency(0.25, 0.5, seed=3)
    sample = [one.next() for _ in range(2000)]
    assert all(0.125 <= d <= 0.375 for d in sample)
    assert min(sample) < 0.14 and max(sample) > 0.36  # the whole band is used
    assert Latency(0, 0.5, seed=3).next() == 0.0


def test_posts_are_answered_after_the_latency_and_gets_at_once():
    slow = FakeApiServer(latency_s=0.2, jitter=0)
    try:
        t0 = time.monotonic()
        assert httpx.post(slow.url + "/slack/x", json={"text": "hi"}).status_code == 200
        assert create(slow, CALLER, "hello").status_code == 201
        assert time.monotonic() - t0 >= 0.4  # each of the two POSTs waited 200 ms
        # The message exists from the moment the request arrived; its answer waits.
        assert httpx.get(slow.url + MESSAGES).json()["messages"][0]["status"] == "sent"
    finally:
        slow.close()


async def test_concurrent_requests_wait_concurrently():
    slow = FakeApiServer(latency_s=1.0, jitter=0)
    try:
        async with httpx.AsyncClient() as http:
            await asyncio.gather(*(http.post(f"{slow.url}/slack/{i}", json={}) for i in range(6)))
        # Each answer waited 1 s on a thread of its own: all six requests were read before
        # the first answer left (one at a time, they would arrive 1 s apart).
        arrivals = sorted(r.received_at for r in slow.requests)
        assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] < 1.0
    finally:
        slow.close()


# ------------------------------------------------------------------ Twilio's list, fetch and errors
def test_list_filters_pages_and_fetch_match_twilios_contract(server, twilio_contract):
    for i in range(5):
        assert create(server, CALLER, f"text {i}").status_code == 201
    create(server, OTHER, "someone else")
    create(server, CALLER, "from another number", sender="+13125550199")

    url = f"{server.url}{MESSAGES}?To=%2B14155550123&From=%2B13125550100&PageSize=2"
    first = httpx.get(url)
    assert_contract(twilio_contract, "get", url, first)
    page = first.json()
    assert [m["body"] for m in page["messages"]] == ["text 4", "text 3"]  # newest first
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["previous_page_uri"] is None
    assert "Page=1" in page["next_page_uri"] and "PageToken=PA" in page["next_page_uri"]
    second = httpx.get(server.url + page["next_page_uri"]).json()
    assert [m["body"] for m in second["messages"]] == ["text 2", "text 1"] and second["previous_page_uri"]
    last = httpx.get(server.url + second["next_page_uri"]).json()
    assert [m["body"] for m in last["messages"]] == ["text 0"]
    assert (last["next_page_uri"], last["start"], last["end"]) == (None, 4, 4)

    today = datetime.now(UTC).date()
    for query, count in (
        ({"DateSent>": str(today)}, 7),
        ({"DateSent>": (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")}, 7),
        ({"DateSent<": str(today - timedelta(days=1))}, 0),
        ({"DateSent": str(today)}, 7),
        ({"DateSent": str(today - timedelta(days=1))}, 0),
        ({"To": OTHER}, 1),
    ):
        assert len(httpx.get(server.url + MESSAGES, params=query).json()["messages"]) == count, query

    sid = page["messages"][0]["sid"]
    one = httpx.get(f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json")
    assert one.status_code == 200 and one.json()["body"] == "text 4"
    assert_contract(twilio_contract, "get", f"https://api.twilio.com{MESSAGES[:-5]}/{sid}.json", one)
    missing = httpx.get(f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{'0' * 32}.json")
    assert missing.status_code == 404 and missing.json()["code"] == 20404


def test_a_created_message_answers_as_twilio_does(server, twilio_contract):
    created = create(server, CALLER, "hello")
    assert_contract(twilio_contract, "post", f"https://api.twilio.com{MESSAGES}", created)
    message = created.json()
    assert (message["status"], message["date_sent"]) == ("queued", None)  # sent once the answer left
    assert (message["to"], message["body"], message["direction"]) == (CALLER, "hello", "outbound-api")


def test_errors_are_twilios_json(server):
    refused = httpx.post(server.url + MESSAGES, data={"To": CALLER, "From": "+13125550100"})
    assert refused.status_code == 400 and refused.json() == {
        "code": 21602,
        "message": "Message body is required.",
        "more_info": "https://www.twilio.com/docs/errors/21602",
        "status": 400,
    }
    assert httpx.post(server.url + MESSAGES, data={"Body": "x", "From": "+1"}).json()["code"] == 21604
    assert httpx.post(server.url + MESSAGES, data={"Body": "x", "To": CALLER}).json()["code"] == 21603
    server.script[:] = [(429, {"Retry-After": "2"})]
    limited = create(server, CALLER, "x")
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["code"]) == (429, "2", 20429)
    assert httpx.get(server.url + MESSAGES, params={"PageSize": 0}).status_code == 400
    assert httpx.get(server.url + "/nothing/here").json()["status"] == 404
    assert not server.created  # nothing refused was created


async def test_the_twilio_library_reads_pages_fetches_and_errors(server):
    for i in range(4):
        create(server, CALLER, f"text {i}")
    client = sms_client(server.url)._get_client()
    try:
        listed = await client.messages.list_async(to=CALLER, page_size=3)  # follows next_page_uri
        assert [m.body for m in listed] == ["text 3", "text 2", "text 1", "text 0"]
        fetched = await client.messages(listed[0].sid).fetch_async()
        assert fetched.body == "text 3" and isinstance(fetched.date_sent, datetime)
        with pytest.raises(TwilioRestException) as missing:
            await client.messages("SM" + "0" * 32).fetch_async()
        assert (missing.value.status, missing.value.code) == (404, 20404)
    finally:
        await client.http_client.close()


def test_pure_paging_and_dates():
    messages = [{"sid": f"SM{i:032x}", "to": CALLER, "from": "+1", "date_sent": None} for i in range(3)]
    page = list_page(messages, {"PageSize": "2", "Page": "1"}, MESSAGES)
    assert [m["sid"] for m in page["messages"]] == [messages[0]["sid"]] and page["previous_page_uri"]
    assert list_page(messages, {"DateSent>": "2026-01-01"}, MESSAGES)["messages"] == []  # not sent yet
    assert parse_date_sent("2026-12-04") == (datetime(2026, 12, 4, tzinfo=UTC), True)
    assert parse_date_sent("Wed, 19 Jun 2019 22:04:00 -0000")[0] == datetime(2019, 6, 19, 22, 4, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_date_sent("last tuesday")


# ------------------------------------------------------------------ the sink's look-up of an ambiguous send
async def test_an_ambiguous_send_is_settled_by_the_sinks_lookup(practices):
    """The answer comes after the sink's timeout: the message was created, the sink cannot
    know; its look-up (Messages list, as after a timeout or a crash) finds it, while it is
    still queued and once it is sent, among other messages to the same number."""
    server = FakeApiServer(latency_s=0.05, script=[("hang", 1.5)])
    sms = sms_client(server.url, timeout_s=0.5)
    try:
        since_ms = int(time.time() * 1000)
        with pytest.raises(Transient) as timed_out:
            await sms.send(practices[0], CALLER, "Sorry we missed your call")
        assert timed_out.value.ambiguous
        (created,) = server.created
        assert created["status"] == "queued"  # no DateSent yet: found by the newest-first page
        assert await sms.find_sent(practices[0], CALLER, "Sorry we missed your call", since_ms) == created["sid"]
        for i in range(30):  # newer texts to the same number: ours is not among the newest 20
            await sms.send(practices[0], CALLER, f"another text {i}")
        wait_for(lambda: created["status"] == "sent", 10, message="the held answer sent")
        assert await sms.find_sent(practices[0], CALLER, "Sorry we missed your call", since_ms) == created["sid"]
        assert await sms.find_sent(practices[0], CALLER, "never sent", since_ms) is None
        # A messaging-service practice: listed by To only, matched on the service.
        await sms.send(practices[1], OTHER, "via the service")
        assert await sms.find_sent(practices[1], OTHER, "via the service", since_ms) == server.created[-1]["sid"]
        lookups = [r for r in server.requests if r.method == "GET"]
        assert lookups and all("/Messages.json?" in r.path for r in lookups)
    finally:
        await sms.close()
        server.close()


def test_a_client_that_drops_its_connection_prints_no_traceback_and_the_server_serves_on(capfd):
    """A killed sink process resets its kept-alive connections (figure e): the stand-in
    takes that as the real APIs do, without a traceback, and answers the next client."""
    import socket
    import struct
    import threading
    from urllib.parse import urlsplit

    server = FakeApiServer(latency_s=0)
    threads = threading.active_count()
    try:
        address = urlsplit(server.url)
        client = socket.create_connection((address.hostname, address.port))
        client.sendall(b"POST /services/T/B/x HTTP/1.1\r\nHost: x\r\n")  # half a request
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: the server's read fails with ConnectionResetError
        wait_for(lambda: httpx.post(server.url + "/services/T/B/x", json={"text": "hi"}).status_code == 200, 10)
        wait_for(lambda: threading.active_count() <= threads, 10)  # both connections' handlers are done
        assert "Traceback" not in capfd.readouterr().err
    finally:
        server.close()
