"""The Bulk Data `$export` client (sources/ehr/bulk.py) against a small aiohttp server that
behaves like the spec where HAPI FHIR does not (429 + Retry-After, Retry-After on 202, an
HTTP-date, outputs that need no token), and a recording producer (no broker). The export
against HAPI FHIR on the broker: test_bulk_export.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web

from ringback.sources.ehr import bulk, smart
from tests.conftest import free_port
from tests.sources.ehr.test_fhir_client import compacted, make_sync
from tests.sources.recording_producer import RecordingProducer
from tests.support.smart_auth_server import SmartAuthServer

TOKEN = "bulk-test-token"
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "telecom": [{"system": "phone", "value": "0412 345 678"}],
}
APPOINTMENT = {
    "resourceType": "Appointment",
    "id": "a1",
    "status": "booked",
    "start": "2026-12-10T10:00:00Z",
    "participant": [{"actor": {"reference": "Patient/p1"}}],
}


class SpecServer:
    """Kick-off → 429 (Retry-After 7) → 202 (Retry-After 3, X-Progress) → manifest."""

    def __init__(self, requires_token: bool = True) -> None:
        self.requires_token = requires_token
        self.seen: list[tuple[str, str, str | None]] = []  # method, path+query, Authorization
        self.status_answers = [
            (429, {"Retry-After": "7"}),
            (202, {"Retry-After": "3", "X-Progress": "50% done"}),
            (200, {}),
        ]
        self.deleted = False
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fhir/$export", self.kick_off)
        app.router.add_get("/fhir/status/1", self.status)
        app.router.add_delete("/fhir/status/1", self.delete)
        app.router.add_get("/files/{name}", self.file)
        return app

    def _seen(self, request: web.Request) -> None:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))

    async def kick_off(self, request: web.Request) -> web.Response:
        self._seen(request)
        assert request.headers["Prefer"] == "respond-async"
        return web.Response(status=202, headers={"Content-Location": f"{self.base}/status/1"})

    async def status(self, request: web.Request) -> web.Response:
        self._seen(request)
        code, headers = self.status_answers.pop(0)
        if code != 200:
            return web.Response(status=code, headers=headers)
        manifest = {
            "transactionTime": "2026-12-04T10:00:00Z",
            "request": f"{self.base}/$export",
            "requiresAccessToken": self.requires_token,
            "output": [
                {"type": "Appointment", "url": f"http://127.0.0.1:{self.port}/files/appointments"},
                {"type": "Patient", "url": f"http://127.0.0.1:{self.port}/files/patients"},
            ],
            "error": [],
        }
        return web.json_response(manifest)

    async def delete(self, request: web.Request) -> web.Response:
        self._seen(request)
        self.deleted = True
        return web.Response(status=202)

    async def file(self, request: web.Request) -> web.Response:
        self._seen(request)
        if self.requires_token and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        body = PATIENT if request.match_info["name"] == "patients" else APPOINTMENT
        return web.Response(text=json.dumps(body) + "\n", content_type="application/fhir+ndjson")


@pytest.fixture
async def spec_server():
    server = SpecServer()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", server.port)
    await site.start()
    yield server
    await runner.cleanup()


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_export_honours_429_and_retry_after_sends_the_token_and_deletes(spec_server, tmp_path):
    sleeps = Sleeps()
    client = bulk.BulkExportClient(spec_server.base, auth=bulk.StaticBearer(TOKEN), poll_max_s=120, sleep=sleeps)
    producer = RecordingProducer()
    sync = make_sync(tmp_path, producer)
    try:
        report = await bulk.run_export_once(sync, client, tmp_path / "bulk", types=["Patient", "Appointment"])
    finally:
        await client.close()
    assert sleeps.waits == [7.0, 3.0]  # the 429's Retry-After, then the 202's
    assert spec_server.seen[0][1] == "/fhir/$export?_type=Patient%2CAppointment"
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in spec_server.seen)
    # Patient file first whatever the manifest's order: appointments key by the patient's phones.
    assert [p for _, p, _ in spec_server.seen if p.startswith("/files/")] == ["/files/patients", "/files/appointments"]
    assert spec_server.deleted and report.outputs_published == 2 and report.transaction_time == "2026-12-04T10:00:00Z"
    assert set(compacted(producer, "appointments", "appointment")) == {b"harbour-gp|+61412345678|a1"}
    # The next run asks only what changed since this export's transactionTime.
    assert sync.projector.state[bulk.STATE_KEY] == {"since": "2026-12-04T10:00:00Z", "job": None}


async def test_outputs_that_need_no_token_are_fetched_without_it(spec_server, tmp_path):
    spec_server.requires_token = False
    spec_server.status_answers = [(200, {})]
    client = bulk.BulkExportClient(spec_server.base, auth=bulk.StaticBearer(TOKEN), sleep=Sleeps())
    try:
        await bulk.run_export_once(make_sync(tmp_path, RecordingProducer()), client, tmp_path / "bulk")
    finally:
        await client.close()
    files = [auth for _, path, auth in spec_server.seen if path.startswith("/files/")]
    assert files == [None, None]


async def test_a_smart_token_goes_to_the_fhir_server_never_to_outputs_that_need_none(spec_server, tmp_path):
    """The token from a verifying SMART token endpoint (SmartAuth), not a static one."""
    spec_server.requires_token = False
    spec_server.status_answers = [(200, {})]
    auth_server = SmartAuthServer(spec_server.base)
    path = tmp_path / smart.KEY_SECRET
    auth_server.register("ringback-harbour", smart.add_key(path, "ES384"))
    auth = smart.SmartAuth(auth_server.base, "ringback-harbour", smart.parse_keys(path.read_text()), "system/*.rs")
    client = bulk.BulkExportClient(spec_server.base, auth=auth, sleep=Sleeps())
    try:
        await bulk.run_export_once(make_sync(tmp_path, RecordingProducer()), client, tmp_path / "bulk")
    finally:
        await client.close()
        auth_server.close()
    assert auth_server.token_requests == 1 and auth.token is not None
    sent = {(method, path.split("/")[1], header) for method, path, header in spec_server.seen}
    bearer = f"Bearer {auth.token.value}"
    assert sent == {("GET", "fhir", bearer), ("DELETE", "fhir", bearer), ("GET", "files", None)}


async def test_poll_waits_are_capped_and_backoff_without_retry_after(spec_server, tmp_path):
    spec_server.status_answers = [(202, {"Retry-After": "120"}), (202, {}), (202, {}), (200, {})]
    sleeps = Sleeps()
    client = bulk.BulkExportClient(spec_server.base, poll_max_s=5, sleep=sleeps)
    try:
        manifest = await client.manifest(f"{spec_server.base}/status/1")
    finally:
        await client.close()
    assert manifest["transactionTime"] == "2026-12-04T10:00:00Z"
    assert sleeps.waits == [5, 1.0, 2.0]


def test_retry_after_as_seconds_or_http_date():
    now = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    date = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")

    def answer(value: str | None) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value} if value else {})

    assert bulk.retry_after_s(answer("30")) == 30.0
    assert bulk.retry_after_s(answer(date), now=lambda: now) == 90.0
    assert bulk.retry_after_s(answer("soon")) is None
    assert bulk.retry_after_s(answer(None)) is None


async def test_request_budget_per_minute():
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    budget = bulk.RequestBudget(250, clock=lambda: now[0], sleep=sleep)
    for _ in range(250):
        await budget.acquire()
        now[0] += 0.1  # 250 requests in 25 s
    assert sleeps == []
    await budget.acquire()  # the 251st waits until the first is a minute old
    assert sleeps == [pytest.approx(35.0)] and now[0] == pytest.approx(60.0)
    assert await bulk.RequestBudget(0).acquire() is None  # 0: no limit


def test_kickoff_levels():
    client = bulk.BulkExportClient("https://ehr.example.org/fhir/R4")
    assert client.kickoff_url("system") == "https://ehr.example.org/fhir/R4/$export"
    assert client.kickoff_url("patient") == "https://ehr.example.org/fhir/R4/Patient/$export"
    assert client.kickoff_url("group", "g-1") == "https://ehr.example.org/fhir/R4/Group/g-1/$export"
    with pytest.raises(ValueError, match="group id"):
        client.kickoff_url("group")
