"""FHIR Bulk Data `$export` client (`ringback ehr export`).

One run: kick-off (`GET [base]/$export`, `Patient/$export` or `Group/<id>/$export` with
`_type` and `_since`, `Prefer: respond-async`), polling of the status URL the server gave
in `Content-Location` (honouring `Retry-After`, logging `X-Progress`), download of each
NDJSON output (with the token only when the manifest says `requiresAccessToken`), publish
through the NDJSON import path (`fhir.import_ndjson`: Patient files first), then `DELETE`
of the export on the server. An incremental run asks `_since` the `transactionTime` of the
last completed export.

Resumable: the status URL, the manifest and which outputs were published are kept in the
EHR state file the publisher already keeps (`bulk_export`), saved before each step, so a
run killed at any point continues the same export instead of starting another, and never
publishes an output it had published (one killed between a file's acknowledged publish and
the save of that fact publishes that file again: the records are keyed, a consumer sees
the same values twice).

Rate limits: every request counts against a per-minute budget (eClinicalWorks allows
250 a minute per practice), and 429/503 answers are retried after their `Retry-After`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin

import httpx
from prometheus_client import Counter, Gauge

from ringback.config.settings import Settings
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.producer import AckedProducer
from ringback.sources.ehr.fhir import RESOURCE_TYPES, EhrSync, SyncReport, _practice_region, import_ndjson

log = logging.getLogger(__name__)

STATE_KEY = "bulk_export"
LEVELS = ("system", "patient", "group")
RETRYABLE = (429, 502, 503, 504)
TYPE_ORDER = {t: i for i, t in enumerate(RESOURCE_TYPES)}

Sleep = Callable[[float], Awaitable[None]]

RUNS = Counter(
    "ringback_ehr_export_runs_total", "Bulk export runs of `ringback ehr export --every`, by result", ["result"]
)
LAST_SUCCESS = Gauge(
    "ringback_ehr_export_last_success_timestamp_seconds",
    "Wall time (Unix seconds) the last Bulk export run finished without an error",
)


def declare_series() -> None:
    """Every series at 0 from the start (increase() cannot see the first value of a series)."""
    from ringback.observability.metrics import declare_dead_letter_sources
    from ringback.sources.ehr.publisher import DEAD_LETTER_KINDS

    for result in ("ok", "failed"):
        RUNS.labels(result)
    declare_dead_letter_sources(f"fhir-ndjson:{kind}" for kind in DEAD_LETTER_KINDS)


class BulkExportError(RuntimeError):
    """The server refused or failed the export (the message never echoes PHI)."""


class StaticBearer(httpx.Auth):
    """`Authorization: Bearer <token>` on every request (a token from the secrets store).
    Any httpx.Auth fits the same seam, e.g. a SMART Backend Services token provider."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def retry_after_s(response: httpx.Response, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP-date; None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now()).total_seconds())
    except (TypeError, ValueError):
        return None


