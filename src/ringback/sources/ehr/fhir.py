"""EHR sync from FHIR R4 (`ringback ehr sync` / `ringback ehr import`).

Pulls Patient, Appointment and Flag resources from a FHIR server's REST API
(`GET [base]/[type]?_lastUpdated=ge<cursor>&_count=N`, following `Bundle.link`
`next`), finds deletions in the type's history (`[type]/_history?_since=`), and
imports FHIR Bulk Data NDJSON files (deletions as the Bulk Data `deleted` Bundles).
The mapping to keyed records lives in `publisher.py`; keys, tombstones, state
and what is unverified: docs/sources-cdr-fhir.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin

import httpx
from prometheus_client import Counter

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.domain.phones import PhoneRejected, normalize, region_of
from ringback.domain.templates import primary_tag
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import configured_practice
from ringback.kafka.producer import AckedProducer
from ringback.sources.ehr.publisher import (
    AppointmentFacts,
    EhrProjector,
    EhrPublisher,
    FlagFacts,
    Op,
    PatientFacts,
    StateStore,
    empty_state,
    op_from_json,
    op_to_json,
    rebuild_state,
)

log = logging.getLogger(__name__)

RESOURCE_TYPES = ("Patient", "Appointment", "Flag")
APPOINTMENT_TOMBSTONE = {"cancelled", "noshow", "entered-in-error"}
FLAG_TOMBSTONE = {"inactive", "entered-in-error"}
FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITIES = {"PN", "PL", "PM", "PH"}
PHONE_SYSTEMS = {"phone", "sms"}
BATCH = 2000  # resources per publish; the state file is written once per batch

RESOURCES = Counter("ringback_ehr_resources_total", "FHIR resources read, by type and result", ["resource", "result"])
REJECTED = Counter(
    "ringback_ehr_rejected_total", "EHR data rejected (dead-lettered), by type and reason", ["resource", "reason"]
)


class ResourceError(ValueError):
    """A resource we cannot map (dead letter); the message never echoes PHI."""


class FhirError(RuntimeError):
    """The FHIR server answered something other than a Bundle."""


# ---------------------------------------------------------------------------------- mapping
def instant_ms(value: str | None) -> int | None:
    """FHIR instant / dateTime / date → UTC epoch ms (a date or a time without zone as UTC)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = (
                datetime.strptime(value[:10], "%Y-%m-%d") if len(value) == 10 else datetime.strptime(value, "%Y-%m")
            )
        except ValueError:
            raise ResourceError("not a FHIR date/time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def ref_id(reference: str | None, resource_type: str) -> str | None:
    """The id in a reference to `resource_type` ("Patient/123", an absolute URL, a versioned one)."""
    if not reference:
        return None
    parts = reference.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == resource_type and parts[i + 1]:
            return parts[i + 1]
    return None


def _updated(resource: dict, default_ms: int) -> int:
    try:
        return instant_ms((resource.get("meta") or {}).get("lastUpdated")) or default_ms
    except ResourceError:
        return default_ms


def _display_name(resource: dict) -> str | None:
    names = resource.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), None) or next(
        (n for n in names if n.get("use") not in ("old", "maiden")), None
    )
    if not chosen:
        return None
    if chosen.get("text"):
        return chosen["text"]
    text = " ".join([*chosen.get("given", []), chosen.get("family", "")]).strip()
    return text or None


def preferred_language(resource: dict) -> str | None:
    """Patient.communication: the entry marked `preferred` (else the first), its first
    `language.coding[].code` that is a language tag, as a primary tag ("es-MX" -> "es")."""
    entries = [c for c in resource.get("communication") or [] if isinstance(c, dict)]
    chosen = next((c for c in entries if c.get("preferred") is True), entries[0] if entries else None)
    codings = ((chosen or {}).get("language") or {}).get("coding") or []
    return next((tag for c in codings if isinstance(c, dict) and (tag := primary_tag(c.get("code")))), None)


def patient_facts(resource: dict, region: str, default_ms: int) -> PatientFacts:
    pid = resource.get("id")
    if not pid:
        raise ResourceError("Patient without id")
    phones: list[str] = []
    rejected: list[str] = []
    for i, tp in enumerate(resource.get("telecom") or []):
        if tp.get("system") not in PHONE_SYSTEMS or tp.get("use") == "old":
            continue
        if not tp.get("value"):
            rejected.append(f"Patient/{pid} telecom[{i}]: phone without a value")
            continue
        try:
            e164 = normalize(tp["value"], region)
        except PhoneRejected as exc:
            rejected.append(f"Patient/{pid} telecom[{i}]: {exc}")
            continue
        if e164 not in phones:
            phones.append(e164)
    deceased = bool(resource.get("deceasedBoolean")) or bool(resource.get("deceasedDateTime"))
    gp = (resource.get("generalPractitioner") or [{}])[0]
    return PatientFacts(
        patient_id=pid,
        active=resource.get("active", True) is not False,
        phones=phones,
        display_name=_display_name(resource),
        deceased=deceased,
        assigned_provider=gp.get("reference") or gp.get("display"),
        language=preferred_language(resource),
        updated_at=_updated(resource, default_ms),
        rejected=rejected,
    )


