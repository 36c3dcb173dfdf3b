"""The benchmark's traffic: practices, EHR records and call events, seeded.

A compact, self-contained generator (the product's traffic simulator renders whole
practice days as provider webhooks; the benchmark needs canonical records in bulk,
produced straight to the topics, and webhooks only for the latency figure).

The mix follows the reference practice (docs/product.md): 18 of 94 calls missed (19 %),
most misses from new patients; of the known patients some have an urgency flag or
an upcoming appointment, and some voicemails ask to reschedule.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

from ringback.dev.bench.harness import SLACK_SECRET
from ringback.kafka import topics
from ringback.schemas import codec

MISS_RATE = 18 / 94
VOICEMAIL_SHARE = 0.35  # of the missed calls: the caller left a voicemail (a transcript follows)
NEW_PATIENT_SHARE_OF_MISSES = 0.6  # "most misses are new patients"
URGENT_FLAG_SHARE = 0.05  # of the patients
APPOINTMENT_SHARE = 0.3  # of the patients: an upcoming appointment within two weeks
RESCHEDULE_TEXT = "Hi, this is about my appointment next week, I need to reschedule please."
OTHER_TEXT = "Hi, I have a question about my bill, please call me back."

STAFF_ROUTE = f"slack:{SLACK_SECRET}"


def practice_id(i: int) -> str:
    return f"bench-{i:04d}"


def practice_did(i: int) -> str:
    return f"+1312{6000000 + i:07d}"


def practices(count: int, windows: dict | None = None, start: int = 0) -> list[dict]:
    """Practices `start` .. `start + count - 1` of a practices file: every staff role routed
    to the stand-in's Slack webhook, SMS allowed at any hour (quiet hours 00:00-00:00),
    windows as given (seconds)."""
    out = []
    for i in range(start, start + count):
        out.append(
            {
                "id": practice_id(i),
                "name": f"Bench Practice {i}",
                "time_zone": "America/Chicago",
                "phone_numbers": [practice_did(i)],
                "sms_from": practice_did(i),
                "booking_link": f"https://book.example.org/p{i}",
                "reschedule_link": f"https://book.example.org/p{i}/reschedule",
                "routing": {
                    role: STAFF_ROUTE
                    for role in (
                        "scheduling_coordinator",
                        "nurse",
                        "department_manager",
                        "admin_team",
                        "scheduling_queue",
                    )
                },
                "windows": dict(windows or {}),
                "quiet_hours": {"start": "00:00", "end": "00:00"},
                "sms_caps": {"per_day": 10, "per_week": 20},
                "secrets": {"twilio_auth_token": "TWILIO_AUTH_TOKEN"},
            }
        )
    return out


def caller_number(n: int) -> str:
    """A distinct, valid-looking US number per n (area codes 2xx-9xx, 555 exchange avoided)."""
    area = 201 + (n // 9_000_000) % 700
    rest = n % 9_000_000
    return f"+1{area}{2000000 + rest:07d}"


def _call_sid(rng: random.Random) -> str:
    return "CA" + f"{rng.getrandbits(128):032x}"


@dataclass
class Patient:
    practice: int
    phone: str
    patient_id: str
    urgent: bool
    appointment_start: int | None


class Population:
    """Patients per practice (known numbers) and a supply of unknown numbers."""

    def __init__(
        self, practices_count: int, patients_per_practice: int, seed: int = 7, now_ms: int | None = None
    ) -> None:
        self.rng = random.Random(seed)
        self.practices = practices_count
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.patients: list[Patient] = []
        n = 0
        for p in range(practices_count):
            for _ in range(patients_per_practice):
                start = None
                if self.rng.random() < APPOINTMENT_SHARE:
                    start = self.now_ms + self.rng.randrange(86_400_000, 14 * 86_400_000)
                self.patients.append(
                    Patient(p, caller_number(n), f"pat-{p}-{n}", self.rng.random() < URGENT_FLAG_SHARE, start)
                )
                n += 1
        self._next_unknown = 5_000_000 + n

    def unknown_number(self) -> str:
        self._next_unknown += 1
        return caller_number(self._next_unknown)

    # -- EHR records, keyed and placed like ringback/sources/ehr/publisher.py does
    def ehr_records(self, partitions: int) -> dict[str, list[tuple[bytes, bytes, int]]]:
        out: dict[str, list] = {"patients": [], "flags": [], "appointments": []}
        for pat in self.patients:
            pid = practice_id(pat.practice)
            join = topics.join_key(pid, pat.phone)
            part = topics.partition_for(join, partitions)
            out["patients"].append(
                (
                    join,
                    codec.encode(
                        "patient",
                        {
                            "practice_id": pid,
                            "phone": pat.phone,
                            "patient_id": pat.patient_id,
                            "display_name": f"Patient {pat.patient_id}",
                            "deceased": False,
                            "assigned_provider": None,
                            "updated_at": self.now_ms - 86_400_000,
                        },
                    ),
                    part,
                )
            )
            if pat.urgent:
                fid = f"flag-{pat.patient_id}"
                out["flags"].append(
                    (
                        join + f"|{fid}".encode(),
                        codec.encode(
                            "flag",
                            {
                                "practice_id": pid,
                                "flag_id": fid,
                                "patient_id": pat.patient_id,
                                "phone": pat.phone,
                                "code": "callback-requested",
                                "display": "Callback requested",
                                "priority": None,
                                "status": "active",
                                "callback_requested": True,
                                "updated_at": self.now_ms - 3_600_000,
                            },
                        ),
                        part,
                    )
                )
            if pat.appointment_start is not None:
                aid = f"appt-{pat.patient_id}"
                out["appointments"].append(
                    (
                        join + f"|{aid}".encode(),
                        codec.encode(
                            "appointment",
                            {
                                "practice_id": pid,
                                "appointment_id": aid,
                                "patient_id": pat.patient_id,
                                "phone": pat.phone,
                                "start": pat.appointment_start,
                                "status": "booked",
                                "updated_at": self.now_ms - 86_400_000,
                            },
                        ),
                        part,
                    )
                )
        return out


def call_event(
    practice: int,
    caller: str,
    outcome: str,
    now_ms: int,
    rng: random.Random,
    event_type: str = "CALL",
    call_sid: str | None = None,
    transcript: str | None = None,
) -> dict:
    """A canonical call event as the gateway produces it (ringback/sources/canonical.py)."""
    from ringback.sources.canonical import call_event as canonical

    sid = call_sid or _call_sid(rng)
    status = {"MISSED": "no-answer", "VOICEMAIL": "completed", "ANSWERED": "completed"}[outcome]
    duration = {"MISSED": None, "VOICEMAIL": 40, "ANSWERED": 180}[outcome]
    kind = "transcription" if event_type == "TRANSCRIPTION" else "status"
    return canonical(
        event_id=f"{sid}:{kind}",
        provider="twilio",
        event_type=event_type,
        outcome=outcome,
        provider_status=status,
        practice_id=practice_id(practice),
        caller=caller,
        called=practice_did(practice),
        direction="INBOUND",
        provider_call_id=sid,
        occurred_at=now_ms - (duration or 20) * 1000,
        received_at=now_ms,
        duration_s=duration,
        recording_url=(f"https://api.twilio.com/recordings/RE{sid[2:]}" if outcome == "VOICEMAIL" else None),
        transcript=transcript,
    )


def keyed(event: dict, partitions: int) -> tuple[bytes, bytes, int]:
    key = topics.join_key(event["practice_id"], event["caller"])
    return key, codec.encode("call_event", event), topics.partition_for(key, partitions)


def day_mix(
    pop: Population, count: int, partitions: int, seed: int = 11, now_ms: int | None = None
) -> tuple[list[tuple[bytes, bytes, int]], dict]:
    """`count` call events of the realistic mix, in arrival order, with what they contain:
    81 % answered (a few of them callers whose missed call is still open), 19 % missed,
    of which 35 % left a voicemail (its transcription follows a few events later, as a
    second event of the same caller), 60 % of the misses from unknown numbers."""
    rng = random.Random(seed)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    events: list[dict] = []
    recent_missed: list[tuple[int, str]] = []
    pending_transcripts: list[tuple[int, dict]] = []
    mix = {
        "answered": 0,
        "answered_after_miss": 0,
        "missed": 0,
        "voicemail": 0,
        "transcription": 0,
        "missed_new_patient": 0,
        "missed_known_patient": 0,
    }
    i = 0
    while len(events) < count:
        while pending_transcripts and pending_transcripts[0][0] <= i and len(events) < count:
            events.append(pending_transcripts.pop(0)[1])
            mix["transcription"] += 1
        if len(events) >= count:
            break
        i += 1
        t = now + i  # distinct, increasing times
        if rng.random() < MISS_RATE:
            if rng.random() < NEW_PATIENT_SHARE_OF_MISSES:
                practice, caller = rng.randrange(pop.practices), pop.unknown_number()
                mix["missed_new_patient"] += 1
            else:
                pat = rng.choice(pop.patients)
                practice, caller = pat.practice, pat.phone
                mix["missed_known_patient"] += 1
            voicemail = rng.random() < VOICEMAIL_SHARE
            sid = _call_sid(rng)
            events.append(call_event(practice, caller, "VOICEMAIL" if voicemail else "MISSED", t, rng, call_sid=sid))
            mix["voicemail" if voicemail else "missed"] += 1
            recent_missed.append((practice, caller))
            recent_missed = recent_missed[-200:]
            if voicemail:
                text = RESCHEDULE_TEXT if rng.random() < 0.5 else OTHER_TEXT
                tr = call_event(
                    practice,
                    caller,
                    "VOICEMAIL",
                    t + 30_000,
                    rng,
                    event_type="TRANSCRIPTION",
                    call_sid=sid,
                    transcript=text,
                )
                pending_transcripts.append((i + rng.randrange(3, 30), tr))
        else:
            if recent_missed and rng.random() < 0.04:
                practice, caller = recent_missed.pop(rng.randrange(len(recent_missed)))
                mix["answered_after_miss"] += 1
            elif rng.random() < 0.6:
                pat = rng.choice(pop.patients)
                practice, caller = pat.practice, pat.phone
            else:
                practice, caller = rng.randrange(pop.practices), pop.unknown_number()
            events.append(call_event(practice, caller, "ANSWERED", t, rng))
            mix["answered"] += 1
    return [keyed(e, partitions) for e in events], mix


def missed_calls(
    count: int,
    practices_count: int,
    partitions: int,
    received_at_ms: int | list[int],
    seed: int = 23,
    first_caller: int = 8_000_000,
    practice_offset: int = 0,
) -> list[tuple[bytes, bytes, int]]:
    """`count` missed calls from distinct unknown numbers (new-patient cases), each
    reported at `received_at_ms` (one time for all, or one per call)."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        at = received_at_ms[n] if isinstance(received_at_ms, list) else received_at_ms
        practice = practice_offset + n % practices_count
        out.append(keyed(call_event(practice, caller_number(first_caller + n), "MISSED", at, rng), partitions))
    return out


def unique_id() -> str:
    return uuid.uuid4().hex[:8]
