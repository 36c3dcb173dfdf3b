"""The Admin console's Voice audit log, exported as CSV → call events (`ringback gvoice import`).

Google Workspace admins see Google Voice activity under Reporting → Audit and investigation →
Voice log events, and can export it (CSV). Its columns (Google's help, "Voice log events"):
Event, Event description, Date, Actor, Call source, Call destination, Duration, Cost, and a
few more; older exports label them Event name, Source, Destination, User. `map_row` reads one
row for a practice: an inbound missed call or voicemail becomes a MISSED / VOICEMAIL event, an
inbound call received (answered) an ANSWERED one, an answered call placed by the practice an
ANSWERED OUTBOUND one (the practice reached the patient); other events (texts: the log has no
text, so an event would look like an empty reply; numbers assigned, ...) are skipped with a
reason; a row that cannot be read is dead-lettered. Event ids are derived from the row's
event, time and numbers, so importing a file twice publishes events the worker has seen
(and drops). What is unverified: docs/providers/google-voice.md.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import re
from collections import Counter as Tally
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ringback.config.settings import Settings
from ringback.domain.phones import PhoneRejected, normalize, region_of
from ringback.domain.practice import Practice
from ringback.kafka import admin, topics
from ringback.kafka.connection import client_config
from ringback.kafka.practice_directory import configured_practice
from ringback.kafka.producer import AckedProducer
from ringback.observability.metrics import DEAD_LETTERS
from ringback.schemas import codec
from ringback.sources.canonical import SHORT_ANSWER_S, call_event
from ringback.sources.gvoice.notifications import PROVIDER

DEAD_LETTER_SOURCE = "gvoice-audit"

# Column → the header names it has had (lower case).
COLUMNS = {
    "event": ("event", "event name"),
    "date": ("date",),
    "source": ("call source", "source"),
    "destination": ("call destination", "destination"),
    "duration": ("duration",),
}
# Event names (lower case) → (direction, what happened). Unlisted events are skipped.
EVENTS = {
    "missed call": ("INBOUND", "MISSED"),
    "call missed": ("INBOUND", "MISSED"),
    "voicemail received": ("INBOUND", "VOICEMAIL"),
    "voicemail left": ("INBOUND", "VOICEMAIL"),
    "call received": ("INBOUND", "RECEIVED"),
    "call placed": ("OUTBOUND", "PLACED"),
}
_US_DATE = re.compile(r"^(?P<when>[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2}\s*[AP]M)(?:\s+\S+)?$")
_DURATION = re.compile(r"^(?:(?:(?P<h>\d+):)?(?P<m>\d{1,2}):)?(?P<s>\d{1,9})$")


class AuditFileError(ValueError):
    """The file is not a Voice audit-log export (a column is missing)."""


@dataclass(frozen=True)
class Practiced:
    """What rows are read against: the practice whose Google Voice numbers the log covers."""

    practice_id: str
    numbers: frozenset[str]
    main_number: str
    region: str
    tz: ZoneInfo

    @classmethod
    def of(cls, practice: Practice, time_zone: str | None = None) -> Practiced:
        return cls(
            practice.id,
            frozenset(practice.phone_numbers),
            practice.phone_numbers[0],
            region_of(practice.phone_numbers[0]),
            ZoneInfo(time_zone or practice.time_zone),
        )


@dataclass(frozen=True)
class Mapped:
    """A row: an "event" (key and record), a reason to "skip" it, or to "dead"-letter it."""

    kind: str
    reason: str = ""
    key: bytes = b""
    record: dict = field(default_factory=dict)


def header_map(header: list[str]) -> dict[str, int]:
    """Column → index in the export's header; AuditFileError naming what is missing."""
    names = [h.strip().lower() for h in header]
    found = {}
    for column, aliases in COLUMNS.items():
        index = next((names.index(a) for a in aliases if a in names), None)
        if index is None:
            raise AuditFileError(f"no {aliases[0]!r} column: not a Google Voice audit-log export")
        found[column] = index
    return found


