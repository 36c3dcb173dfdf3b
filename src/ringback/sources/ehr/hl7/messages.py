"""HL7 v2 SIU and ADT messages → the EHR facts the publisher keys and publishes (pure).

What is read from which segment and field, and why: docs/ehr-hl7.md. A message we cannot
use raises `Unmappable` with the acknowledgement code it deserves (AE: its content is
wrong; AR: a message type, trigger event or version we do not handle) and a reason that
never echoes PHI (field names, never values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7

from ringback.domain.phones import PhoneRejected, normalize
from ringback.domain.templates import primary_tag
from ringback.sources.ehr.publisher import AppointmentFacts, PatientFacts

# The fields read here have the same place and meaning from v2.3 to v2.8.
SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"})
# SIU trigger → the appointment status it means when SCH-25 (filler status) does not say.
SIU_EVENTS = {
    "S12": "booked",  # new appointment booked
    "S13": "booked",  # rescheduled: a new start
    "S14": "booked",  # modified
    "S15": "cancelled",
    "S16": "cancelled",  # discontinued
    "S17": "deleted",
    "S18": "booked",  # S18-S22: a service or resource of the appointment added/changed/removed;
    "S19": "booked",  # the appointment itself stays as SCH-25 says
    "S20": "booked",
    "S21": "booked",
    "S22": "booked",
    "S26": "noshow",
}
SIU_SLOT_EVENTS = frozenset({"S23", "S24"})  # a blocked / opened time slot: no patient, nothing to publish
SIU_FINAL = frozenset({"S15", "S16", "S17", "S26"})  # the trigger decides, whatever SCH-25 says
ADT_EVENTS = frozenset({"A04", "A08", "A28", "A31"})  # registered, updated, person added, person updated
# HL7 table 0278 (filler status codes) → FHIR Appointment.status, as the FHIR sync publishes them.
FILLER_STATUS = {
    "booked": "booked",
    "overbook": "booked",
    "pending": "pending",
    "waitlist": "waitlist",
    "started": "arrived",
    "complete": "fulfilled",
    "cancelled": "cancelled",
    "dc": "cancelled",
    "deleted": "deleted",
    "noshow": "noshow",
}
LIVE_STATUSES = frozenset({"booked", "pending", "waitlist", "arrived", "fulfilled"})
# XTN equipment types (table 0202) and use codes (table 0201) that are not the patient's phone.
NOT_A_PHONE_EQUIPMENT = frozenset({"FX", "BP", "INTERNET", "X.400"})
NOT_A_PHONE_USE = frozenset({"NET", "BPN", "EMR"})


class Unmappable(ValueError):
    """A message we answer AE (`code`) or AR, with a reason free of PHI."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Header:
    sending_application: str
    sending_facility: str
    control_id: str
    message_code: str  # MSH-9.1: SIU, ADT
    trigger: str  # MSH-9.2: S12, A08
    version: str  # MSH-12.1
    sent_at: str  # MSH-7 as sent

    @property
    def kind(self) -> str:
        return f"{self.message_code}^{self.trigger}"


@dataclass
class Mapped:
    """What a message becomes: the patient (ADT: authoritative; SIU: only to key the
    appointment when the patient is not known yet), an appointment or its deletion."""

    header: Header
    patient: PatientFacts | None = None
    patient_authoritative: bool = False
    appointment: AppointmentFacts | None = None
    deleted_appointment: str | None = None
    ignored: str | None = None  # why nothing is published (an accepted message all the same)


