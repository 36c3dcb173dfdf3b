"""Property test of the staff console: malformed requests at every route never get a 5xx.

The console runs in-process (aiohttp TestServer) with the real accounts, sessions and task
cache and a producer stand-in that never fails (so not even 503 is allowed). Requests are
written as raw bytes on a socket, so header values may be anything a client can send:
bytes that are not UTF-8 in `X-CSRF-Token`, `Cookie`, `Content-Type`, `Origin`; bodies
that are not JSON, not UTF-8, compressed, over the size limit. Every route of the app is
fuzzed (read from its router), so routes added later are covered without touching this file.
Half of the requests carry a valid session cookie, and some a valid CSRF token, so the
handlers behind the session check are reached too. Everything runs twice: served directly,
and behind a reverse proxy (RINGBACK_TRUSTED_PROXIES set), where malformed, repeated or
too many `X-Forwarded-For` / `-Proto` / `-Host` headers must get a 4xx as well.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import string
from urllib.parse import quote_from_bytes

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ringback.clock import ManualClock
from ringback.config.proxies import parse_trusted
from ringback.config.settings import Settings
from ringback.console.app import MAX_BODY_BYTES, Console
from ringback.console.service import ChangeNotifier, TaskService
from ringback.console.sessions import COOKIE, SessionCodec
from ringback.console.task_cache import TaskCache
from ringback.console.users import UserStore
from ringback.domain.tasks import new_task
from ringback.schemas import codec

NOW_S = 1_764_000_000.0
PASSWORD = "correct horse battery"
CALLER = "+14155550123"


class Producer:
    """AckedProducer's `send`, in memory: acknowledges everything."""

    async def send(self, topic, key, value, headers=None, partition=None):
        return 0, 0


class KeepSessions:
    """Revocations that forget every sign-out: a fuzzed logout must not end the session the other examples use."""

    def ready(self) -> bool:
        return True

    def revoked(self, session_id: str) -> bool:
        return False

    async def revoke(self, session) -> None:
        pass


# What the proxy in front of the console says about the client (its one hop: XForwardedStrict).
CLIENT = b"198.51.100.4"


