"""Console sessions that end, and sign-in throttling, without a broker: the aiohttp app with
the real sessions, accounts and revocation list, a ManualClock for every time, and sign-ins
from two client addresses (127.0.0.1 and 127.0.0.2, both on the loopback interface).

The revocation list is `SessionRevocations` fed by a producer stand-in that hands each
record to every replica's list, as the topic does (the real topic, two real replicas:
test_console_sessions_broker.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import TCPConnector
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.console.app import Console
from ringback.console.revocations import SessionRevocations
from ringback.console.service import ChangeNotifier, TaskService
from ringback.console.sessions import COOKIE, LoginThrottle, SessionCodec
from ringback.console.task_cache import TaskCache
from ringback.console.users import UserStore
from ringback.kafka import topics
from ringback.kafka.producer import BrokerUnavailable
from tests.support.console_api import check_openapi

NOW_S = 1_764_000_000.0
PASSWORD = "correct horse battery"
WRONG = "wrong-password!"
KEY = b"k" * 32
SESSION_S = 3600
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ENV = Settings(_env_file=None, ringback_namespace="t")


class Topic:
    """The console-sessions topic as a producer stand-in: every record reaches every replica's list."""

    def __init__(self) -> None:
        self.readers: list[SessionRevocations] = []
        self.records: list[tuple[str, bytes, bytes]] = []
        self.down = False

    async def send(self, topic, key, value, headers=None, partition=None):
        if self.down:
            raise BrokerUnavailable("no acknowledgement within 5s")
        self.records.append((topic, key, value))
        for reader in self.readers:
            reader.apply(key, value)
        return 0, len(self.records) - 1


class Replica:
    """One console process: its own app, codec, revocation list and throttles; shared accounts and clock."""

    def __init__(self, users: UserStore, clock: ManualClock, topic: Topic) -> None:
        notifier = ChangeNotifier()
        self.revocations = SessionRevocations(ENV, topic, clock, on_revoke=notifier.bump)  # as `run` wires it
        self.revocations._reader.ready.set()  # no topic to read: caught up from the start
        topic.readers.append(self.revocations)
        service = TaskService(TaskCache(ENV, notifier.bump), topic, "t.task-updates", clock, notifier)
        self.console = Console(
            service,
            users,
            SessionCodec(KEY, SESSION_S, clock=clock, revocations=self.revocations),
            clock=clock,
            throttle=LoginThrottle(delay_from=3, first_delay_s=1, max_delay_s=60, clock=clock.now),
            client_throttle=LoginThrottle(delay_from=20, first_delay_s=1, max_delay_s=60, clock=clock.now),
        )
        self.clients: list[TestClient] = []

    async def client(self, address: str = "127.0.0.1") -> TestClient:
        """A browser at `address` (its own cookie jar)."""
        client = TestClient(TestServer(self.console.app()), connector=TCPConnector(local_addr=(address, 0)))
        await client.start_server()
        self.clients.append(client)
        return client


@pytest.fixture
async def world(tmp_path):
    clock = ManualClock(NOW_S)
    users = UserStore(tmp_path / "users.json", hasher=FAST_HASHER)
    users.add("maple-family", "ana", PASSWORD, ["admin_team"], int(NOW_S * 1000))
    users.add("maple-family", "bo", PASSWORD, ["nurse"], int(NOW_S * 1000))
    topic = Topic()
    replicas = [Replica(users, clock, topic), Replica(users, clock, topic)]
    yield clock, topic, replicas
    for replica in replicas:
        for c in replica.clients:
            await c.close()


async def call(client: TestClient, method: str, path: str, body: dict | None = None, csrf: str | None = None):
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    resp = await client.request(method, path, data=data, headers=headers)
    raw = b"" if path == "/api/events" and resp.status == 200 else await resp.read()
    if path != "/api/events":
        check_openapi(method, path, resp.status, raw, request_body=data, content_type=resp.content_type)
    resp.close()
    return resp.status, (json.loads(raw) if raw else None), resp


async def sign_in(client: TestClient, username: str = "ana", password: str = PASSWORD):
    return await call(
        client, "POST", "/api/login", {"practice_id": "maple-family", "username": username, "password": password}
    )


def cookie_of(client: TestClient) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value