def appointment_facts(resource: dict, default_ms: int) -> AppointmentFacts:
    aid = resource.get("id")
    if not aid:
        raise ResourceError("Appointment without id")
    status = resource.get("status") or ""
    pid = next(
        (
            ref_id((p.get("actor") or {}).get("reference"), "Patient")
            for p in resource.get("participant") or []
            if ref_id((p.get("actor") or {}).get("reference"), "Patient")
        ),
        None,
    )
    try:
        start = instant_ms(resource.get("start"))
    except ResourceError:
        raise ResourceError(f"Appointment/{aid}: start is not a FHIR instant") from None
    return AppointmentFacts(
        appointment_id=aid,
        patient_id=pid,
        status=status,
        start=start,
        updated_at=_updated(resource, default_ms),
        live=status not in APPOINTMENT_TOMBSTONE and start is not None,
    )


_CALLBACK = re.compile(r"call\s?back")


def flag_facts(resource: dict, default_ms: int, now_ms: int) -> FlagFacts:
    fid = resource.get("id")
    if not fid:
        raise ResourceError("Flag without id")
    status = resource.get("status") or ""
    code = resource.get("code") or {}
    codings = code.get("coding") or []
    code_value = next((c.get("code") for c in codings if c.get("code")), None) or code.get("text") or "unknown"
    display = code.get("text") or next((c.get("display") for c in codings if c.get("display")), None)
    priority = None
    for ext in resource.get("extension") or []:
        if ext.get("url") == FLAG_PRIORITY_URL:
            for c in (ext.get("valueCodeableConcept") or {}).get("coding") or []:
                if c.get("code") in FLAG_PRIORITIES:
                    priority = c["code"]
    words = " ".join(
        filter(None, [code.get("text"), *(c.get("code") for c in codings), *(c.get("display") for c in codings)])
    ).lower()
    words = re.sub(r"[\s_\-]+", " ", words)
    callback = bool(_CALLBACK.search(words)) and "request" in words
    try:
        ended = instant_ms((resource.get("period") or {}).get("end"))
    except ResourceError:
        ended = None
    live = status not in FLAG_TOMBSTONE and not (ended is not None and ended < now_ms)
    return FlagFacts(
        flag_id=fid,
        patient_id=ref_id((resource.get("subject") or {}).get("reference"), "Patient"),
        status=status,
        code=code_value,
        display=display,
        priority=priority,
        callback_requested=callback,
        updated_at=_updated(resource, default_ms),
        live=live,
    )


def deletions_in_bundle(bundle: dict) -> list[tuple[str, str]]:
    """(type, id) of each deleted resource in a history / Bulk Data `deleted` Bundle."""
    out = []
    for entry in bundle.get("entry") or []:
        request = entry.get("request") or {}
        response = entry.get("response") or {}
        if request.get("method") == "DELETE" or (
            not entry.get("resource") and str(response.get("status", "")).startswith("410")
        ):
            url = request.get("url") or entry.get("fullUrl") or ""
            for rtype in RESOURCE_TYPES:
                rid = ref_id(url, rtype)
                if rid:
                    out.append((rtype, rid))
    return out