def rows(text: str) -> tuple[dict[str, int], list[tuple[list[str], bytes]]]:
    """The header map and every data row with its raw bytes (for a dead letter)."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise AuditFileError("the file is empty") from None
    columns = header_map(header)
    out = []
    consumed = reader.line_num
    for row in reader:
        raw = "".join(lines[consumed : reader.line_num]).encode()  # the row as written (a quoted cell may span lines)
        consumed = reader.line_num
        if any(cell.strip() for cell in row):
            out.append((row, raw))
    return columns, out


def map_row(row: list[str], columns: dict[str, int], ctx: Practiced, received_ms: int) -> Mapped:
    def cell(name: str) -> str:
        i = columns[name]
        return row[i].strip() if i < len(row) else ""

    event = cell("event").lower()
    if event not in EVENTS:
        return Mapped("skip", "not_a_call" if "message" not in event else "text_without_body")
    direction, what = EVENTS[event]
    occurred = _time(cell("date"), ctx.tz)
    if occurred is None:
        return Mapped("dead", "Date is not a date")
    duration = _duration(cell("duration"))
    if duration is None:
        return Mapped("dead", "Duration is not H:MM:SS or seconds")
    source, destination = _number(cell("source"), ctx.region), _number(cell("destination"), ctx.region)
    patient, ours = (source, destination) if direction == "INBOUND" else (destination, source)
    if patient is None:
        return Mapped("skip", "no_external_number")  # a withheld number: nobody to call back
    if patient in ctx.numbers:
        return Mapped("skip", "number_is_practice")
    if what == "PLACED":
        if duration < SHORT_ANSWER_S:
            return Mapped("skip", "outbound_not_answered")
        outcome = "ANSWERED"
    elif what == "RECEIVED":
        outcome = "ANSWERED" if duration >= SHORT_ANSWER_S else "MISSED"
    else:
        outcome = what
    called = ours if ours in ctx.numbers else ctx.main_number
    token = hashlib.sha256(f"{event}|{cell('date')}|{source}|{destination}".encode()).hexdigest()[:24]
    call_id = f"gv-audit-{token}"
    record = call_event(
        event_id=f"{PROVIDER}:{call_id}:{outcome.lower()}",
        provider=PROVIDER,
        event_type="CALL",
        outcome=outcome,
        provider_status=cell("event")[:64],
        practice_id=ctx.practice_id,
        caller=patient,
        called=called,
        direction=direction,
        provider_call_id=call_id,
        occurred_at=occurred,
        received_at=received_ms,
        duration_s=duration,
    )
    return Mapped("event", key=topics.join_key(ctx.practice_id, patient), record=record)


def _time(value: str, tz: ZoneInfo) -> int | None:
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        m = _US_DATE.match(value)
        if m:  # "Mar 3, 2026, 2:02:11 PM PST": the zone name is ambiguous; the practice's zone is used
            try:
                parsed = datetime.strptime(m.group("when").replace("  ", " "), "%b %d, %Y, %I:%M:%S %p")
            except ValueError:
                parsed = None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    ms = parsed.timestamp() * 1000
    return int(ms) if 0 <= ms < 10_413_792_000_000 else None


def _duration(value: str) -> int | None:
    if not value:
        return 0
    m = _DURATION.match(value)
    if not m:
        return None
    return int(m.group("h") or 0) * 3600 + int(m.group("m") or 0) * 60 + int(m.group("s"))


def _number(value: str, region: str) -> str | None:
    if not value or len(value) > 40:
        return None
    try:
        return normalize(value, region)
    except PhoneRejected:
        return None


# ---------------------------------------------------------------------------- the import
async def publish(
    producer: AckedProducer, env: Settings, text: str, file_name: str, ctx: Practiced, received_ms: int
) -> dict:
    """Produce what every row becomes (events, dead letters); a report of what became of them."""
    columns, data = rows(text)
    call_topic = topics.topic_name(topics.CALL_EVENTS, env)
    dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)
    tally: Tally[str] = Tally()
    sends = []
    for number, (row, raw) in enumerate(data, start=2):
        mapped = map_row(row, columns, ctx, received_ms)
        if mapped.kind == "event":
            tally[f"event_{mapped.record['outcome'].lower()}"] += 1
            sends.append(producer.send(call_topic, mapped.key, codec.encode("call_event", mapped.record)))
        elif mapped.kind == "dead":
            tally["dead_letter"] += 1
            record = {
                "source": DEAD_LETTER_SOURCE,
                "reason": f"{file_name} line {number}: {mapped.reason}",
                "raw": raw,
                "content_type": "text/csv",
                "received_at": received_ms,
                "practice_id": ctx.practice_id,
            }
            sends.append(producer.send(dead_topic, DEAD_LETTER_SOURCE.encode(), codec.encode("dead_letter", record)))
        else:
            tally[f"skipped_{mapped.reason}"] += 1
    await asyncio.gather(*sends)  # raises BrokerUnavailable when one is not acknowledged: run again
    if tally["dead_letter"]:
        DEAD_LETTERS.labels(DEAD_LETTER_SOURCE).inc(tally["dead_letter"])
    return {"file": file_name, "rows": len(data), **dict(sorted(tally.items()))}


def run_import(env: Settings, path: Path, practice_id: str, time_zone: str | None = None) -> dict:
    """`ringback gvoice import FILE.csv --practice ID`."""
    from ringback.clock import Clock

    admin.ensure_topics(env, topics.GVOICE)  # and its principal may read and write what it does
    practice = configured_practice(env, practice_id)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")  # exports may start with a BOM
    producer = AckedProducer(client_config(env), timeout_s=10)
    try:
        return asyncio.run(publish(producer, env, text, path.name, Practiced.of(practice, time_zone), Clock().now_ms()))
    finally:
        producer.close()