class Harness:
    def __init__(self, tmp, trusted_proxies: str | None = None) -> None:
        clock = ManualClock(NOW_S)
        env = Settings(_env_file=None, ringback_namespace="fuzz", ringback_trusted_proxies=trusted_proxies)
        # Behind the proxy every request names its client; served directly the header is ignored.
        self.forwarded = {"X-Forwarded-For": CLIENT.decode()} if trusted_proxies else {}
        notifier = ChangeNotifier()
        cache = TaskCache(env, notifier.bump)
        users = UserStore(tmp / "users.json", hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        users.add("maple-family", "ana", PASSWORD, ["admin_team"], int(NOW_S * 1000))
        action = {
            "action_id": "maple-family:c1:admin_task",
            "case_id": "maple-family:c1",
            "practice_id": "maple-family",
            "kind": "CREATE_TASK",
            "step": "admin_task",
            "scenario": "GENERAL_INQUIRY",
            "recipient": "email:x@example.org",
            "body": None,
            "reason": "general inquiry",
            "priority": "NORMAL",
            "created_at": int(NOW_S * 1000),
            "due_at": int(NOW_S * 1000) + 3600_000,
            "missed_at": int(NOW_S * 1000) - 60_000,
            "call_reported_at": None,
            "params": {"role": "admin_team", "caller": CALLER},
        }
        task = new_task(action, CALLER, "admin_team", int(NOW_S * 1000))
        cache.apply(task["task_id"].encode(), codec.encode("task", task))
        self.task_id = task["task_id"]
        service = TaskService(cache, Producer(), "fuzz.task-updates", clock, notifier)
        self.console = Console(
            service,
            users,
            SessionCodec(b"k" * 32, clock=clock, revocations=KeepSessions()),
            clock=clock,
            trusted_proxies=parse_trusted(env.ringback_trusted_proxies),  # as console/app.py run() does
        )
        self.app = self.console.app()
        self.routes = sorted(
            {(r.method, r.resource.canonical) for r in self.app.router.routes() if r.resource and r.method != "HEAD"}
        )
        self.loop = asyncio.new_event_loop()
        self.client: TestClient = self.loop.run_until_complete(self._start())
        self.cookie, self.csrf = self.loop.run_until_complete(self._sign_in())

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.app))
        await client.start_server()
        return client

    async def _sign_in(self) -> tuple[str, str]:
        body = {"practice_id": "maple-family", "username": "ana", "password": PASSWORD}
        async with self.client.post("/api/login", json=body, headers=self.forwarded) as resp:
            assert resp.status == 200
            return resp.cookies[COOKIE].value, (await resp.json())["csrf_token"]

    def send(self, raw: bytes) -> int:
        """Write one raw request; the status of the answer (the head only: event streams never end)."""

        async def go() -> int:
            reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
            try:
                writer.write(raw)
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 10)
            finally:
                writer.close()
            assert line.startswith(b"HTTP/1."), f"no HTTP answer: {line!r}"
            return int(line.split()[1])

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module", params=[None, "127.0.0.1"], ids=["direct", "behind-proxy"])
def console(request, tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("console-fuzz"), trusted_proxies=request.param)
    yield harness
    harness.close()


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# Header value bytes: mostly what an HTTP parser lets through (visible ASCII, space, tab and bytes
# 0x80-0xFF, which are not UTF-8 on their own), sometimes anything but CR and LF (those would end the
# header, not malform it; the parser answers most control bytes with its own 400).
TOLERATED = bytes([9, *range(32, 127), *range(128, 256)])
header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")) | st.lists(
    st.sampled_from(TOLERATED), max_size=60
).map(bytes)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "practice_id": json_values | st.just("maple-family"),
            "username": json_values | st.just("ana"),
            "password": json_values | st.just(PASSWORD),
            "outcome": json_values | st.sampled_from(["reached_patient", "left_message", "bogus"]),
            "role": json_values | st.sampled_from(["nurse", "admin_team", "x" * 100]),
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.just(b'{"a": "\\ud800"}'),  # an escaped lone surrogate
    st.just(b"\xff\xfe{}"),
    st.just(b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"),  # over the size limit
)
content_types = (
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/json; charset=nonexistent",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"text/plain",
            b"application/\xff\xfe",
            b";;;",
            b"",
        ]
    )
    | header_bytes
)

# X-Forwarded-* values: mostly one valid client (the proxy's word, so the handlers are reached),
# else lists of hops, addresses with ports, hosts that are no URL authority, bytes that are not UTF-8.
forwarded_for = st.one_of(
    st.just(CLIENT),
    st.just(CLIENT),
    st.none(),
    st.sampled_from([b"198.51.100.4, 203.0.113.9", b"not-an-ip", b"", b"::1", b"[::1]", b"1.2.3.4:80", b"\xff", b","]),
    header_bytes,
)
forwarded_proto = st.one_of(
    st.none(), st.none(), st.sampled_from([b"https", b"http", b"https, http", b"ftp", b"", b"\xff\xfe"]), header_bytes
)
forwarded_host = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from([b"console.example.org", b"[", b"a:99999", b"", b"\xff\xfe", b"x y", b"a.example, b.example"]),
    header_bytes,
)


def path_of(console: Harness, canonical: str, segment: bytes, query: bytes) -> bytes:
    """The route's path with each {placeholder} (or the static folder's file) a random segment."""
    seg = quote_from_bytes(segment, safe=b"") if segment else "x"
    path = canonical
    if "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + seg + path[end + 1 :]
    elif canonical == "/static":
        path = f"/static/{seg}"
    return path.encode() + (b"?" + query if query else b"")