# ---------------------------------------------------------------------------------- report
@dataclass
class SyncReport:
    resources: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    patients_without_phone: int = 0
    patients_inactive: int = 0
    phones_rejected: int = 0
    deleted: dict[str, int] = field(default_factory=dict)
    swept: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    rejections: list[str] = field(default_factory=list)  # reasons (ids, never numbers)
    cursor: dict[str, str] = field(default_factory=dict)

    def bump(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


# ---------------------------------------------------------------------------------- sync engine
class EhrSync:
    """Maps resources, publishes their ops in batches, saves the state after each acknowledged batch."""

    def __init__(
        self,
        env: Settings,
        producer: AckedProducer,
        practice_id: str,
        region: str,
        clock: Clock | None = None,
        store: StateStore | None = None,
        state: dict | None = None,
    ) -> None:
        self.env = env
        self.practice_id = practice_id
        self.region = region
        self.clock = clock or Clock()
        self.store = store or StateStore(env, practice_id)
        if state is None:
            state = self.store.load()
        if state is None:
            state = empty_state(practice_id)
        self.projector = EhrProjector(practice_id, state)
        self.publisher = EhrPublisher(env, producer, practice_id)
        self.report = SyncReport()
        self._ops: list[Op] = []
        self._pending = 0

    @classmethod
    def open(
        cls, env: Settings, producer: AckedProducer, practice_id: str, region: str, clock: Clock | None = None
    ) -> EhrSync:
        """With the saved state, or the state rebuilt from the topics when the file is missing."""
        store = StateStore(env, practice_id)
        store.lock()
        state = store.load()
        if state is None:
            state = rebuild_state(env, practice_id)
            n = len(state["patients"]) + len(state["appointments"]) + len(state["flags"])
            if n:
                log.warning(
                    "ehr state file %s missing: rebuilt %d entries from the topics; run a full sync "
                    "(without --since) to sweep deletions",
                    store.path,
                    n,
                )
        return cls(env, producer, practice_id, region, clock, store, state)

    # -- one resource
    async def apply(self, resource: dict, raw: bytes | None = None, source: str = "fhir") -> None:
        rtype = resource.get("resourceType")
        now = self.clock.now_ms()
        if rtype == "Bundle":
            for dtype, rid in deletions_in_bundle(resource):
                await self.delete(dtype, rid)
            return
        if rtype not in RESOURCE_TYPES:
            self.report.bump(self.report.skipped, f"resource_type:{str(rtype)[:64]}")
            RESOURCES.labels("other", "skipped").inc()
            return
        self.report.bump(self.report.resources, rtype)
        raw = raw if raw is not None else json.dumps(resource).encode()
        try:
            if rtype == "Patient":
                facts = patient_facts(resource, self.region, now)
                # Dead-letter a patient's bad numbers once, not at every sync that re-reads it.
                seen = (self.projector.state["patients"].get(facts.patient_id) or {}).get("rejected")
                fingerprint = hashlib.sha1(json.dumps(resource.get("telecom"), sort_keys=True).encode()).hexdigest()
                self.report.phones_rejected += len(facts.rejected)
                if facts.rejected and seen != fingerprint:
                    for reason in facts.rejected:
                        await self._reject(rtype, "invalid_phone", reason, raw, source)
                if not facts.active:
                    self.report.patients_inactive += 1
                elif not facts.phones:
                    self.report.patients_without_phone += 1
                    RESOURCES.labels(rtype, "no_phone").inc()
                    log.info("Patient/%s has no usable phone: nothing published for it", facts.patient_id)
                ops = self.projector.patient(facts)
                if facts.rejected:
                    self.projector.state["patients"][facts.patient_id]["rejected"] = fingerprint
            elif rtype == "Appointment":
                appointment = appointment_facts(resource, now)
                if appointment.start is None and appointment.status not in APPOINTMENT_TOMBSTONE:
                    self.report.bump(self.report.skipped, "appointment_without_start")
                ops = self.projector.appointment(appointment)
                if self.projector.waiting_for_patient("appointments", appointment.appointment_id):
                    self.report.bump(self.report.skipped, "appointment_patient_without_phone_or_unknown")
            else:
                flag = flag_facts(resource, now, now)
                if flag.patient_id is None:
                    self.report.bump(self.report.skipped, "flag_subject_not_a_patient")
                ops = self.projector.flag(flag)
                if self.projector.waiting_for_patient("flags", flag.flag_id):
                    self.report.bump(self.report.skipped, "flag_patient_without_phone_or_unknown")
        except ResourceError as exc:
            await self._reject(rtype, "unmappable", str(exc), raw, source)
            return
        RESOURCES.labels(rtype, "mapped").inc()
        await self._queue(ops)

    async def delete(self, rtype: str, rid: str) -> None:
        self.report.bump(self.report.deleted, rtype)
        await self._queue(self.projector.deleted(rtype, rid))

    async def sweep(self, rtype: str, seen: set[str]) -> None:
        """After a complete full read of a type: what the state has and the server no longer does."""
        for rid in sorted(self.projector.ids(rtype) - seen):
            self.report.bump(self.report.swept, rtype)
            await self._queue(self.projector.deleted(rtype, rid))

    async def _reject(self, rtype: str, reason_code: str, reason: str, raw: bytes, source: str) -> None:
        REJECTED.labels(rtype, reason_code).inc()
        self.report.dead_letters += 1
        if len(self.report.rejections) < 100:
            self.report.rejections.append(reason)
        await self.publisher.dead_letter(f"{source}:{rtype}", reason, raw, self.clock.now_ms())

    async def _queue(self, ops: list[Op]) -> None:
        self._ops += ops
        self._pending += 1
        if self._pending >= BATCH:
            await self.flush()

    async def recover(self) -> None:
        """Tombstones of a batch the last run wrote ahead but may not have had acknowledged."""
        pending = self.projector.state.get("pending_tombstones") or []
        if pending:
            log.info("re-sending %d tombstones of the last run's unfinished batch", len(pending))
            await self.publisher.publish([op_from_json(o) for o in pending])
            self.projector.state["pending_tombstones"] = []
            self.store.save(self.projector.state)

    async def flush(self, cursor: dict[str, str] | None = None, final: bool = False) -> None:
        """Publish what is queued. The state is written *before* (write-ahead: it then knows
        every key about to be published, and keeps the keys being tombstoned as pending), so
        a crash can never leave a published key the state does not know; the cursor moves
        only after the acknowledgements."""
        if self._ops:
            self.projector.state["pending_tombstones"] = [op_to_json(o) for o in self._ops if o.value is None]
            self.store.save(self.projector.state)
            counts = await self.publisher.publish(self._ops)
            for k, n in counts.items():
                self.report.bump(self.report.published, k, n)
            self.projector.state["pending_tombstones"] = []
        self._ops, self._pending = [], 0
        if cursor:
            self.projector.state["cursor"].update(cursor)
        if cursor or final:
            self.store.save(self.projector.state)


# ---------------------------------------------------------------------------------- REST client
class FhirClient:
    """Paged reads of a FHIR R4 server (httpx)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        page_size: int = 100,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_pages: int = 100_000,
        auth: httpx.Auth | None = None,
    ) -> None:
        """`token`: a static bearer token; `auth`: one that changes (smart.SmartAuth)."""
        self.base_url = base_url.rstrip("/") + "/"
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.page_size = page_size
        self.max_pages = max_pages
        self._client = httpx.AsyncClient(
            headers=headers, timeout=timeout, transport=transport, follow_redirects=True, auth=auth
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str, params: dict | None = None) -> dict:
        for attempt in range(4):
            response = await self._client.get(url, params=params)
            if response.status_code in (429, 502, 503, 504) and attempt < 3:
                try:
                    wait = min(float(response.headers.get("Retry-After", "1")), 30.0)
                except ValueError:
                    wait = 1.0
                await asyncio.sleep(wait * (attempt + 1))
                continue
            break
        if response.status_code != 200:
            raise FhirError(f"GET {response.request.url.path}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise FhirError(f"GET {response.request.url.path}: not JSON") from None
        if body.get("resourceType") != "Bundle":
            raise FhirError(f"GET {response.request.url.path}: a {body.get('resourceType')}, not a Bundle")
        return body

    async def pages(self, path: str, params: dict) -> AsyncIterator[dict]:
        """Each Bundle of a search or history, following `link` relation `next`."""
        url: str | None = urljoin(self.base_url, path)
        seen: set[str] = set()
        first = True
        for _ in range(self.max_pages):
            if url is None:
                return
            bundle = await self._get(url, params if first else None)
            first = False
            yield bundle
            nxt = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
            if nxt:
                nxt = urljoin(self.base_url, nxt)
                if nxt in seen:
                    raise FhirError("the server's next link repeats: paging would never end")
                seen.add(nxt)
            url = nxt
        raise FhirError(f"more than {self.max_pages} pages")

    async def search(self, resource_type: str, since: str | None) -> AsyncIterator[dict]:
        params = {"_count": str(self.page_size)}
        if since:
            params["_lastUpdated"] = f"ge{since}"
        async for bundle in self.pages(resource_type, params):
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource")
                mode = (entry.get("search") or {}).get("mode", "match")
                if resource and resource.get("resourceType") == resource_type and mode == "match":
                    yield resource

    async def deletions(self, resource_type: str, since: str) -> AsyncIterator[tuple[str, str, str | None]]:
        """(type, id, when) of resources of this type deleted since `since` (type history)."""
        params = {"_since": since, "_count": str(self.page_size)}
        async for bundle in self.pages(f"{resource_type}/_history", params):
            for entry in bundle.get("entry") or []:
                for rtype, rid in deletions_in_bundle({"entry": [entry]}):
                    yield rtype, rid, (entry.get("response") or {}).get("lastModified")


def _cursor_minus(value: str, seconds: int) -> str:
    return (datetime.fromisoformat(value) - timedelta(seconds=seconds)).isoformat()


async def sync_rest(
    sync: EhrSync, client: FhirClient, since: str | None, full: bool, overlap_s: int = 300, deletions: bool = True
) -> SyncReport:
    """One pass over Patient, Appointment, Flag (in that order: appointments and flags key by
    their patient's phones). `since` None and not `full`: from the saved cursor."""
    report = sync.report
    await sync.recover()
    for rtype in RESOURCE_TYPES:
        cursor = sync.projector.state["cursor"].get(rtype)
        start = None if full else (since or (_cursor_minus(cursor, overlap_s) if cursor else None))
        newest = cursor
        seen: set[str] = set()
        async for resource in client.search(rtype, start):
            seen.add(resource.get("id", ""))
            updated = (resource.get("meta") or {}).get("lastUpdated")
            if updated and (newest is None or _later(updated, newest)):
                newest = updated
            await sync.apply(resource)
        if start is None:
            await sync.sweep(rtype, seen)  # a complete read: anything else was deleted
        elif deletions:
            try:
                async for dtype, rid, when in client.deletions(rtype, start):
                    if rid in seen:
                        continue  # deleted, then created again: what search returned is current
                    await sync.delete(dtype, rid)
                    if when and (newest is None or _later(when, newest)):
                        newest = when
            except FhirError as exc:
                log.warning(
                    "%s history not available (%s): deletions of %s are not seen until a full sync", rtype, exc, rtype
                )
                report.bump(report.skipped, f"history_unavailable:{rtype}")
        await sync.flush({rtype: newest} if newest else None, final=True)
        if newest:
            report.cursor[rtype] = newest
    return report


def _later(a: str, b: str) -> bool:
    try:
        return datetime.fromisoformat(a) > datetime.fromisoformat(b)
    except ValueError:
        return a > b


# ---------------------------------------------------------------------------------- NDJSON
_TYPE_ORDER = {"Patient": 0, "Appointment": 1, "Flag": 2}


def _first_type(path: Path) -> str:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line).get("resourceType", "")
                except (ValueError, AttributeError):
                    return ""
    return ""


async def import_ndjson(sync: EhrSync, paths: Iterable[Path]) -> SyncReport:
    """Bulk Data NDJSON files, Patient files first (appointments and flags key by patient phones)."""
    await sync.recover()
    ordered = sorted(paths, key=lambda p: (_TYPE_ORDER.get(_first_type(p), 3), str(p)))
    for path in ordered:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    resource = json.loads(line)
                    if not isinstance(resource, dict):
                        raise ValueError("not an object")
                except ValueError:
                    await sync._reject(
                        "ndjson",
                        "not_json",
                        f"{path.name} line {number}: not a JSON object",
                        line.rstrip(b"\n"),
                        "fhir-ndjson",
                    )
                    continue
                await sync.apply(resource, line.rstrip(b"\n"), source="fhir-ndjson")
        await sync.flush(final=True)
    return sync.report


# ---------------------------------------------------------------------------------- commands
def _practice_region(env: Settings, practice_id: str, region: str | None) -> str:
    practice = configured_practice(env, practice_id)
    return region or region_of(practice.phone_numbers[0])


def run_sync(
    env: Settings,
    base_url: str,
    practice_id: str,
    since: str | None = None,
    full: bool = False,
    region: str | None = None,
    token: str | None = None,
    page_size: int = 100,
    overlap_s: int = 300,
    deletions: bool = True,
    auth: httpx.Auth | None = None,
) -> SyncReport:
    admin.ensure_topics(env, topics.EHR)  # and its principal may read and write what it does
    region = _practice_region(env, practice_id, region)
    producer = AckedProducer(client_config(env), timeout_s=10)

    async def main() -> SyncReport:
        client = FhirClient(base_url, token=token, page_size=page_size, auth=auth)
        sync = None
        try:
            sync = EhrSync.open(env, producer, practice_id, region)
            return await sync_rest(sync, client, since, full, overlap_s, deletions)
        finally:
            await client.close()
            if sync is not None:
                sync.store.unlock()

    try:
        return asyncio.run(main())
    finally:
        producer.close()


def run_import(env: Settings, paths: list[Path], practice_id: str, region: str | None = None) -> SyncReport:
    admin.ensure_topics(env, topics.EHR)  # and its principal may read and write what it does
    region = _practice_region(env, practice_id, region)
    producer = AckedProducer(client_config(env), timeout_s=10)

    async def main() -> SyncReport:
        sync = EhrSync.open(env, producer, practice_id, region)
        try:
            return await import_ndjson(sync, paths)
        finally:
            sync.store.unlock()

    try:
        return asyncio.run(main())
    finally:
        producer.close()