async def with_cookie(client: TestClient, cookie: str, path: str = "/api/session") -> int:
    client.session.cookie_jar.update_cookies({COOKIE: cookie})
    status, _, _ = await call(client, "GET", path)
    return status


# ------------------------------------------------------------------ sign-out revokes everywhere
async def test_after_sign_out_the_old_cookie_gets_401_on_every_replica(world):
    clock, topic, (a, b) = world
    browser = await a.client()
    status, session, _ = await sign_in(browser)
    assert status == 200
    cookie = cookie_of(browser)
    other = await b.client()
    assert await with_cookie(other, cookie) == 200  # one signing key: replica B accepts A's session
    bo = await b.client()
    assert (await sign_in(bo, "bo"))[0] == 200

    status, _, resp = await call(browser, "POST", "/api/logout", {}, csrf=session["csrf_token"])
    assert status == 204 and resp.cookies[COOKIE].value == ""
    assert [(t, json.loads(v)["practice_id"]) for t, _, v in topic.records] == [
        (topics.topic_name(topics.CONSOLE_SESSIONS, ENV), "maple-family")
    ]
    for replica in (a, b):
        stolen = await replica.client()  # someone who copied the cookie before the sign-out
        for path in ("/api/session", "/api/tasks", "/api/events"):
            assert await with_cookie(stolen, cookie, path) == 401, path
    assert (await call(bo, "GET", "/api/session"))[0] == 200  # another session is untouched
    # Signing in again is a new session, accepted everywhere.
    assert (await sign_in(browser))[0] == 200
    assert await with_cookie(await b.client(), cookie_of(browser)) == 200


async def test_an_open_event_stream_of_a_signed_out_session_ends(world):
    clock, topic, (a, b) = world
    browser = await a.client()
    _, session, _ = await sign_in(browser)
    watcher = await b.client()  # the same session's event stream, open on the other replica
    watcher.session.cookie_jar.update_cookies({COOKIE: cookie_of(browser)})
    stream = await watcher.get("/api/events")
    assert stream.status == 200 and b"event: tasks" in await stream.content.readuntil(b"\n\n")
    assert (await call(browser, "POST", "/api/logout", {}, csrf=session["csrf_token"]))[0] == 204
    rest = await asyncio.wait_for(stream.content.read(), 5)  # ends now, not at the next keep-alive (15 s)
    assert b"event: tasks" not in rest


async def test_sign_out_without_the_broker_is_503_and_changes_nothing(world):
    clock, topic, (a, b) = world
    browser = await a.client()
    _, session, _ = await sign_in(browser)
    topic.down = True
    status, body, resp = await call(browser, "POST", "/api/logout", {}, csrf=session["csrf_token"])
    assert (status, body["error"]) == (503, "unavailable") and COOKIE not in resp.cookies
    assert (await call(browser, "GET", "/api/session"))[0] == 200  # still signed in: the page says try again
    topic.down = False
    assert (await call(browser, "POST", "/api/logout", {}, csrf=session["csrf_token"]))[0] == 204


async def test_expired_and_tampered_cookies_get_401(world):
    clock, topic, (a, b) = world
    browser = await a.client()
    _, session, _ = await sign_in(browser)
    cookie = cookie_of(browser)
    assert session["expires_at"] == int((NOW_S + SESSION_S) * 1000)
    payload, stamp, signature = cookie.split(".")
    for forged in (
        cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"),  # signature changed
        f"{payload}x.{stamp}.{signature}",  # payload changed
        f"{payload}.{stamp}",  # no signature
        "not-a-cookie",
        "",
    ):
        assert await with_cookie(await a.client(), forged) == 401, forged
    clock.advance(SESSION_S - 1)
    assert await with_cookie(await b.client(), cookie) == 200
    clock.advance(2)  # the injected clock decides expiry, not the wall clock
    assert await with_cookie(await b.client(), cookie) == 401


async def test_no_cookie_is_accepted_before_the_revocation_list_is_read(world):
    clock, topic, (a, b) = world
    browser = await a.client()
    await sign_in(browser)
    b.revocations._reader.ready.clear()  # a replica just started
    assert await with_cookie(await b.client(), cookie_of(browser)) == 401
    b.revocations._reader.ready.set()  # it has read the topic to its end
    assert await with_cookie(await b.client(), cookie_of(browser)) == 200