@FUZZ
@given(
    route=st.integers(min_value=0, max_value=10_000),
    method=st.none() | st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]),
    segment=st.binary(max_size=40) | st.just(b"maple-family:c1:admin_task") | st.just(b"..%2f..%2fetc"),
    query=st.none()
    | st.sampled_from([b"role=nurse", b"role=%ff%fe", b"role=" + b"x" * 100, b"role=%00&role=a", b"%zz"])
    | st.text(string.ascii_letters + string.digits + string.punctuation.replace("#", ""), max_size=40).map(str.encode),
    session=st.sampled_from(["valid", "none", "garbage", "valid+garbage"]),
    cookie_junk=header_bytes,
    csrf=st.none() | st.just("valid") | header_bytes,
    content_type=st.none() | content_types,
    origin=st.none() | header_bytes | st.sampled_from([b"http://[", b"null", b"https://evil.example", b"\xff://x"]),
    encoding=st.sampled_from([None, None, None, b"gzip", b"deflate", b"br", b"\xff"]),
    body=bodies,
    compress=st.sampled_from([False, False, False, True]),
    xff=forwarded_for,
    xfp=forwarded_proto,
    xfh=forwarded_host,
    repeated=st.sampled_from([False, False, False, True]),
)
def test_no_malformed_request_gets_a_5xx(
    console,
    route,
    method,
    segment,
    query,
    session,
    cookie_junk,
    csrf,
    content_type,
    origin,
    encoding,
    body,
    compress,
    xff,
    xfp,
    xfh,
    repeated,
):
    route_method, canonical = console.routes[route % len(console.routes)]
    if canonical == "/{task_id}":  # not a route of this app; keeps the mapping honest if one appears
        canonical = "/x"
    if segment == b"maple-family:c1:admin_task":
        segment = console.task_id.encode()
    verb = method or route_method.encode()
    if compress and body:
        body = gzip.compress(body)
    headers = [b"Host: " + f"{console.client.host}:{console.client.port}".encode(), b"Connection: close"]
    cookie = {
        "valid": f"{COOKIE}={console.cookie}".encode(),
        "none": b"",
        "garbage": COOKIE.encode() + b"=" + cookie_junk,
        "valid+garbage": f"{COOKIE}={console.cookie}; ".encode() + cookie_junk,
    }[session]
    if cookie:
        headers.append(b"Cookie: " + cookie)
    if csrf is not None:
        headers.append(b"X-CSRF-Token: " + (console.csrf.encode() if csrf == "valid" else csrf))
    if content_type is not None:
        headers.append(b"Content-Type: " + content_type)
    if origin is not None:
        headers.append(b"Origin: " + origin)
    if encoding is not None:
        headers.append(b"Content-Encoding: " + encoding)
    for name, value in ((b"X-Forwarded-For", xff), (b"X-Forwarded-Proto", xfp), (b"X-Forwarded-Host", xfh)):
        if value is not None:
            headers += [name + b": " + value] * (2 if repeated else 1)
    headers.append(b"Content-Length: " + str(len(body)).encode())
    raw = verb + b" " + path_of(console, canonical, segment, query or b"") + b" HTTP/1.1\r\n"
    raw += b"\r\n".join(headers) + b"\r\n\r\n" + body
    status = console.send(raw)
    try:  # what the examples reached: pytest --hypothesis-show-statistics
        event(f"{route_method} {canonical} → {status}")
    except InvalidArgument:
        pass
    assert 200 <= status < 500, (status, raw[:300])


@pytest.mark.parametrize(
    "token",
    [b"\xff\xfe", b"\xc3", "é".encode("latin-1"), "é".encode(), b"\x80" * 40],
)
def test_a_csrf_header_that_is_not_utf8_is_refused_with_403(console, token):
    raw = (
        b"POST /api/logout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Cookie: {COOKIE}={console.cookie}\r\n".encode()
        + b"X-Forwarded-For: "
        + CLIENT
        + b"\r\n"
        + b"Content-Type: application/json\r\nX-CSRF-Token: "
        + token
        + b"\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert console.send(raw) == 403
