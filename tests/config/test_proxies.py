"""The proxy in front of the gateway and the console: X-Forwarded-* believed only from it."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ringback.config.proxies import parse_trusted, proxy_middlewares
from ringback.config.settings import Settings


async def _client(trusted: list[str]) -> TestClient:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"scheme": request.scheme, "remote": request.remote, "host": request.host})

    app = web.Application(middlewares=proxy_middlewares(trusted))
    app.router.add_get("/echo", echo)
    app.router.add_get("/healthz", echo)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "console.example.org"}


async def test_a_trusted_proxy_gives_the_scheme_host_and_client():
    client = await _client(["127.0.0.1"])
    try:
        resp = await client.get("/echo", headers=FORWARDED)
        assert resp.status == 200
        assert await resp.json() == {"scheme": "https", "remote": "203.0.113.9", "host": "console.example.org"}
    finally:
        await client.close()


async def test_headers_from_anyone_else_are_refused_and_health_is_served_directly():
    client = await _client(["10.20.0.0/16"])  # the test client's 127.0.0.1 is not the proxy
    try:
        assert (await client.get("/echo", headers=FORWARDED)).status == 400
        assert (await client.get("/echo")).status == 400  # not through the proxy at all
        resp = await client.get("/healthz", headers=FORWARDED)
        assert resp.status == 200 and (await resp.json())["scheme"] == "http"
    finally:
        await client.close()


async def test_without_a_configured_proxy_the_headers_are_ignored():
    client = await _client([])
    try:
        body = await (await client.get("/echo", headers=FORWARDED)).json()
        assert body["scheme"] == "http" and body["remote"] == "127.0.0.1"
    finally:
        await client.close()


def test_a_bad_proxy_address_is_an_error_naming_the_setting():
    assert parse_trusted(" 10.0.0.0/8, 192.0.2.7 ,") == ["10.0.0.0/8", "192.0.2.7"]
    with pytest.raises(ValueError, match="RINGBACK_TRUSTED_PROXIES: 'lb.internal'"):
        Settings(_env_file=None, ringback_trusted_proxies="10.0.0.1,lb.internal")