def test_the_revocation_list_skips_bad_and_expired_records_and_forgets_expired_ids():
    clock = ManualClock(NOW_S)
    woken: list[str] = []
    revocations = SessionRevocations(ENV, None, clock, on_revoke=woken.append)
    later = int((NOW_S + 60) * 1000)
    revocations.apply(b"s1", json.dumps({"practice_id": "maple-family", "expires_at": later}).encode())
    revocations.apply(b"s1", json.dumps({"practice_id": "maple-family", "expires_at": later}).encode())  # again
    revocations.apply(b"s2", json.dumps({"practice_id": "maple-family", "expires_at": int(NOW_S * 1000)}).encode())
    for bad in (b"", b"\xff\xfe", b"[]", b'{"practice_id": "x"}', b'{"practice_id": "x", "expires_at": "soon"}'):
        revocations.apply(b"s3", bad)
    revocations.apply(None, b"{}")
    assert revocations.revoked("s1") and not revocations.revoked("s2") and not revocations.revoked("s3")
    assert woken == ["maple-family", "maple-family"]
    clock.advance(61)
    for i in range(1000):  # a sweep runs every PRUNE_EVERY records
        revocations.apply(f"n{i}".encode(), json.dumps({"practice_id": "p", "expires_at": later + 10**9}).encode())
    assert not revocations.revoked("s1") and len(revocations) == 1000


# ------------------------------------------------------------------ throttling, never a lockout
async def test_eleven_wrong_passwords_do_not_stop_the_right_one(world):
    clock, topic, (a, b) = world
    attacker = await a.client("127.0.0.2")
    waits = []
    for _ in range(11):
        status, body, resp = await sign_in(attacker, password=WRONG)
        if status == 429:  # wait as told, then guess again
            waits.append(int(resp.headers["Retry-After"]))
            clock.advance(waits[-1])
            status, body, _ = await sign_in(attacker, password=WRONG)
        assert (status, body["error"]) == (401, "invalid_credentials")
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]  # from the 3rd failure, doubling, capped
    # The real user at her own address: straight in.
    nurse_station = await a.client("127.0.0.1")
    assert (await sign_in(nurse_station))[0] == 200
    # At the attacker's address (say she shares it): the delay first, then the right password works.
    status, body, resp = await sign_in(attacker)
    assert (status, body["error"]) == (429, "too_many_attempts") and resp.headers["Retry-After"] == "60"
    clock.advance(60)
    assert (await sign_in(attacker))[0] == 200
    # That success forgets the failures of the account at that address.
    assert (await sign_in(attacker, password=WRONG))[0] == 401
    assert (await sign_in(attacker))[0] == 200


async def test_an_address_guessing_many_accounts_is_slowed_down_too(world):
    clock, topic, (a, b) = world
    sprayer = await a.client("127.0.0.2")
    for i in range(19):  # 19 accounts, one wrong password each: no account reaches its own delay
        status, _, _ = await sign_in(sprayer, username=f"user{i:02d}", password=WRONG)
        assert status == 401
    status, _, _ = await sign_in(sprayer, username="user19", password=WRONG)
    assert status == 401
    status, body, resp = await sign_in(sprayer, username="ana")  # the 21st try from that address
    assert (status, body["error"]) == (429, "too_many_attempts") and resp.headers["Retry-After"] == "1"
    assert (await sign_in(await a.client("127.0.0.1")))[0] == 200  # other addresses are not slowed
    clock.advance(1)
    assert (await sign_in(sprayer))[0] == 200


def test_login_delays_grow_from_the_third_failure_and_are_forgotten_after_the_window():
    now = [0.0]
    throttle = LoginThrottle(delay_from=3, window_s=900, first_delay_s=1, max_delay_s=60, clock=lambda: now[0])
    assert [throttle.delay_after(n) for n in range(12)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert throttle.delay_after(10**6) == 60
    throttle.failed("k")
    throttle.failed("k")
    assert throttle.retry_after("k") == 0
    throttle.failed("k")
    assert throttle.retry_after("k") == 1 and throttle.retry_after("other") == 0
    now[0] = 0.5
    assert throttle.retry_after("k") == 0.5
    now[0] = 901
    assert throttle.retry_after("k") == 0
    throttle.failed("k")
    assert throttle.retry_after("k") == 0  # the old failures fell out of the window