# ---------------------------------------------------------------------------------- parsing
def decode(raw: bytes) -> str:
    """The message text: UTF-8, else Latin-1 (MSH-18 is often absent or wrong; either way
    every byte is kept in the dead letter)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse(raw: bytes) -> hl7.Message:
    text = decode(raw).replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH"):
        raise Unmappable("AE", "not an HL7 v2 message: no MSH segment first")
    try:
        return hl7.parse(text)
    except Exception as exc:  # noqa: BLE001 - the parser raises several types on malformed input
        raise Unmappable("AE", f"HL7 parse error ({type(exc).__name__})") from None


def value(msg: hl7.Message | hl7.Segment, *path: int | str) -> str:
    """A field's (repetition's, component's) text, unescaped; "" when absent.
    `value(msg, "PID", 13, 2, 7)`: PID-13, second repetition, seventh component."""
    segment: hl7.Segment | None
    if isinstance(path[0], str):
        segment = first(msg, path[0])
        path = path[1:]
    else:
        segment = msg  # a segment was passed
    if segment is None:
        return ""
    field, rep, comp, sub = (*[int(p) for p in path], 1, 1, 1)[:4]
    try:
        return str(segment.extract_field(1, field, rep, comp, sub)).strip()
    except (IndexError, KeyError, TypeError):
        return ""


def repetitions(segment: hl7.Segment | None, field: int, msg: hl7.Message) -> int:
    if segment is None or field >= len(segment):
        return 0
    text = str(segment(field))
    return text.count(msg.separators[2]) + 1 if text else 0


def first(msg: hl7.Message, segment_id: str) -> hl7.Segment | None:
    try:
        return msg.segment(segment_id)
    except KeyError:
        return None


def header(msg: hl7.Message) -> Header:
    head = Header(
        sending_application=value(msg, "MSH", 3),
        sending_facility=value(msg, "MSH", 4),
        control_id=value(msg, "MSH", 10),
        message_code=value(msg, "MSH", 9, 1, 1).upper(),
        trigger=value(msg, "MSH", 9, 1, 2).upper(),
        version=value(msg, "MSH", 12),
        sent_at=value(msg, "MSH", 7),
    )
    if not head.control_id:
        raise Unmappable("AE", "MSH-10 (message control id) is empty")
    return head


# ---------------------------------------------------------------------------------- values
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$")


def dtm_ms(text: str, zone: str) -> int | None:
    """HL7 DTM/TS (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) → UTC epoch ms; without an offset,
    in the practice's time zone (senders mostly send local time). None when empty."""
    if not text:
        return None
    match = _DTM.match(text)
    if not match:
        raise ValueError("not an HL7 date/time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tz: timezone | ZoneInfo
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    else:
        tz = ZoneInfo(zone)
    moment = datetime(
        int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz
    )
    return int(moment.timestamp()) * 1000 + int((fraction or "0").ljust(4, "0")) // 10


def _phone_text(msg: hl7.Message, segment: hl7.Segment, field: int, rep: int) -> str:
    """One XTN: XTN-12 (unformatted), else +XTN-5 XTN-6 XTN-7 (country, area, local), else XTN-1."""
    unformatted = value(segment, field, rep, 12)
    if unformatted:
        return unformatted
    country, area, local = (value(segment, field, rep, c) for c in (5, 6, 7))
    if local:
        return f"+{country} {area} {local}" if country else f"{area} {local}".strip()
    return value(segment, field, rep, 1)


def patient_facts(msg: hl7.Message, region: str, zone: str, updated_at: int) -> PatientFacts:
    pid = first(msg, "PID")
    if pid is None:
        raise Unmappable("AE", "no PID segment")
    patient_id = ""
    for rep in range(1, repetitions(pid, 3, msg) + 1):  # PID-3: the medical record number (CX-5 MR) first
        if value(pid, 3, rep, 5).upper() == "MR" and value(pid, 3, rep, 1):
            patient_id = value(pid, 3, rep, 1)
            break
    patient_id = patient_id or value(pid, 3, 1, 1) or value(pid, 2, 1, 1)
    if not patient_id:
        raise Unmappable("AE", "PID-3 (patient identifier) is empty")
    phones: list[str] = []
    rejected: list[str] = []
    for field in (13, 14):  # home, then business
        for rep in range(1, repetitions(pid, field, msg) + 1):
            use, equipment = value(pid, field, rep, 2).upper(), value(pid, field, rep, 3).upper()
            if use in NOT_A_PHONE_USE or equipment in NOT_A_PHONE_EQUIPMENT:
                continue
            text = _phone_text(msg, pid, field, rep)
            if not text:
                continue
            try:
                e164 = normalize(text, region)
            except PhoneRejected as exc:
                rejected.append(f"PID-{field}[{rep}]: {exc}")
                continue
            if e164 not in phones:
                phones.append(e164)
    name = None
    for rep in range(1, repetitions(pid, 5, msg) + 1):  # PID-5: the legal name (XPN-7 L) first
        if rep == 1 or value(pid, 5, rep, 7).upper() == "L":
            given = " ".join(filter(None, (value(pid, 5, rep, 2), value(pid, 5, rep, 3))))
            name = " ".join(filter(None, (given, value(pid, 5, rep, 1)))) or name
            if value(pid, 5, rep, 7).upper() == "L":
                break
    deceased = value(pid, 30).upper() == "Y" or bool(value(pid, 29))
    provider = value(msg, "PD1", 4, 1, 1) or None
    return PatientFacts(
        patient_id=patient_id,
        active=True,
        phones=phones,
        display_name=name,
        deceased=deceased,
        assigned_provider=provider,
        updated_at=updated_at,
        rejected=rejected,
        language=primary_tag(value(pid, 15, 1, 1)),  # ISO 639-1/-2 or BCP 47: `spa` → es
    )


def appointment_start(msg: hl7.Message, zone: str) -> int | None:
    """TQ1-7 (v2.5+), else SCH-11.4 (the TQ of v2.3-2.4), else the first AIS-4 / AIG-8 / AIL-6 / AIP-6."""
    for segment_id, path in (
        ("TQ1", (7,)),
        ("SCH", (11, 1, 4)),
        ("AIS", (4,)),
        ("AIG", (8,)),
        ("AIL", (6,)),
        ("AIP", (6,)),
    ):
        text = value(msg, segment_id, *path)
        if text:
            try:
                return dtm_ms(text, zone)
            except ValueError:
                raise Unmappable("AE", f"{segment_id}-{path[0]} (appointment start) is not an HL7 date/time") from None
    return None


# ---------------------------------------------------------------------------------- messages
def map_message(msg: hl7.Message, region: str, zone: str, received_at: int) -> Mapped:
    """The facts of one message. `region`: the country of numbers without +CC; `zone`: the
    practice's time zone, for date/times without an offset; `received_at`: when MSH-7 is absent."""
    head = header(msg)
    if head.version not in SUPPORTED_VERSIONS:
        raise Unmappable("AR", f"HL7 version {head.version[:16] or '(empty)'} not supported (2.3 to 2.8)")
    try:
        updated_at = dtm_ms(head.sent_at, zone) or received_at
    except ValueError:
        raise Unmappable("AE", "MSH-7 (date/time of message) is not an HL7 date/time") from None
    if head.message_code == "ADT" and head.trigger in ADT_EVENTS:
        return Mapped(head, patient_facts(msg, region, zone, updated_at), patient_authoritative=True)
    if head.message_code == "SIU" and head.trigger in SIU_SLOT_EVENTS:
        return Mapped(head, ignored=f"SIU^{head.trigger}: a schedule slot, no patient")
    if head.message_code != "SIU" or head.trigger not in SIU_EVENTS:
        raise Unmappable("AR", f"message type {head.kind[:16]} not supported (SIU^S12-S26, ADT^A04/A08/A28/A31)")
    sch = first(msg, "SCH")
    if sch is None:
        raise Unmappable("AE", "no SCH segment")
    appointment_id = value(sch, 2, 1, 1) or value(sch, 1, 1, 1)
    if not appointment_id:
        raise Unmappable("AE", "SCH-2 / SCH-1 (appointment id) is empty")
    patient = patient_facts(msg, region, zone, updated_at)
    status = SIU_EVENTS[head.trigger]
    filler = FILLER_STATUS.get(value(sch, 25, 1, 1).lower())
    if head.trigger not in SIU_FINAL and filler:
        status = filler
    if status == "deleted":
        return Mapped(head, patient, deleted_appointment=appointment_id)
    start = appointment_start(msg, zone)
    if status in LIVE_STATUSES and start is None:
        raise Unmappable("AE", "no appointment start (TQ1-7, SCH-11.4, AIS-4, AIG-8, AIL-6 or AIP-6)")
    appointment = AppointmentFacts(
        appointment_id=appointment_id,
        patient_id=patient.patient_id,
        status=status,
        start=start,
        updated_at=updated_at,
        live=status in LIVE_STATUSES,
    )
    return Mapped(head, patient, appointment=appointment)
