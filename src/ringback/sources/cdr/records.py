"""Asterisk / FreePBX `Master.csv` lines → canonical call events (pure: no file, no broker).

`cdr_csv` appends one line per call leg (no header; columns below). `parse_line` reads
one line into a `CdrRecord`; `map_line` decides what it is for a practice (`Context`):
an inbound call from a reachable number becomes a MISSED / VOICEMAIL / ANSWERED event,
an answered outbound call an ANSWERED OUTBOUND event, anything else is skipped with a
reason, and a line that cannot be read is dead-lettered. The mapping and what is
unverified: docs/sources-cdr-fhir.md.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ringback.domain.phones import PhoneRejected, normalize, region_of
from ringback.domain.practice import Practice
from ringback.kafka import topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sources.canonical import SHORT_ANSWER_S, call_event

# cdr_csv's column order (Asterisk `cdr_csv.c`); `uniqueid` and `userfield` are there when
# `loguniqueid` / `loguserfield` are on (the default), later Asterisks may append more.
COLUMNS = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
)
MIN_COLUMNS = 16
MAX_COLUMNS = 24
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# Dispositions Asterisk writes; CONGESTION only with `congestion=yes` in cdr.conf.
MISSED_DISPOSITIONS = {"NO ANSWER", "BUSY", "FAILED", "CONGESTION"}
KNOWN_DISPOSITIONS = MISSED_DISPOSITIONS | {"ANSWERED"}
# Destination contexts of calls placed by the practice (FreePBX names); such lines are not inbound.
DEFAULT_OUTBOUND_CONTEXTS = ("from-internal", "outrt", "outbound", "macro-dialout")


class MalformedLine(ValueError):
    """A CDR line that cannot be read (dead letter); the message never echoes numbers."""


# ---------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class CdrRecord:
    accountcode: str
    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime  # naive: the PBX's local time (or UTC with `usegmtime`)
    answer: datetime | None
    end: datetime | None
    duration: int
    billsec: int
    disposition: str
    amaflags: str
    uniqueid: str
    userfield: str


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # caller names from old PBXs; never fails


def _time(value: str, column: str) -> datetime | None:
    """A cdr_csv time (naive), or None when the column is empty."""
    if not value:
        return None
    if _TIME.fullmatch(value):  # fromisoformat is 20x faster than strptime, but lenient: check first
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise MalformedLine(f"{column} is not a '{TIME_FORMAT}' time")


def _int(value: str, column: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise MalformedLine(f"{column} is not an integer") from None
    if number < 0:
        raise MalformedLine(f"{column} is negative")
    return number


def parse_line(raw: bytes) -> CdrRecord:
    """One `Master.csv` line (without its newline) → CdrRecord, or MalformedLine."""
    text = _decode(raw).rstrip("\r")
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise MalformedLine(f"not CSV: {exc}") from None
    if len(rows) != 1:
        raise MalformedLine("not one CSV row")
    row = rows[0]
    if not MIN_COLUMNS <= len(row) <= MAX_COLUMNS:
        raise MalformedLine(f"{len(row)} columns, expected {MIN_COLUMNS} to {MAX_COLUMNS}")
    row = [c.strip() for c in row] + [""] * (len(COLUMNS) - len(row))
    f = dict(zip(COLUMNS, row, strict=False))  # columns later Asterisks append are left out
    disposition = f["disposition"].upper()
    if disposition not in KNOWN_DISPOSITIONS:
        raise MalformedLine("unknown disposition (expected ANSWERED, NO ANSWER, BUSY, FAILED or CONGESTION)")
    start = _time(f["start"], "start")
    if start is None:
        raise MalformedLine("start is empty")
    return CdrRecord(
        accountcode=f["accountcode"],
        src=f["src"],
        dst=f["dst"],
        dcontext=f["dcontext"],
        clid=f["clid"],
        channel=f["channel"],
        dstchannel=f["dstchannel"],
        lastapp=f["lastapp"],
        lastdata=f["lastdata"],
        start=start,
        answer=_time(f["answer"], "answer"),
        end=_time(f["end"], "end"),
        duration=_int(f["duration"], "duration"),
        billsec=_int(f["billsec"], "billsec"),
        disposition=disposition,
        amaflags=f["amaflags"],
        uniqueid=f["uniqueid"],
        userfield=f["userfield"],
    )


def classify(rec: CdrRecord) -> tuple[str, str] | None:
    """(outcome, event-id token) of a call leg, or None when the PBX itself answered
    (an IVR menu, an announcement) and nobody was reached: neither missed nor answered."""
    if rec.disposition in MISSED_DISPOSITIONS:
        return "MISSED", rec.disposition.replace(" ", "_")
    app = rec.lastapp.lower()
    if app == "voicemail":
        return "VOICEMAIL", "VOICEMAIL"
    if rec.dstchannel:  # bridged to a phone
        return ("MISSED" if rec.billsec < SHORT_ANSWER_S else "ANSWERED"), "ANSWERED"
    if app == "queue":  # the queue answered, no agent did: the caller gave up waiting
        return "MISSED", "ABANDONED"
    return None


# ---------------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class Context:
    """What a line is read against: the practice the PBX belongs to."""

    practice_id: str
    numbers: frozenset[str]
    main_number: str
    region: str
    tz: ZoneInfo
    owner_of: Callable[[str], str | None]  # E.164 → id of the practice owning that DID
    outbound_contexts: tuple[str, ...] = DEFAULT_OUTBOUND_CONTEXTS

    @classmethod
    def of(
        cls,
        practice: Practice,
        directory: PracticeDirectory | None = None,
        time_zone: str | None = None,
        outbound_contexts: tuple[str, ...] = DEFAULT_OUTBOUND_CONTEXTS,
    ) -> Context:
        def owner(e164: str) -> str | None:
            found = directory.by_number(e164) if directory is not None else None
            return found.id if found else None

        return cls(
            practice_id=practice.id,
            numbers=frozenset(practice.phone_numbers),
            main_number=practice.phone_numbers[0],
            region=region_of(practice.phone_numbers[0]),
            tz=ZoneInfo(time_zone or practice.time_zone),
            owner_of=owner,
            outbound_contexts=tuple(c.lower() for c in outbound_contexts),
        )


@dataclass(frozen=True)
class Mapped:
    """What a line is: an "event" (its record key and call event), or a reason to "skip" it
    or to send it to the "dead" letters."""

    kind: str  # "event" | "skip" | "dead"
    reason: str = ""
    key: bytes = b""
    record: dict = field(default_factory=dict)


def line_id(raw: bytes) -> str:
    """A stable id for a line without `uniqueid`: the same bytes give the same id."""
    return "h" + hashlib.sha256(raw.rstrip(b"\r")).hexdigest()[:24]


@functools.lru_cache(maxsize=8192)  # PBX numbers repeat (DIDs, regular callers); parsing is the cost
def _full_number(value: str, region: str) -> str | None:
    try:
        return normalize(value, region)
    except PhoneRejected:
        return None


def _caller(rec: CdrRecord, region: str) -> str | None:
    number = _full_number(rec.src, region) if rec.src else None
    if number is None and "<" in rec.clid and rec.clid.endswith(">"):
        number = _full_number(rec.clid.rsplit("<", 1)[1][:-1], region)
    return number


def _extension(value: str) -> bool:
    return value.isdigit() and len(value) <= 6


def map_line(raw: bytes, ctx: Context, received_ms: int) -> Mapped:
    """A line → a call event (with its key), a reason to skip it, or a reason to dead-letter it.

    Inbound calls from a reachable number become MISSED / VOICEMAIL / ANSWERED events;
    outbound calls that a patient answered become ANSWERED OUTBOUND events (the practice
    reached the patient: that closes a callback), as the webhook adapters do. `caller`
    is always the patient's side."""
    if not raw.strip():
        return Mapped("skip", "blank")
    try:
        rec = parse_line(raw)
    except MalformedLine as exc:
        return Mapped("dead", str(exc))
    caller = _caller(rec, ctx.region)
    dialled = _full_number(rec.dst, ctx.region) if rec.dst else None
    outbound = rec.dcontext.lower().startswith(ctx.outbound_contexts) or (
        caller is None and _extension(rec.src) and dialled is not None and dialled not in ctx.numbers
    )
    if outbound:
        return _outbound(rec, raw, ctx, received_ms, dialled)
    if caller is None:
        # An extension (internal call), "anonymous", or an empty caller id: nobody to call back.
        return Mapped("skip", "no_external_caller")
    if caller in ctx.numbers:
        return Mapped("skip", "caller_is_practice")
    if dialled is not None and dialled not in ctx.numbers:
        owner = ctx.owner_of(dialled)
        if owner is not None and owner != ctx.practice_id:
            return Mapped("dead", f"called number belongs to practice {owner!r}, not {ctx.practice_id!r}")
    called = dialled if dialled in ctx.numbers else ctx.main_number
    decided = classify(rec)
    if decided is None:
        return Mapped("skip", "answered_by_pbx")
    outcome, token = decided
    status = rec.disposition if token != "VOICEMAIL" else f"{rec.disposition}/VoiceMail"
    return _event(rec, raw, ctx, received_ms, outcome, token, status, caller, called, "INBOUND")


