"""The demo's EHR behind an interface engine: the plan's patients and appointments go as
HL7 v2 messages over MLLP to `ringback ehr hl7` (one listener per practice), the flags
through the FHIR connector (docs/demo.md, docs/ehr-hl7.md).

HL7 v2 has no equivalent of the FHIR Flag (no ADT or SIU field says "callback
requested"), so the urgent patients' Flags keep the FHIR path (`EhrFeed`). The two paths
write disjoint topics: the HL7 listener the patients and appointments, the FHIR path the
flags only (it learns the flagged patients' phones, to key their flags, and publishes no
patient record). Each keeps its own projector state (`<practice>.hl7.json`,
`<practice>.json`), so neither can tombstone a key the other published.

The messages (v2.5.1, the fields docs/ehr-hl7.md reads): a Patient becomes ADT^A28 (person
added; A31, person updated, when it was sent before), an Appointment SIU^S12 (booked; S13,
rescheduled, when its id was booked before) carrying its patient's PID. MSH-7 is the
resource's `meta.lastUpdated`, so the records carry the times the FHIR path would give them
(a booking converts a case only when it is later than the missed call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import hl7
import langcodes
from hl7.mllp import open_hl7_connection

from ringback.domain.phones import normalize, region_of
from ringback.domain.practice import Practice

if TYPE_CHECKING:
    from ringback.dev.simulator.player import EhrFeed

log = logging.getLogger(__name__)

SENDING_APPLICATION = "DEMOEHR"
RECEIVING_APPLICATION = "RINGBACK"
VERSION = "2.5.1"
TO_HL7 = frozenset({"Patient", "Appointment"})  # the rest (Flag) keeps the FHIR path
SCH_STATUS = {"booked": "Booked"}  # HL7 table 0278; the plan books, it never cancels
GENDER = {"female": "F", "male": "M", "other": "O"}


class Hl7NotAccepted(RuntimeError):
    """The listener answered AE/AR, or gave no answer for longer than the sender resends."""


@dataclass(frozen=True)
class Outgoing:
    kind: str  # ADT^A28, SIU^S12, ...
    control_id: str  # MSH-10
    text: str  # segments joined by CR, as on the wire


def hl7_time(ms: int) -> str:
    """Epoch ms → HL7 DTM in UTC with milliseconds (YYYYMMDDHHMMSS.SSS+0000)."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{moment:%Y%m%d%H%M%S}.{ms % 1000:03d}+0000"