class RequestBudget:
    """At most `per_minute` requests in any 60 s (0: no limit); `acquire` waits for a slot."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()

    async def acquire(self) -> None:
        if self.per_minute <= 0:
            return
        while True:
            now = self._clock()
            while self._sent and self._sent[0] <= now - 60.0:
                self._sent.popleft()
            if len(self._sent) < self.per_minute:
                self._sent.append(now)
                return
            await self._sleep(self._sent[0] + 60.0 - now)


def _diagnostics(response: httpx.Response) -> str:
    """What an OperationOutcome says, briefly (servers put no PHI there; cut anyway)."""
    try:
        body = response.json()
        issues = body.get("issue") or []
        text = "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues)
    except ValueError:
        text = ""
    return text[:300]


class BulkExportClient:
    """The HTTP side of an export: kick-off, status polling, downloads, delete."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth | None = None,
        requests_per_minute: int = 0,
        poll_max_s: float = 120.0,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_retries: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.poll_max_s = poll_max_s
        self.max_retries = max_retries
        self._sleep = sleep
        self._clock = clock
        self.budget = RequestBudget(requests_per_minute, clock, sleep)
        self.requests = 0
        self._client = httpx.AsyncClient(auth=auth, timeout=timeout, transport=transport, follow_redirects=True)

    async def close(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, url: str, *, with_auth: bool = True, **kwargs) -> httpx.Response:
        """One request within the budget; 429 / 5xx-busy answers retried after their Retry-After."""
        if not with_auth:
            kwargs["auth"] = None
        for attempt in range(self.max_retries + 1):
            await self.budget.acquire()
            self.requests += 1
            response = await self._client.request(method, url, **kwargs)
            if response.status_code not in RETRYABLE or attempt == self.max_retries:
                return response
            wait = retry_after_s(response)
            wait = min(2.0**attempt, 60.0) if wait is None else wait
            log.info("bulk export: HTTP %d from the server, retrying in %.1f s", response.status_code, wait)
            await response.aread()
            await self._sleep(wait)
        raise AssertionError("unreachable")

    def kickoff_url(self, level: str, group_id: str | None = None) -> str:
        if level == "system":
            return urljoin(self.base_url, "$export")
        if level == "patient":
            return urljoin(self.base_url, "Patient/$export")
        if level == "group" and group_id:
            return urljoin(self.base_url, f"Group/{group_id}/$export")
        raise ValueError(f"export level {level!r} (system, patient, or group with a group id)")

    async def kick_off(self, url: str, types: list[str], since: str | None) -> str:
        params = {"_type": ",".join(types)}
        if since:
            params["_since"] = since
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        response = await self._send("GET", url, params=params, headers=headers)
        if response.status_code != 202:
            raise BulkExportError(f"export kick-off: HTTP {response.status_code}: {_diagnostics(response)}")
        status_url = response.headers.get("Content-Location")
        if not status_url:
            raise BulkExportError("export kick-off: 202 without a Content-Location status URL")
        return urljoin(self.base_url, status_url)

    async def manifest(self, status_url: str, timeout_s: float = 3600.0) -> dict:
        """Poll until the export is complete; the manifest (transactionTime, output, ...)."""
        deadline = self._clock() + timeout_s
        backoff = 1.0
        while True:
            response = await self._send("GET", status_url, headers={"Accept": "application/json"})
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise BulkExportError("export status: the manifest is not JSON") from None
            if response.status_code != 202:
                raise BulkExportError(f"export status: HTTP {response.status_code}: {_diagnostics(response)}")
            progress = response.headers.get("X-Progress")
            if progress:
                log.info("bulk export in progress: %s", progress[:200])
            if self._clock() >= deadline:
                raise BulkExportError(f"export not complete within {timeout_s:.0f} s")
            wait = retry_after_s(response)
            if wait is None:
                wait, backoff = backoff, min(backoff * 2, self.poll_max_s)
            await self._sleep(min(wait, self.poll_max_s, max(0.0, deadline - self._clock())))

    async def download(self, url: str, dest: Path, requires_token: bool) -> int:
        """One NDJSON output to `dest` (written whole, then renamed); its size in bytes."""
        tmp = dest.with_suffix(".part")
        for attempt in range(self.max_retries + 1):
            await self.budget.acquire()
            self.requests += 1
            kwargs: dict = {} if requires_token else {"auth": None}
            async with self._client.stream(
                "GET", url, headers={"Accept": "application/fhir+ndjson"}, **kwargs
            ) as response:
                if response.status_code in RETRYABLE and attempt < self.max_retries:
                    wait = retry_after_s(response)
                    await self._sleep(min(2.0**attempt, 60.0) if wait is None else wait)
                    continue
                if response.status_code != 200:
                    raise BulkExportError(f"export output download: HTTP {response.status_code}")
                size = 0
                with open(tmp, "wb") as fh:
                    async for chunk in response.aiter_bytes():
                        fh.write(chunk)
                        size += len(chunk)
            tmp.replace(dest)
            return size
        raise BulkExportError("export output download: the server stayed busy")

    async def delete(self, status_url: str) -> None:
        """Tell the server it may delete the export's files (404: already gone, e.g. HAPI once complete)."""
        response = await self._send("DELETE", status_url)
        if response.status_code not in (200, 202, 204, 404):
            log.warning("bulk export: DELETE of the export answered HTTP %d", response.status_code)


# ---------------------------------------------------------------------------------- one run
@dataclass
class ExportReport(SyncReport):
    status_url: str | None = None
    transaction_time: str | None = None
    since: str | None = None
    resumed: bool = False
    outputs: int = 0
    outputs_published: int = 0
    outputs_already_published: int = 0
    errors_reported: int = 0
    requests: int = 0