def _outbound(rec: CdrRecord, raw: bytes, ctx: Context, received_ms: int, dialled: str | None) -> Mapped:
    if dialled is None or dialled in ctx.numbers:
        return Mapped("skip", "outbound_not_to_an_outside_number")
    if rec.disposition != "ANSWERED" or not rec.dstchannel or rec.billsec < SHORT_ANSWER_S:
        return Mapped("skip", "outbound_not_answered")
    source = _full_number(rec.src, ctx.region) if rec.src else None
    called = source if source in ctx.numbers else ctx.main_number
    return _event(rec, raw, ctx, received_ms, "ANSWERED", "ANSWERED", rec.disposition, dialled, called, "OUTBOUND")


def _event(
    rec: CdrRecord,
    raw: bytes,
    ctx: Context,
    received_ms: int,
    outcome: str,
    token: str,
    status: str,
    caller: str,
    called: str,
    direction: str,
) -> Mapped:
    call_id = rec.uniqueid or line_id(raw)
    occurred = rec.start.replace(tzinfo=ctx.tz)
    record = call_event(
        event_id=f"cdr:{call_id}:{token}",
        provider="cdr",
        event_type="CALL",
        outcome=outcome,
        provider_status=status,
        practice_id=ctx.practice_id,
        caller=caller,
        called=called,
        direction=direction,
        provider_call_id=call_id,
        occurred_at=int(occurred.timestamp() * 1000),
        received_at=received_ms,
        duration_s=min(rec.duration, 2**31 - 1),
    )
    return Mapped("event", key=topics.join_key(ctx.practice_id, caller), record=record)