def _ms(instant: str) -> int:
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters (`|^~\\&`) in a value."""
    for char, seq in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, seq)
    return text


def _segment(name: str, fields: dict[int, str]) -> str:
    """`name|f1|f2|...` with the given fields (1-based), the others empty."""
    present = [i for i, value in fields.items() if value]
    values = [""] * max(present, default=0)
    for index in present:
        values[index - 1] = fields[index]
    return "|".join([name, *values])


def _components(parts: dict[int, str]) -> str:
    values = [""] * max(parts)
    for index, value in parts.items():
        values[index - 1] = value
    return "^".join(values)


def _xtn(e164: str) -> str:
    """A mobile phone (use PRN, equipment CP): North American numbers as XTN-5/6/7 (country,
    area, local), others as XTN-12 (unformatted)."""
    if e164.startswith("+1") and len(e164) == 12:
        return _components({2: "PRN", 3: "CP", 5: "1", 6: e164[2:5], 7: e164[5:]})
    return _components({2: "PRN", 3: "CP", 12: e164})


def _language(patient: dict) -> str:
    """PID-15 from the preferred `communication`: ISO 639-2 code^display^ISO6392 (`spa^Spanish^ISO6392`)."""
    from ringback.sources.ehr.fhir import preferred_language

    tag = preferred_language(patient)
    if tag is None:
        return ""
    entries = patient.get("communication") or []
    chosen = next((c for c in entries if c.get("preferred") is True), entries[0] if entries else {})
    display = next((c.get("display") for c in chosen.get("language", {}).get("coding", []) if c.get("display")), "")
    return f"{langcodes.Language.get(tag).to_alpha3()}^{_escape(display)}^ISO6392"


def pid_segment(patient: dict, practice_id: str, region: str) -> str:
    """The PID of a FHIR Patient: PID-3 its id as the medical record number (the id the
    FHIR flags refer to), PID-5 the official name, PID-13 the phones, PID-15 the language."""
    name = next((n for n in patient.get("name") or [] if n.get("use") == "official"), None) or {}
    given = name.get("given") or [""]
    phones = list(
        dict.fromkeys(
            normalize(t["value"], region)
            for t in patient.get("telecom") or []
            if t.get("system") in ("phone", "sms") and t.get("value") and t.get("use") != "old"
        )
    )
    return _segment(
        "PID",
        {
            1: "1",
            3: _components({1: _escape(patient["id"]), 4: _escape(practice_id), 5: "MR"}),
            5: _components(
                {1: _escape(name.get("family", "")), 2: _escape(given[0]), 3: _escape(" ".join(given[1:])), 7: "L"}
            ),
            7: (patient.get("birthDate") or "").replace("-", ""),
            8: GENDER.get(patient.get("gender") or "", "U"),
            13: "~".join(_xtn(phone) for phone in phones),
            15: _language(patient),
        },
    )


@dataclass
class Hl7Writer:
    """FHIR resources of the plan → HL7 v2 messages, as an EHR's interface engine sends them.
    Remembers what it sent, as the EHR knows it: each patient (an SIU carries its PID; a
    patient sent again is an update) and the appointments booked (a change is a reschedule)."""

    patients: dict[tuple[str, str], dict] = field(default_factory=dict)  # (practice, patient id) → Patient
    _pids: dict[tuple[str, str], str] = field(default_factory=dict)
    _booked: set[tuple[str, str]] = field(default_factory=set)
    _seq: int = 0

    def messages(self, practice_id: str, region: str, resources: list[dict]) -> list[Outgoing]:
        """The messages of the Patients and Appointments in `resources` (patients first)."""
        out = [self._patient(practice_id, region, r) for r in resources if r["resourceType"] == "Patient"]
        out += [self._appointment(practice_id, r) for r in resources if r["resourceType"] == "Appointment"]
        return out

    def _header(self, practice_id: str, sent_at: str, kind: str, structure: str) -> tuple[str, str]:
        self._seq += 1
        control_id = f"DEMO{self._seq:012d}"
        facility = _escape(practice_id)
        msh = (
            f"MSH|^~\\&|{SENDING_APPLICATION}|{facility}|{RECEIVING_APPLICATION}|{facility}|{sent_at}||"
            f"{kind}^{structure}|{control_id}|P|{VERSION}"
        )
        return msh, control_id

    def _patient(self, practice_id: str, region: str, patient: dict) -> Outgoing:
        key = (practice_id, patient["id"])
        trigger = "A31" if key in self.patients else "A28"
        sent_at = hl7_time(_ms(patient["meta"]["lastUpdated"]))
        msh, control_id = self._header(practice_id, sent_at, f"ADT^{trigger}", "ADT_A05")
        pid = pid_segment(patient, practice_id, region)
        self.patients[key], self._pids[key] = patient, pid
        segments = [msh, f"EVN|{trigger}|{sent_at}", pid, "PV1|1|N"]
        return Outgoing(f"ADT^{trigger}", control_id, "\r".join(segments))

    def _appointment(self, practice_id: str, appointment: dict) -> Outgoing:
        from ringback.sources.ehr.fhir import ref_id

        actors = [(p.get("actor") or {}).get("reference") for p in appointment.get("participant") or []]
        patient_id = next((pid for ref in actors if (pid := ref_id(ref, "Patient"))), None)
        pid = self._pids.get((practice_id, patient_id or ""))
        if pid is None:
            raise ValueError(f"Appointment/{appointment['id']}: its patient was not sent before (an SIU needs the PID)")
        status = SCH_STATUS.get(appointment.get("status") or "")
        if status is None:
            raise ValueError(f"Appointment/{appointment['id']}: status {appointment.get('status')!r} is not sent")
        key = (practice_id, appointment["id"])
        trigger = "S13" if key in self._booked else "S12"
        self._booked.add(key)
        start_ms, end_ms = _ms(appointment["start"]), _ms(appointment["end"])
        start, end = hl7_time(start_ms), hl7_time(end_ms)
        minutes = str((end_ms - start_ms) // 60_000)
        sent_at = hl7_time(_ms(appointment["meta"]["lastUpdated"]))
        msh, control_id = self._header(practice_id, sent_at, f"SIU^{trigger}", "SIU_S12")
        visit = _components({1: "OFFICE", 2: _escape(appointment.get("description") or "Office visit"), 3: "LOCAL"})
        sch = _segment(
            "SCH",
            {
                2: _components({1: _escape(appointment["id"]), 2: SENDING_APPLICATION}),  # the filler's id
                7: visit,
                8: "ROUTINE^Routine",
                9: minutes,
                10: "MIN^minutes",
                11: _components({3: minutes, 4: start, 5: end}),
                25: status,
            },
        )
        segments = [msh, sch, f"TQ1|1||||||{start}|{end}", pid, "RGS|1|A", f"AIS|1|A|{visit}|{start}|||{minutes}|MIN"]
        doctor = next((ref_id(ref, "Practitioner") for ref in actors if ref_id(ref, "Practitioner")), None)
        if doctor:
            segments.append(f"AIP|1|A|{_escape(doctor)}|MD^Physician|||{start}|||{minutes}|MIN")
        return Outgoing(f"SIU^{trigger}", control_id, "\r".join(segments))


def ack_code(reply: bytes) -> tuple[str, str, str]:
    """(MSA-1 code, MSA-2 control id, MSA-3 text) of an ACK."""
    msa = hl7.parse(reply.decode("utf-8", "replace")).segment("MSA")
    code, control_id, text = (str(msa(i)) if len(msa) > i else "" for i in (1, 2, 3))
    return code, control_id, text


class Hl7EhrFeed:
    """The player's EHR target (`Targets.ehr`): Patients and Appointments over MLLP to each
    practice's `ringback ehr hl7`, waiting for the AA of each message; Flags through the FHIR
    connector (`fhir`). `counts`: what went which way, (path, what) → how many."""

    def __init__(
        self,
        listeners: dict[str, tuple[str, int]],
        practices: dict[str, Practice],
        fhir: EhrFeed,
        ack_timeout_s: float = 30.0,
        resend_for_s: float = 60.0,
    ) -> None:
        self.listeners = listeners
        self.practices = practices
        self.fhir = fhir
        self.ack_timeout_s = ack_timeout_s
        self.resend_for_s = resend_for_s
        self.writer = Hl7Writer()
        self.counts: Counter[tuple[str, str]] = Counter()
        self._flag_records: dict[str, int] = {}  # the FHIR connector's report is cumulative per practice

    async def publish(self, practice_id: str, resources: list[dict]) -> dict:
        """Send the resources' messages and flags; what was published, by kind."""
        from ringback.sources.ehr.fhir import ref_id

        region = region_of(self.practices[practice_id].phone_numbers[0])
        published: Counter[str] = Counter()
        outgoing = self.writer.messages(practice_id, region, [r for r in resources if r["resourceType"] in TO_HL7])
        if outgoing:
            await self._send(practice_id, outgoing)
            published.update(f"{message.kind} (HL7 v2)" for message in outgoing)
        flags = [r for r in resources if r["resourceType"] not in TO_HL7]
        if flags:
            subjects = {pid for f in flags if (pid := ref_id((f.get("subject") or {}).get("reference"), "Patient"))}
            patients = self.writer.patients
            known = [patients[practice_id, pid] for pid in sorted(subjects) if (practice_id, pid) in patients]
            report = await self.fhir.publish(practice_id, flags, known_patients=known)
            total = int(report.get("published", {}).get("flag_records", 0))
            records, self._flag_records[practice_id] = total - self._flag_records.get(practice_id, 0), total
            self.counts[("fhir", "Flag")] += len(flags)
            self.counts[("fhir", "flag records")] += records
            published["flag records (FHIR)"] += records
        return {"published": dict(published)}

    async def _send(self, practice_id: str, messages: list[Outgoing]) -> None:
        """The messages in order on one connection, each after the ACK of the one before. No
        answer (connection refused or lost, a timeout): the same message again on a new
        connection, as an interface engine does (the listener answers a control id it has
        seen with the same ACK and publishes nothing twice)."""
        host, port = self.listeners[practice_id]
        connection = None
        try:
            for message in messages:
                give_up, attempts = time.monotonic() + self.resend_for_s, 0
                while True:
                    attempts += 1
                    try:
                        if connection is None:
                            connection = await open_hl7_connection(host, port, encoding="utf-8")
                        reader, writer = connection
                        writer.writeblock(message.text.encode())
                        await writer.drain()
                        reply = await asyncio.wait_for(reader.readblock(), self.ack_timeout_s)
                        break
                    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        if connection is not None:
                            connection[1].close()
                            connection = None
                        if time.monotonic() > give_up:
                            raise Hl7NotAccepted(
                                f"{message.kind} {message.control_id} to {practice_id}: no ACK after "
                                f"{attempts} attempts ({type(exc).__name__})"
                            ) from exc
                        log.info("%s %s: no ACK (%s), sending it again", message.kind, message.control_id, exc)
                        await asyncio.sleep(0.2)
                code, control_id, text = ack_code(reply)
                if code != "AA" or control_id != message.control_id:
                    raise Hl7NotAccepted(f"{message.kind} {message.control_id} to {practice_id}: {code} {text}")
                self.counts[("hl7", message.kind)] += 1
        finally:
            if connection is not None:
                connection[1].close()

    def close(self) -> None:
        self.fhir.close()