def _outputs(manifest: dict) -> list[dict]:
    """Output files, then `deleted` files (Bundles of DELETEs), each in Patient-first order."""
    files = [{**o, "kind": "output"} for o in manifest.get("output") or [] if o.get("url")]
    files += [{**o, "kind": "deleted"} for o in manifest.get("deleted") or [] if o.get("url")]
    return sorted(files, key=lambda o: (o["kind"] != "output", TYPE_ORDER.get(o.get("type", ""), 9)))


async def run_export_once(
    sync: EhrSync,
    client: BulkExportClient,
    workdir: Path,
    *,
    level: str = "system",
    group_id: str | None = None,
    types: list[str] | None = None,
    since: str | None = None,
    full: bool = False,
    poll_timeout_s: float = 3600.0,
) -> ExportReport:
    """One export, resumed if the state holds an unfinished one. `since` None and not `full`:
    from the last completed export's transactionTime."""
    report = ExportReport()
    sync.report = report
    state = sync.projector.state
    saved = state.setdefault(STATE_KEY, {"since": None, "job": None})
    await sync.recover()

    job = saved.get("job")
    if job is None:
        start = None if full else (since or saved.get("since"))
        url = client.kickoff_url(level, group_id)
        status_url = await client.kick_off(url, types or list(RESOURCE_TYPES), start)
        job = {"status_url": status_url, "since": start, "manifest": None, "published": []}
        saved["job"] = job
        sync.store.save(state)  # a crash from here on polls this export again, never kicks off another
        log.info("bulk export started (since %s)", start or "the beginning")
    else:
        report.resumed = True
        log.info("bulk export: resuming the unfinished export of the last run")
    report.status_url, report.since = job["status_url"], job["since"]

    if job["manifest"] is None:
        job["manifest"] = await client.manifest(job["status_url"], poll_timeout_s)
        sync.store.save(state)
    manifest = job["manifest"]
    report.transaction_time = manifest.get("transactionTime")
    report.errors_reported = len(manifest.get("error") or [])
    if report.errors_reported:
        log.warning("bulk export: the server reported %d error files (not read)", report.errors_reported)

    folder = workdir / hashlib.sha256(job["status_url"].encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    files = _outputs(manifest)
    report.outputs = len(files)
    for number, output in enumerate(files):
        if output["url"] in job["published"]:
            report.outputs_already_published += 1
            continue
        path = folder / f"{number:04d}.{output.get('type', 'unknown')}.ndjson"
        if not path.exists():
            await client.download(output["url"], path, bool(manifest.get("requiresAccessToken")))
        await import_ndjson(sync, [path])
        job["published"].append(output["url"])
        sync.store.save(state)
        path.unlink()
        report.outputs_published += 1

    await client.delete(job["status_url"])
    saved["since"] = report.transaction_time or saved.get("since")
    saved["job"] = None
    sync.store.save(state)
    shutil.rmtree(folder, ignore_errors=True)
    report.requests = client.requests
    return report


def run_export(
    env: Settings,
    base_url: str,
    practice_id: str,
    *,
    auth: httpx.Auth | None = None,
    level: str = "system",
    group_id: str | None = None,
    types: list[str] | None = None,
    since: str | None = None,
    full: bool = False,
    region: str | None = None,
    requests_per_minute: int | None = None,
    poll_max_s: float | None = None,
) -> ExportReport:
    """`ringback ehr export`: one export run on the real broker."""
    admin.ensure_topics(env, topics.EHR)  # and its principal may read and write what it does
    region = _practice_region(env, practice_id, region)
    producer = AckedProducer(client_config(env), timeout_s=10)

    async def main() -> ExportReport:
        client = BulkExportClient(
            base_url,
            auth=auth,
            requests_per_minute=env.ringback_ehr_requests_per_minute
            if requests_per_minute is None
            else requests_per_minute,
            poll_max_s=env.ringback_ehr_export_poll_max_s if poll_max_s is None else poll_max_s,
        )
        sync = None
        try:
            sync = EhrSync.open(env, producer, practice_id, region)
            workdir = Path(env.ringback_state_dir) / "ehr" / "bulk" / practice_id
            return await run_export_once(
                sync, client, workdir, level=level, group_id=group_id, types=types, since=since, full=full
            )
        finally:
            await client.close()
            if sync is not None:
                sync.store.unlock()

    try:
        return asyncio.run(main())
    finally:
        producer.close()
