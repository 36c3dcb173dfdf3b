"""Plays a plan against running services, at the plan's wall times.

* webhooks are posted to the gateway (`Targets.gateway_url`), signed when played;
* CDR lines are appended to the `Master.csv` a `ringback cdr poll` process follows
  (`Targets.cdr_dirs`, one folder per CDR practice);
* FHIR resources go through the EHR connector's own code (`EhrFeed`: the FHIR
  mapping of `ringback/sources/ehr/fhir.py` and the keyed, co-partitioned records of
  `ringback/sources/ehr/publisher.py`), or patients and appointments as HL7 v2 over
  MLLP to `ringback ehr hl7` and only the flags that way (`hl7_feed.Hl7EhrFeed`);
* staff complete tasks through the staff console's JSON API (`Targets.console_url`),
  once the task is there;
* a Google Voice practice's notification e-mails go into its mailbox (`Targets.gvoice_mail`);
  or its audit-log rows are collected and each planned export (`IMPORT`) hands the rows
  since the last one, as a CSV, to `Targets.gvoice_import`.

A forwarded Twilio call's callbacks are posted at their own times (`render.timeline`).
Events of one caller are played in plan order, one after the other; different callers
go side by side, so a slow request never delays the rest of the day. A reaction to an
SMS (`SimEvent.after_sms`) waits until the SMS reached the patient
(`Targets.sms_received`), as a person answers a text only after receiving it.
Whatever is not configured (no console, no CDR folder) is skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from ringback.config.settings import Settings
from ringback.dev.simulator import render
from ringback.dev.simulator.plan import (
    CALL,
    EHR,
    GVOICE,
    IMPORT,
    JUNK,
    SMS,
    STAFF,
    TRANSCRIPT,
    CaseSpec,
    Plan,
    SimEvent,
)
from ringback.domain.practice import Practice

if TYPE_CHECKING:
    from ringback.kafka.producer import AckedProducer
    from ringback.sources.ehr.fhir import EhrSync

log = logging.getLogger(__name__)

CONSOLE_OUTCOME = "reached_patient"


class EhrFeed:
    """FHIR resources → the patient / appointment / flag topics, through the EHR connector's
    mapping and publisher (`EhrSync`), with one state file per practice as `ringback ehr` keeps."""

    def __init__(self, env: Settings, practices: dict[str, Practice], timeout_s: float = 10.0) -> None:
        from ringback.kafka.connection import client_config
        from ringback.kafka.producer import AckedProducer

        self.env = env
        self.practices = practices
        self.producer: AckedProducer | None = AckedProducer(client_config(env), timeout_s=timeout_s)
        self._syncs: dict[str, EhrSync] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _sync(self, practice_id: str) -> EhrSync:
        from ringback.domain.phones import region_of
        from ringback.sources.ehr.fhir import EhrSync
        from ringback.sources.ehr.publisher import StateStore

        if self.producer is None:
            raise RuntimeError("the EHR feed is closed")
        if practice_id not in self._syncs:
            store = StateStore(self.env, practice_id)
            store.lock()
            practice = self.practices[practice_id]
            self._syncs[practice_id] = EhrSync(
                self.env, self.producer, practice_id, region_of(practice.phone_numbers[0]), store=store, state=None
            )
        return self._syncs[practice_id]

    async def publish(self, practice_id: str, resources: list[dict], known_patients: Iterable[dict] = ()) -> dict:
        """Map and publish; returns the connector's report (counts, rejections). `known_patients`:
        Patients another path publishes (the HL7 feed, `hl7_feed.py`): only their phones are
        learnt, to key their flags; none of their patient records is published from here."""
        from ringback.kafka import topics
        from ringback.sources.ehr.fhir import patient_facts

        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a lock belongs to one event loop
            self._loop, self._locks = loop, {}
        lock = self._locks.setdefault(practice_id, asyncio.Lock())
        async with lock:
            sync = self._sync(practice_id)
            now = sync.clock.now_ms()
            # A phone that changed re-keys the patient's flags: those records are ours to publish.
            rekeyed = [
                op
                for patient in known_patients
                for op in sync.projector.patient(patient_facts(patient, sync.region, now))
                if op.spec is topics.FLAGS
            ]
            if rekeyed:
                sync.store.save(sync.projector.state)  # write-ahead, as EhrSync.flush
                await sync.publisher.publish(rekeyed)
            for resource in resources:
                await sync.apply(resource)
            await sync.flush(final=True)
            return sync.report.as_dict()

    def close(self) -> None:
        for sync in self._syncs.values():
            sync.store.unlock()
        self._syncs.clear()
        if self.producer is not None:
            self.producer.close()
            self.producer = None  # the last reference: librdkafka shuts down now, not at exit


class EhrTarget(Protocol):
    """Where the plan's FHIR resources go: `EhrFeed` (the FHIR connector), or `hl7_feed.Hl7EhrFeed`
    (patients and appointments as HL7 v2 over MLLP, flags through the FHIR connector)."""

    async def publish(self, practice_id: str, resources: list[dict]) -> dict: ...


@dataclass
class Targets:
    """Where the player sends things; anything None is skipped."""

    gateway_url: str | None = None
    cdr_dirs: dict[str, Path] = field(default_factory=dict)  # practice id → folder of its Master.csv
    ehr: EhrTarget | None = None
    console_url: str | None = None
    console_login: tuple[str, str] | None = None  # (username, password), the same at every practice
    sms_received: Callable[[str, str], bool] | None = None  # (practice id, phone) → an SMS reached it
    cdr_file: str = "Master.csv"
    gvoice_mail: Callable[[str, bytes], Awaitable[None]] | None = None  # (practice id, e-mail) → its mailbox
    gvoice_import: Callable[[str, str], Awaitable[None]] | None = None  # (practice id, audit-log CSV) → imported


@dataclass
class PlayResult:
    played: Counter = field(default_factory=Counter)  # kind → events played
    statuses: Counter = field(default_factory=Counter)  # "kind status" → requests
    skipped: Counter = field(default_factory=Counter)  # why → events
    unexpected: list[str] = field(default_factory=list)  # event, what came back (no numbers)
    late: int = 0  # reactions sent although the SMS they answer had not arrived in time
    late_events: list[str] = field(default_factory=list)
    staff_done: int = 0
    max_lag_s: float = 0.0  # how far behind its wall time an event started, at worst

    def as_dict(self) -> dict:
        return {
            "played": dict(sorted(self.played.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "unexpected": self.unexpected[:20],
            "late_reactions": self.late,
            "late_events": self.late_events[:20],
            "staff_tasks_completed": self.staff_done,
            "max_lag_s": round(self.max_lag_s, 3),
        }


class Player:
    """`await Player(plan, practices, secrets, targets).play()` plays the day from now.

    `on_event(event, result)` is called after each event (result: "ok", "skipped", or
    what went wrong), for a progress display."""

    def __init__(
        self,
        plan: Plan,
        practices: dict[str, Practice],
        secrets: render.Secrets,
        targets: Targets,
        *,
        on_event: Callable[[SimEvent, str], None] | None = None,
        sms_wait_s: float = 20.0,
        task_wait_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.plan = plan
        self.practices = practices
        self.secrets = secrets
        self.targets = targets
        self.on_event = on_event
        self.sms_wait_s = sms_wait_s
        self.task_wait_s = task_wait_s
        self.clock = clock
        self.sleep = sleep
        self.result = PlayResult()
        self.cases: dict[str, CaseSpec] = {c.case: c for c in plan.cases}
        self._http: httpx.AsyncClient | None = None  # while the day plays
        self._console: dict[str, tuple[httpx.AsyncClient, str]] = {}
        self._console_lock = asyncio.Lock()  # made again by each play(): a lock serves one event loop
        self._audit_rows: dict[str, list[tuple[str, ...]]] = {}  # practice → rows not exported yet

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("requests go out only while the day plays")
        return self._http

    # ------------------------------------------------------------ entry points
    async def preload(self) -> dict:
        """Publish the morning's EHR (patients, flags, appointments) of every practice."""
        counts: Counter = Counter()
        if self.targets.ehr is None:
            self.result.skipped["ehr_not_configured"] += len(self.plan.preload)
            return {}
        ehr = self.targets.ehr
        # One event per practice: the practices side by side (each HL7 message waits for its ACK).
        reports = await asyncio.gather(
            *(ehr.publish(event.practice_id, render.fhir_resources(event, self.clock())) for event in self.plan.preload)
        )
        for report in reports:
            for k, v in report.get("published", {}).items():
                counts[k] += v
        return dict(counts)

    async def play(self, start: float | None = None) -> PlayResult:
        """Play every event at `start + event.at` (wall clock; default: now)."""
        start = self.clock() if start is None else start
        self._console_lock = asyncio.Lock()
        chains: dict[tuple, asyncio.Task] = {}
        async with httpx.AsyncClient(timeout=15.0, limits=httpx.Limits(max_connections=32)) as http:
            self._http = http
            try:
                for event in self.plan.events:
                    delay = start + event.at - self.clock()
                    if delay > 0:
                        await self.sleep(delay)
                    self.result.max_lag_s = max(self.result.max_lag_s, self.clock() - (start + event.at))
                    # One caller's events in order; a practice's audit-log imports one after the other.
                    key = (event.practice_id, event.caller or (IMPORT if event.kind == IMPORT else f"#{event.seq}"))
                    previous = chains.get(key)
                    chains[key] = asyncio.create_task(self._after(previous, event))
                    for done in [k for k, t in chains.items() if t.done()]:
                        chains.pop(done).result()  # surfaces a bug in the player itself
                await asyncio.gather(*chains.values())
                for practice_id in list(self._audit_rows):  # rows that waited past the last planned export
                    await self._import_audit(practice_id)
            finally:
                for task in chains.values():
                    task.cancel()
                for client, _ in self._console.values():
                    await client.aclose()
                self._http = None
        return self.result

    # ------------------------------------------------------------ one event
    async def _after(self, previous: asyncio.Task | None, event: SimEvent) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        try:
            outcome = await self._play(event)
        except Exception as exc:  # noqa: BLE001 - one failed input must not stop the day; it is reported
            outcome = f"error: {type(exc).__name__}"
            self.result.unexpected.append(
                f"{event.kind} {event.note or event.junk or ''} at {event.at:.1f}s: {type(exc).__name__}"
            )
        self.result.played[event.kind] += 1
        if self.on_event is not None:
            self.on_event(event, outcome)

    async def _play(self, event: SimEvent) -> str:
        if event.after_sms:
            await self._wait_for_sms(event)
        if event.kind in (CALL, JUNK) and event.provider == "cdr":
            return self._append_cdr(event)
        if event.provider == GVOICE:
            return await self._gvoice(event)
        if event.kind in (CALL, TRANSCRIPT, SMS, JUNK):
            return await self._post(event)
        if event.kind == EHR:
            if self.targets.ehr is None:
                self.result.skipped["ehr_not_configured"] += 1
                return "skipped"
            await self.targets.ehr.publish(event.practice_id, render.fhir_resources(event, self.clock()))
            return "ok"
        if event.kind == STAFF:
            return await self._complete_task(event)
        raise ValueError(f"unknown event kind {event.kind!r}")

    async def _wait_for_sms(self, event: SimEvent) -> None:
        seen, caller = self.targets.sms_received, event.caller
        if seen is None or caller is None:
            return
        deadline = self.clock() + self.sms_wait_s
        while not seen(event.practice_id, caller):
            if self.clock() > deadline:
                self.result.late += 1
                self.result.late_events.append(f"{event.kind} of {event.case} at {event.at:.1f}s")
                return
            await asyncio.sleep(0.05)

    async def _post(self, event: SimEvent) -> str:
        if not self.targets.gateway_url:
            self.result.skipped["no_gateway"] += 1
            return "skipped"
        base = self.targets.gateway_url.rstrip("/")
        began = self.clock()
        outcome = "ok"
        for offset, hook in render.timeline(event, base, self.secrets, began, self.plan.day.speed):
            delay = began + offset - self.clock()
            if delay > 0:  # a forwarded call's later callbacks (the caller's next event waits for them)
                await self.sleep(delay)
            response = await self.http.post(base + hook.path, content=hook.body, headers=hook.headers)
            self.result.statuses[f"{event.kind} {response.status_code}"] += 1
            expected = event.expect_status
            good = response.status_code == expected if expected else 200 <= response.status_code < 300
            if not good:
                outcome = f"HTTP {response.status_code}"
                self.result.unexpected.append(
                    f"{event.kind} {event.junk or event.note} ({event.provider}) at {event.at:.1f}s: HTTP "
                    f"{response.status_code}, expected {expected or '2xx'}: {response.text[:120]}"
                )
        return outcome

    async def _gvoice(self, event: SimEvent) -> str:
        """A Google Voice practice's event: its e-mail into the mailbox, its audit-log row kept
        for the next export, or the export itself."""
        if event.kind == IMPORT:
            return await self._import_audit(event.practice_id)
        if event.row:
            self._audit_rows.setdefault(event.practice_id, []).append(event.row)
            self.result.statuses[f"{event.kind} audit-row"] += 1
            return "ok"
        raw = render.gvoice_email(event, self.practices[event.practice_id], self.clock())
        if raw is None:  # an answered call: Google Voice e-mails nothing
            self.result.statuses[f"{event.kind} no-notification"] += 1
            return "ok"
        if self.targets.gvoice_mail is None:
            self.result.skipped["no_mailbox"] += 1
            return "skipped"
        await self.targets.gvoice_mail(event.practice_id, raw)
        self.result.statuses[f"{event.kind} e-mail"] += 1
        return "ok"

    async def _import_audit(self, practice_id: str) -> str:
        rows = self._audit_rows.pop(practice_id, [])
        if not rows:
            return "ok"
        if self.targets.gvoice_import is None:
            self.result.skipped["no_audit_import"] += 1
            return "skipped"
        await self.targets.gvoice_import(practice_id, render.gvoice_audit_csv(rows))
        self.result.statuses["import audit-log"] += 1
        return "ok"

    def _append_cdr(self, event: SimEvent) -> str:
        folder = self.targets.cdr_dirs.get(event.practice_id)
        if folder is None:
            self.result.skipped["no_cdr_folder"] += 1
            return "skipped"
        line = render.cdr_line(event, self.practices[event.practice_id], self.clock())
        with open(Path(folder) / self.targets.cdr_file, "ab") as fh:
            fh.write(line)
        self.result.statuses[f"{event.kind} cdr-line"] += 1
        return "ok"

    # ------------------------------------------------------------ the staff console
    async def _console_session(
        self, practice_id: str, console_url: str, login: tuple[str, str]
    ) -> tuple[httpx.AsyncClient, str] | None:
        async with self._console_lock:
            if practice_id in self._console:
                return self._console[practice_id]
            client = httpx.AsyncClient(base_url=console_url, timeout=15.0)
            username, password = login
            response = await client.post(
                "/api/login", json={"practice_id": practice_id, "username": username, "password": password}
            )
            if response.status_code != 200:
                await client.aclose()
                self.result.unexpected.append(f"console login at {practice_id}: HTTP {response.status_code}")
                return None
            self._console[practice_id] = (client, response.json()["csrf_token"])
            return self._console[practice_id]

    async def _complete_task(self, event: SimEvent) -> str:
        console_url, login = self.targets.console_url, self.targets.console_login
        if not console_url or not login:
            self.result.skipped["no_console"] += 1
            return "skipped"
        if event.case is None or event.step is None:
            raise ValueError(f"staff event #{event.seq} names no case or step")
        session = await self._console_session(event.practice_id, console_url, login)
        if session is None:
            return "console login failed"
        client, csrf = session
        task_id = self.cases[event.case].task_id(event.step)
        deadline = self.clock() + self.task_wait_s
        while True:  # the task appears once the workflow emitted it and the sinks created it
            response = await client.get(f"/api/tasks/{task_id}")
            if response.status_code == 200:
                break
            if self.clock() > deadline:
                self.result.unexpected.append(
                    f"staff: task {event.step} of {event.case} never appeared (HTTP {response.status_code})"
                )
                return "task missing"
            await asyncio.sleep(0.1)
        response = await client.post(
            f"/api/tasks/{task_id}/complete", json={"outcome": CONSOLE_OUTCOME}, headers={"X-CSRF-Token": csrf}
        )
        self.result.statuses[f"staff {response.status_code}"] += 1
        if response.status_code == 200:
            self.result.staff_done += 1
            return "ok"
        if response.status_code == 409:  # already completed (a redelivery, a colleague)
            return "ok"
        self.result.unexpected.append(
            f"staff: completing {event.step} of {event.case}: HTTP {response.status_code} {response.text[:120]}"
        )
        return f"HTTP {response.status_code}"
