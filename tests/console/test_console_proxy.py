"""The console behind a TLS-terminating proxy: the session cookie is Secure when the trusted
proxy says the request came over https, and a client address for throttling is the proxy's word."""

from __future__ import annotations

from tests.console.test_console_unit import COOKIE, PASSWORD, call, h, new_client  # noqa: F401 - h is a fixture

LOGIN = {"practice_id": "maple-family", "username": "ana", "password": PASSWORD}


async def test_the_cookie_is_secure_when_the_trusted_proxy_forwarded_https(h):  # noqa: F811
    h.console.trusted_proxies = ["127.0.0.1"]
    client = await new_client(h)
    hdrs = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}
    status, _, resp = await call(client, "POST", "/api/login", LOGIN, headers=hdrs)
    assert status == 200 and resp.cookies[COOKIE]["secure"]


async def test_forwarded_headers_from_an_untrusted_peer_never_make_the_cookie_secure(h):  # noqa: F811
    hdrs = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}
    status, _, resp = await call(h.client, "POST", "/api/login", LOGIN, headers=hdrs)  # no proxy configured
    assert status == 200 and not resp.cookies[COOKIE]["secure"]
    h.console.trusted_proxies = ["10.9.0.0/16"]
    client = await new_client(h)
    status, _, _ = await call(client, "POST", "/api/login", LOGIN, headers=hdrs, validate=False)
    assert status == 400
