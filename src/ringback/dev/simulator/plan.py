"""The plan of a simulated practice day: seed, practices, day → ordered, timed inputs.

Pure and deterministic: no clock, no I/O, no Kafka; the same seed gives the same day
(`random.Random` seeded with a string per practice, so practice 0 has the same day
whatever the number of practices). The player (`player.py`) posts the events at
their wall times; `render.py` turns each into the real provider payload when it is
played (signatures, the provider's timestamps).

Time. `Day.speed` practice seconds pass per wall second (600: a 10-hour day in one
minute). Every event carries `at`, wall seconds after the day's start (08:00); the
practices' windows are the wall seconds the demo practices file gives the system
(`practices.scaled_windows`), so the plan reads them as they are and places each
reaction inside the window it must beat (e.g. a reply before the 2 h follow-up).

What a day holds, per practice (the reference practice of docs/product.md first):

* inbound calls over 08:00-18:00, peaks 8-10 and 12-14 (`HOURLY`), `Site.calls` a day
  (94 for the reference practice); about 19 % missed (exactly 18 of 94 for the
  reference practice), misses three times likelier at peak (`MISS_WEIGHT`);
* the missed calls' mix of the reference day (`REFERENCE_MIX`): a blocked spam number,
  a caller who misses twice (one case), new patients (most), urgent existing patients
  with a callback-requested or urgency flag, reschedule voicemails with transcripts,
  general inquiries (some by voicemail);
* what people then do (`BEHAVIOUR`, documented in docs/demo.md): new patients reply,
  book through the link (FHIR Patient + Appointment), call back and get through, text
  STOP or "please stop texting me", or stay silent; staff complete clinical, callback,
  admin and protection tasks in the console (some late, some never); patients move
  their appointment (FHIR); general-inquiry callers call back;
* the EHR in the morning (`Plan.preload`): the known patients, their flags and
  upcoming appointments, as FHIR R4 resources;
* junk: a forged signature (403), a webhook for a number no practice owns (404), an
  anonymous caller the gateway cannot key (dead letter, 400; 200 for RingCentral), a redelivered webhook,
  a broken CDR line (dead letter).

A Google Voice practice's calls and texts arrive as Google sends them (`Site.gvoice_via`):
notification e-mails (missed call, voicemail with its transcript, text; nothing for an
answered call, so a patient who gets through is not seen) or the Admin console's audit-log
export, imported in batches (`IMPORT` events; every call, no transcripts, no texts). The
plan derives each e-mail's Message-ID and each CSV row, and the event ids the connector's
own mapping gives them (`SimEvent.event_id`).

A Twilio practice with the ready-made call flow gets forwarded calls (`Forward`: nobody
answered, a cell phone's voicemail picked up, a person answered; the callbacks and their
times). Each case carries its expected patient SMS steps (`CaseSpec.sms_steps`) and outcome,
derived from the workflow rules (docs/product.md, docs/stream-app.md), and the event id it
opens with (of a forwarded call: the signal the worker's per-call verdict turns into a miss).
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ringback.dev.simulator.webhooks import FORWARD_ANSWERED, FORWARD_MACHINE, FORWARD_MISSED
from ringback.domain import recipes
from ringback.domain.practice import CallFlow, Practice
from ringback.sources.gvoice import audit_log, notifications

# ---------------------------------------------------------------- providers
GVOICE = "google_voice"
PROVIDERS = ("twilio", "ringcentral", "dialpad", "vonage", "cdr", GVOICE)
WEBHOOK_PROVIDERS = ("twilio", "ringcentral", "dialpad", "vonage")
# Providers that send a voicemail transcript (Twilio transcribeCallback, Dialpad voicemail_uploaded).
TRANSCRIBES = frozenset({"twilio", "dialpad"})
# Providers with an inbound voicemail signal the gateway reads (Vonage's `machine` is answering-
# machine detection on outbound calls: an inbound Vonage voicemail arrives as an unanswered call).
VOICEMAIL_SIGNAL = frozenset({"twilio", "ringcentral", "dialpad", "cdr", GVOICE})
# Providers that report call times to the second (Twilio's RFC 2822 `Timestamp`, the CDR `start`,
# Google Voice's e-mail `Date` and audit-log `Date`):
# their calls are placed on whole wall seconds, so compressed time does not turn that resolution
# into up to `speed` seconds of apparent latency.
SECOND_RESOLUTION = frozenset({"twilio", "cdr", GVOICE})
# How a Google Voice practice's signals reach ringback: its notification e-mails (`ringback gvoice
# watch` on an IMAP mailbox) or the Admin console's audit-log export (`gvoice import` of CSV batches).
GV_EMAIL, GV_AUDIT = "email", "audit_log"
GV_BATCH_S = 15 * 60  # practice seconds between two audit-log exports
GV_AUDIT_COLUMNS = (
    "Event",
    "Event description",
    "Date",
    "Actor",
    "Call source",
    "Call destination",
    "Duration",
    "Group conversation",
    "Cost",
)

# ---------------------------------------------------------------- event kinds
CALL = "call"  # an inbound call ends: MISSED, VOICEMAIL or ANSWERED
TRANSCRIPT = "transcript"  # the voicemail's transcription arrives
SMS = "sms"  # the patient texts the practice (Twilio incoming message)
EHR = "ehr"  # FHIR resources change (a booking, a moved appointment)
STAFF = "staff"  # a staff member completes a task in the console
JUNK = "junk"  # forged, malformed, unknown number, redelivered, broken CDR line, unreadable e-mail, bad CSV row
IMPORT = "import"  # a Google Voice audit-log export is imported (the rows since the last one)

MISSED, VOICEMAIL, ANSWERED = "MISSED", "VOICEMAIL", "ANSWERED"
# The audit log's event of each outcome (src/ringback/sources/gvoice/audit_log.py reads them).
GV_AUDIT_EVENTS = {MISSED: "Missed call", VOICEMAIL: "Voicemail received", ANSWERED: "Call received"}
NEW, URGENT, RESCHEDULE, GENERAL = "NEW_PATIENT", "URGENT_EXISTING", "RESCHEDULE", "GENERAL_INQUIRY"

# ---------------------------------------------------------------- the day's shape
DAY_OPEN_H, DAY_CLOSE_H = 8, 18
# Share of the day's calls per hour (percent): peaks 8-10 and 12-14 (the reference practice, docs/product.md).
HOURLY = {8: 14, 9: 14, 10: 9, 11: 9, 12: 13, 13: 13, 14: 8, 15: 8, 16: 7, 17: 5}
PEAK_HOURS = (8, 9, 12, 13)
MISS_WEIGHT = {True: 3.0, False: 1.0}  # misses are three times likelier at peak
MISS_RATE = 18 / 94
REFERENCE_CALLS = 94
# The 18 missed calls of the reference day (tests/worker/test_reference_day.py).
REFERENCE_MIX = {"spam": 1, "repeat": 1, NEW: 7, URGENT: 3, RESCHEDULE: 4, GENERAL: 2}
CASE_WEIGHTS = {NEW: 7, URGENT: 3, RESCHEDULE: 4, GENERAL: 2}
KNOWN_SHARE_OF_ANSWERED = 0.65  # answered calls from existing patients (the rest: unknown numbers)


# ---------------------------------------------------------------- behaviour (assumptions; docs/demo.md)
@dataclass(frozen=True)
class Behaviour:
    """What people do: weight tables (one reaction is drawn) and shares (probabilities)."""

    new_patient: Mapping[str, float]  # after the first SMS (weights)
    new_patient_voicemail: float  # leave a voicemail instead of hanging up
    new_patient_staff_calls_back: float  # silent ones: the coordinator completes the 2 h callback task
    urgent_voicemail: float
    urgent_staff: Mapping[str, float]  # nurse completes the clinical task
    reschedule_appointment: Mapping[str, float]
    reschedule_moves: float  # the patient moves the appointment with the link
    reschedule_protect_done: float  # staff complete the 4 h protection task
    reschedule_callback_done: float  # staff complete the callback task (no appointment within 14 days)
    general_voicemail: float
    general: Mapping[str, float]


BEHAVIOUR = Behaviour(
    new_patient={"reply": 25, "book": 22, "calls_back": 8, "stop": 6, "stop_sentence": 3, "silent": 36},
    new_patient_voicemail=0.30,
    new_patient_staff_calls_back=0.5,
    urgent_voicemail=0.40,
    urgent_staff={"in_time": 65, "late": 20, "never": 15},
    reschedule_appointment={"within_48h": 55, "within_14d": 25, "later": 20},
    reschedule_moves=0.60,
    reschedule_protect_done=0.5,
    reschedule_callback_done=0.7,
    general_voicemail=0.5,
    general={"calls_back": 35, "staff": 45, "nothing": 20},
)

GIVEN = (
    "Ana",
    "Ben",
    "Carla",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kira",
    "Luis",
    "Mei",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
)
FAMILY = (
    "Alvarez",
    "Brooks",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ibrahim",
    "Jones",
    "Kowalski",
    "Lee",
    "Moreau",
    "Nguyen",
    "Okafor",
    "Patel",
    "Quist",
    "Rossi",
    "Silva",
    "Tanaka",
    "Umar",
    "Varga",
    "Walsh",
    "Xu",
    "Young",
    "Zimmer",
)
NEW_PATIENT_VOICEMAILS = (
    "Hi, I just moved to the area and I'm looking for a new family doctor. Are you taking new patients?",
    "Hello, my insurance lists you as in network and I'd like to book a first visit.",
    "Hi, calling to ask whether you accept new patients for a check-up.",
)
URGENT_VOICEMAILS = (
    "Hi, the nurse line asked me to call back about my test results.",
    "My blood pressure readings are high again, please call me back.",
    "The pharmacy says my refill needs approval and I'm out of my medication.",
)
RESCHEDULE_VOICEMAILS = (
    "Hi, I need to reschedule my appointment, something came up at work.",
    "Can I move my appointment to another day next week?",
    "I have to cancel my appointment, could I get a different time?",
    "I can't make it on Thursday, can we postpone my visit?",
)
GENERAL_VOICEMAILS = (
    "Hi, I have a question about my last bill.",
    "I'm not cancelling anything, I just need a copy of my records.",
    "Could you send my vaccination record to my daughter's school?",
    "I have a question about my insurance coverage for the lab work.",
)
REPLIES = (
    "Yes please, can I come in tomorrow morning?",
    "Hi! I'd like to book. Do you have anything Friday?",
    "Great, what times do you have next week?",
)
# FHIR Patient.communication of the demo's patients who prefer Spanish (their SMS go in Spanish).
SPANISH_PREFERRED = {
    "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-US", "display": "Spanish"}]},
    "preferred": True,
}
URGENT_FLAGS = (  # (weight, code, display, priority): all urgent by domain/classify.py
    (50, "callback-requested", "Callback requested (after-hours nurse line)", "PH"),
    (30, "urgent", "Post-op follow-up: wound check", "PH"),
    (20, "refill-request", "Open refill request", "PM"),
)
CALLER_AREAS = (
    "773",
    "872",
    "630",
    "847",
    "708",
    "224",
    "331",
    "779",
    "815",
    "217",
    "309",
    "618",
    "262",
    "414",
    "608",
    "920",
    "319",
    "563",
    "515",
    "641",
)

DAY_S = 86_400.0

# ---------------------------------------------------------------- Twilio: calls forwarded by the ready-made flow
# The callbacks of one forwarded call (render.py builds each).
INCOMING, LEG_ANSWERED, AMD, LEG_ENDED, DIAL, RECORDED, PARENT = (
    "incoming",
    "leg_answered",
    "amd",
    "leg_ended",
    "dial",
    "recorded",
    "parent",
)
MACHINE_SHARE = 0.25  # first misses a cell phone's voicemail picks up (the front desk forwards to a cell)
PARENT_FIRST_SHARE = 0.3  # the parent's `completed` overtakes the Dial action (the caller hung up as it rang out)
ANSWERED_BY = {"machine_end_beep": 6, "machine_end_silence": 2, "machine_end_other": 1, "machine_start": 1}
GREETING_S = 8  # the voicemail fallback's greeting, before the beep
HANG_UP_S = 3  # a caller who leaves no voicemail hangs up during the greeting
AMD_S = 6  # answering-machine detection's verdict after the pickup


@dataclass(frozen=True)
class Forward:
    """A Twilio call through the ready-made flow: the front desk rang (`<Dial>`), then the
    voicemail fallback; the callbacks it sends and when (practice seconds after the call came in)."""

    front: str  # FORWARD_MISSED (nobody picked up), FORWARD_MACHINE (a cell's voicemail did), FORWARD_ANSWERED
    front_desk: str  # the phone that rang (the leg's `To`)
    ring_s: int  # until the pickup, or until the Dial gave up (its timeout; busy: at once)
    dial_status: str  # DialCallStatus: no-answer, busy, completed
    answered_by: str | None = None  # the AMD verdict (machine detection on): a machine_*, or human
    parent_first: bool = False  # the parent's `completed` is posted before the Dial action / the recording
    machine_detection: bool = True  # the flow's callback URLs say so (`amd=1`)

    @staticmethod
    def leg_sid(call_sid: str) -> str:
        """The dialed leg's CallSid (the `DialCallSid`), derived from the parent's."""
        return "CA" + call_sid[2:][::-1]

    @property
    def deciding(self) -> str:
        """The callback whose call event first makes the call a miss (it opens the case)."""
        return AMD if self.front == FORWARD_MACHINE else DIAL

    def opening_event_id(self, call_sid: str) -> str:
        """The call event id the worker opens the case with (sources/twilio/callbacks.py)."""
        if self.front == FORWARD_MACHINE:
            return f"twilio:{call_sid}:machine-{self.leg_sid(call_sid)}"
        if self.front == FORWARD_ANSWERED:
            return f"twilio:{call_sid}:answered-{self.leg_sid(call_sid)}"
        return f"twilio:{call_sid}:dial-{self.dial_status}"

    def callbacks(self, duration_s: int, voicemail: bool) -> list[tuple[int, str]]:
        """(practice seconds after the incoming call, callback) in the order Twilio posts them.
        `duration_s`: the conversation, the message left on a machine, or the voicemail."""
        ring, out = self.ring_s, [(0, INCOMING)]
        if self.front == FORWARD_MISSED:
            out += [(ring, DIAL), (ring, LEG_ENDED)]
            if voicemail:
                end = ring + GREETING_S + duration_s
                last = [(end, PARENT), (end, RECORDED)] if self.parent_first else [(end, RECORDED), (end, PARENT)]
                return out + last
            if self.parent_first:  # hung up as the Dial gave up: the parent's completed comes first
                return [(0, INCOMING), (ring, PARENT), (ring, DIAL), (ring, LEG_ENDED)]
            return out + [(ring + HANG_UP_S, PARENT)]
        out.append((ring, LEG_ANSWERED))
        if self.answered_by:  # machine detection: its verdict (a machine, or `human`) comes a few seconds later
            out.append((ring + AMD_S, AMD))
        end = ring + duration_s
        last = [(end, PARENT), (end, DIAL)] if self.parent_first else [(end, DIAL), (end, PARENT)]
        return out + [(end, LEG_ENDED)] + last

    def ends_s(self, duration_s: int, voicemail: bool) -> int:
        """When the call's last callback comes (practice seconds after it came in)."""
        return self.callbacks(duration_s, voicemail)[-1][0]


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Site:
    """A practice of the simulation: its settings, its phone system, its call volume."""

    practice: Practice
    provider: str
    calls: int = REFERENCE_CALLS
    reference: bool = False
    gvoice_via: str = GV_EMAIL  # a Google Voice practice: GV_EMAIL or GV_AUDIT

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider {self.provider!r} is not one of {', '.join(PROVIDERS)}")
        if self.gvoice_via not in (GV_EMAIL, GV_AUDIT):
            raise ValueError(f"gvoice_via {self.gvoice_via!r} is not {GV_EMAIL!r} or {GV_AUDIT!r}")


@dataclass(frozen=True)
class Day:
    """The simulated day: its date (a label) and how fast it runs."""

    date: date = date(2026, 11, 24)
    speed: float = 600.0  # practice seconds per wall second
    # The wall clock (epoch s) of the day's start, when the plan must know it: the audit log's
    # rows carry the call's time and their event ids derive from it. Default: 08:00 UTC of `date`.
    start: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.speed <= 3600:
            raise ValueError("speed must be between 1 (real time) and 3600 practice seconds per second")

    @property
    def length_s(self) -> float:
        """Wall seconds from opening to closing."""
        return (DAY_CLOSE_H - DAY_OPEN_H) * 3600 / self.speed

    def wall(self, practice_s: float) -> float:
        return practice_s / self.speed

    def clock(self, at: float) -> str:
        """Practice time (HH:MM) of a wall offset."""
        minutes = int((DAY_OPEN_H * 3600 + at * self.speed) // 60)
        return f"{(minutes // 60) % 24:02d}:{minutes % 60:02d}"

    def wall_clock(self, at: float) -> float:
        """Epoch seconds of a wall offset (the day starting at `start`)."""
        return (self.start if self.start is not None else self.practice_ms(0) / 1000) + at

    def practice_ms(self, at: float) -> int:
        """Epoch ms of a wall offset in practice time (the day's date, 08:00 UTC + offset x speed)."""
        start = datetime(self.date.year, self.date.month, self.date.day, DAY_OPEN_H, tzinfo=UTC)
        return int((start + timedelta(seconds=at * self.speed)).timestamp() * 1000)


@dataclass(frozen=True)
class SimEvent:
    """One input of the day. `at`: wall seconds after the day's start (08:00)."""

    at: float
    seq: int
    kind: str
    practice_id: str
    provider: str
    caller: str | None = None  # the patient's number, E.164
    called: str | None = None  # the practice's number
    call_id: str | None = None  # provider call id (Twilio CallSid, RingCentral session, ...)
    outcome: str | None = None  # CALL: MISSED / VOICEMAIL / ANSWERED
    status: str | None = None  # CALL: the provider's status (no-answer, TargetBusy, NO ANSWER, ...)
    duration_s: int = 0  # CALL: practice seconds the call lasted
    text: str | None = None  # TRANSCRIPT / SMS: the words
    resources: tuple = ()  # EHR: FHIR resources (`_start_in_s`, `_updated_ago_s`: filled when played)
    step: str | None = None  # STAFF: the task step to complete
    case: str | None = None  # the case label (CaseSpec.case) this event belongs to
    after_sms: bool = False  # a reaction to an SMS: the player waits until one reached the caller
    junk: str | None = None  # JUNK: forged | unknown_number | malformed | redelivery | bad_cdr_line
    expect_status: int | None = None  # HTTP status the gateway must answer (None: any 2xx)
    note: str = ""
    forward: Forward | None = None  # a Twilio call through the ready-made flow (several callbacks)
    # Google Voice: the call event id the connector's own mapping gives the e-mail or the CSV row
    # (None: the call sends no notification), and the audit-log row the player exports.
    event_id: str | None = None
    row: tuple[str, ...] = ()

    @property
    def opening_event_id(self) -> str | None:
        """The canonical event id a CALL of this kind gets at the gateway / CDR poller (of a
        forwarded call: the signal that first makes it a miss)."""
        if self.kind != CALL or self.call_id is None:
            return None
        if self.provider == GVOICE:
            return self.event_id
        if self.forward is not None:
            return self.forward.opening_event_id(self.call_id)
        return event_id(self.provider, self.call_id, self.outcome, self.status)


@dataclass
class CaseSpec:
    """A case the plan opens, and what the workflow should make of it."""

    case: str  # label: practice#n
    practice_id: str
    caller: str
    scenario: str
    behaviour: str
    missed_at: float  # wall offset of the opening call
    opening_event_id: str
    sms_steps: tuple[str, ...]
    final_state: str
    channel: str | None = None
    calls: int = 1
    note: str = ""

    @property
    def case_id(self) -> str:
        return recipes.case_id(self.practice_id, self.caller, self.opening_event_id)

    def task_id(self, step: str) -> str:
        return f"{self.case_id}:{step}"


@dataclass
class Plan:
    seed: str
    day: Day
    sites: list[Site]
    preload: list[SimEvent]  # the EHR in the morning (before the first call)
    events: list[SimEvent]  # the day, in order
    cases: list[CaseSpec]
    counts: dict[str, Counter] = field(default_factory=dict)  # practice → calls, missed, answered, ...

    @property
    def length_s(self) -> float:
        """Wall seconds from the day's start to the last event."""
        return max((e.at for e in self.events), default=0.0)

    def expected_sms(self) -> Counter:
        """Patient SMS the sinks should send, by step (first_sms, ack_sms, second_sms, ...)."""
        return Counter(step for c in self.cases for step in c.sms_steps)

    def expected_sms_by_recipient(self) -> Counter:
        return Counter((c.practice_id, c.caller, step) for c in self.cases for step in c.sms_steps)

    def expected_first_responses(self) -> int:
        """Cases whose first response is a patient SMS (first_sms, ack_sms, reschedule_sms)."""
        return sum(1 for c in self.cases if set(c.sms_steps) & FIRST_RESPONSE_SMS)

    def summary(self) -> dict:
        total: Counter[str] = Counter()
        for counts in self.counts.values():
            total.update(counts)
        return {
            "seed": self.seed,
            "speed": self.day.speed,
            "practices": len(self.sites),
            "calls": total["calls"],
            "missed": total["missed"],
            "answered": total["answered"],
            "cases": len(self.cases),
            "cases_by_scenario": dict(sorted(Counter(c.scenario for c in self.cases).items())),
            "events": len(self.events),
            "preload_resources": sum(len(e.resources) for e in self.preload),
            "sms_expected": sum(self.expected_sms().values()),
            "sms_expected_by_step": dict(sorted(self.expected_sms().items())),
            "first_response_sms_expected": self.expected_first_responses(),
            "length_s": round(self.length_s, 1),
        }


FIRST_RESPONSE_SMS = frozenset({recipes.FIRST_SMS, recipes.ACK_SMS, recipes.RESCHEDULE_SMS})


def event_id(provider: str, call_id: str, outcome: str | None, status: str | None) -> str:
    """The canonical event id of a call (ringback/sources/, docs/sources-webhooks.md)."""
    token = (outcome or "").lower()
    if provider == "twilio":
        return f"twilio:{call_id}:{status}"
    if provider == "cdr":
        return f"cdr:{call_id}:{'VOICEMAIL' if outcome == VOICEMAIL else (status or '').replace(' ', '_')}"
    return f"{provider}:{call_id}:{token}"


def gvoice_email_event_id(message_id: str, practice_id: str, caller: str, called: str, outcome: str) -> str:
    """The call event id `ringback gvoice watch` gives a missed-call or voicemail e-mail
    (`notifications.call_events`: derived from the Message-ID)."""
    kind = "voicemail" if outcome == VOICEMAIL else "missed_call"
    note = notifications.Notification(kind, message_id, caller, 0, None, ())
    events = notifications.call_events(note, practice_id, called, 0)
    return next(e["event_id"] for e in events if e["event_type"] == "CALL")


def sites_for(
    practices: Iterable[Practice],
    providers: Iterable[str] | None = None,
    calls: int = REFERENCE_CALLS,
    gvoice_via: str = GV_EMAIL,
) -> list[Site]:
    """Sites for practices in order: the first is the reference practice; providers in
    turn (Twilio, RingCentral, Dialpad, Vonage, CDR, Google Voice) unless given."""
    practices = list(practices)
    chosen = (
        list(providers) if providers is not None else [PROVIDERS[i % len(PROVIDERS)] for i in range(len(practices))]
    )
    return [Site(p, chosen[i], calls=calls, reference=(i == 0), gvoice_via=gvoice_via) for i, p in enumerate(practices)]


# ---------------------------------------------------------------- the plan
def plan_day(seed: int | str, sites: list[Site], day: Day | None = None) -> Plan:
    """The day's inputs for every site, merged in time order. Pure."""
    day = day or Day()
    preload: list[SimEvent] = []
    events: list[SimEvent] = []
    cases: list[CaseSpec] = []
    counts: dict[str, Counter] = {}
    for index, site in enumerate(sites):
        builder = _SiteDay(str(seed), index, site, day)
        builder.build()
        preload += builder.preload
        events += builder.events
        cases += builder.cases
        counts[site.practice.id] = builder.counts
    events.sort(key=lambda e: (e.at, e.practice_id, e.seq))
    return Plan(str(seed), day, list(sites), preload, events, cases, counts)


class _SiteDay:
    """One practice's day. Every random draw comes from its own generator, in a fixed order."""

    def __init__(self, seed: str, index: int, site: Site, day: Day) -> None:
        self.site, self.day, self.index = site, day, index
        self.p = site.practice
        self.pid = self.p.id
        self.provider = site.provider
        self.rng = random.Random(f"{seed}/{self.pid}")
        self.did = self.p.phone_numbers[0]
        # A Twilio practice with the ready-made call flow: its calls are forwarded to the front desk.
        self.flow = self.p.call_flow if self.provider == "twilio" else None
        # A Google Voice practice: how its calls reach ringback (e-mails or the audit log).
        self.gvoice = site.gvoice_via if self.provider == GVOICE else None
        w = self.p.windows
        # Effective windows in wall seconds, as the system will apply them.
        self.hold = float(w.first_response_hold)
        self.followup = float(w.new_patient_followup)
        self.escalation = float(w.urgent_escalation)
        self.reschedule_gate = float(w.reschedule_gate)
        self.expiry = float(w.case_expiry)
        self.preload: list[SimEvent] = []
        self.events: list[SimEvent] = []
        self.cases: list[CaseSpec] = []
        self.counts: Counter = Counter()
        self._seq = 0
        self._numbers: set[str] = set(self.p.phone_numbers) | set(self.p.blocked_numbers)
        self._patient_seq = 0
        self._answered_slots: list[float] = []

    # ------------------------------------------------------------ helpers
    @property
    def _transcribes(self) -> bool:
        """Does a voicemail's transcript reach ringback? (Google Voice: inside the voicemail e-mail.)"""
        return self.provider in TRANSCRIBES or self.gvoice == GV_EMAIL

    @property
    def _sees_answered(self) -> bool:
        """Does ringback learn that a call was answered? Google Voice e-mails nothing for one."""
        return self.gvoice != GV_EMAIL

    def _event(self, at: float, kind: str, **fields) -> SimEvent:
        self._seq += 1
        fields.setdefault("provider", self.provider)
        event = SimEvent(at=round(at, 4), seq=self._seq, kind=kind, practice_id=self.pid, **fields)
        self.events.append(event)
        return event

    def _number(self) -> str:
        area = CALLER_AREAS[self.index % len(CALLER_AREAS)]
        block = self.index // len(CALLER_AREAS)
        while True:
            n = f"+1{area}555{2000 + (block * 800 + self.rng.randrange(800)) % 8000:04d}"
            if n not in self._numbers:
                self._numbers.add(n)
                return n

    def _name(self) -> tuple[str, str]:
        return self.rng.choice(GIVEN), self.rng.choice(FAMILY)

    def _weighted(self, table: Mapping[str, float]) -> str:
        names = list(table)
        return self.rng.choices(names, weights=[table[n] for n in names])[0]

    def _call_id(self) -> str:
        if self.provider == "twilio":
            return "CA" + f"{self.rng.getrandbits(128):032x}"
        if self.provider == "ringcentral":
            return "s-" + f"{self.rng.getrandbits(128):032x}"
        if self.provider == "dialpad":
            return str(self.rng.randrange(10**15, 10**16))
        if self.provider == "vonage":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if self.provider == GVOICE:  # the notification e-mail's Message-ID
            return f"<{self.rng.getrandbits(96):024x}@google.com>"
        # Asterisk's uniqueid: the channel's creation time and a sequence number.
        start = datetime(self.day.date.year, self.day.date.month, self.day.date.day, tzinfo=UTC)
        return f"{int(start.timestamp()) + 28_800 + self.index * 100_000 + self._seq}.{self._seq + 1000}"

    def _align(self, at: float) -> float:
        """Calls of providers with 1-second timestamps start on a whole wall second."""
        return float(math.ceil(at)) if self.provider in SECOND_RESOLUTION else at

    def _missed_status(self) -> str:
        return {
            "twilio": self._weighted({"no-answer": 3, "busy": 1}),
            "ringcentral": self._weighted({"NoAnswer": 3, "TargetBusy": 1}),
            "dialpad": "missed",
            "vonage": self._weighted({"unanswered": 3, "busy": 1, "timeout": 1}),
            "cdr": self._weighted({"NO ANSWER": 3, "BUSY": 1}),
            GVOICE: "missed call",
        }[self.provider]

    def _call(
        self,
        at: float,
        caller: str,
        outcome: str,
        case: str | None = None,
        note: str = "",
        after_sms: bool = False,
        joins: bool = False,
    ) -> SimEvent:
        """An inbound call coming in at `at`. `joins`: a miss while the caller's case is open."""
        if outcome == VOICEMAIL and self.provider not in VOICEMAIL_SIGNAL:
            outcome = MISSED
        missed_status = self._missed_status()
        status = {MISSED: missed_status, ANSWERED: "answered", VOICEMAIL: "voicemail"}[outcome]
        if self.provider == "twilio" and outcome != MISSED:
            status = "completed"
        if self.provider == "cdr" and outcome != MISSED:
            status = "ANSWERED"
        duration = {MISSED: 0, ANSWERED: self.rng.randrange(45, 600), VOICEMAIL: self.rng.randrange(20, 90)}[outcome]
        forward = None
        if self.flow is not None:
            forward = self._forward(self.flow, outcome, missed_status, joins)
            status = forward.dial_status
            if forward.front == FORWARD_MACHINE:
                duration = self.rng.randrange(15, 60)  # the message the caller left on the cell phone
        self.counts["calls"] += 1
        self.counts[{MISSED: "missed", VOICEMAIL: "missed", ANSWERED: "answered"}[outcome]] += 1
        at = self._align(at)
        call_id, gv_event_id = self._call_id(), None
        row: tuple[str, ...] = ()
        if self.gvoice is not None:
            call_id, gv_event_id, row = self._gvoice_call(at, call_id, caller, outcome, duration)
        return self._event(
            at,
            CALL,
            caller=caller,
            called=self.did,
            call_id=call_id,
            outcome=outcome,
            status=status,
            duration_s=duration,
            case=case,
            note=note,
            after_sms=after_sms,
            forward=forward,
            event_id=gv_event_id,
            row=row,
        )

    def _gvoice_call(
        self, at: float, message_id: str, caller: str, outcome: str, duration: int
    ) -> tuple[str, str | None, tuple[str, ...]]:
        """(call id, event id, audit-log row) of a Google Voice call, the ids as the connector's
        own mapping derives them: from the e-mail's Message-ID, or from the CSV row."""
        if self.gvoice == GV_EMAIL:
            if outcome == ANSWERED:
                return message_id, None, ()  # Google Voice sends no e-mail for an answered call
            return message_id, gvoice_email_event_id(message_id, self.pid, caller, self.did, outcome), ()
        row = self._audit_row(at, caller, outcome, duration)
        ctx = audit_log.Practiced.of(self.p)
        mapped = audit_log.map_row(list(row), audit_log.header_map(list(GV_AUDIT_COLUMNS)), ctx, 0)
        if mapped.kind != "event":
            raise ValueError(f"the planned audit-log row of a {outcome} call does not map to an event: {mapped.reason}")
        return mapped.record["provider_call_id"], mapped.record["event_id"], row

    def _audit_row(self, at: float, caller: str, outcome: str, duration: int) -> tuple[str, ...]:
        """The Voice audit log's row of an inbound call (tests/vendor/google_voice/voice-audit-log.csv)."""
        when = datetime.fromtimestamp(self.day.wall_clock(at), ZoneInfo(self.p.time_zone))
        actor = f"frontdesk@{self.pid}.example.org"
        what = {MISSED: "missed a call from", VOICEMAIL: "received a voicemail from", ANSWERED: "received a call from"}
        length = f"{duration // 3600}:{duration // 60 % 60:02d}:{duration % 60:02d}"
        return (
            GV_AUDIT_EVENTS[outcome],
            f"{actor} {what[outcome]} {caller}",
            when.isoformat(timespec="seconds"),
            actor,
            caller,
            self.did,
            length,
            "",
            "",
        )

    def _forward(self, flow: CallFlow, outcome: str, missed_status: str, joins: bool) -> Forward:
        """What the front desk's side of a forwarded call does. A caller with an open case misses
        only by ringing out, in the usual order: the worker acts on a person answering at once
        (the AMD verdict `human`, or the parent's `completed` before any leg spoke), and a later
        miss would not undo that for the open case (docs/demo.md)."""
        rng, ring, desk = self.rng, flow.ring_seconds, flow.front_desk[0]
        pickup = rng.randrange(max(2, ring // 4), max(3, ring // 2))
        if outcome == ANSWERED:
            # With machine detection on, the AMD verdict `human` is what says a person answered.
            human = "human" if flow.machine_detection else None
            first = rng.random() < PARENT_FIRST_SHARE
            return Forward(
                FORWARD_ANSWERED,
                desk,
                pickup,
                "completed",
                answered_by=human,
                parent_first=first,
                machine_detection=flow.machine_detection,
            )
        if outcome == MISSED and not joins and flow.machine_detection and rng.random() < MACHINE_SHARE:
            late_pickup = rng.randrange(max(2, ring // 2), ring)  # a cell's voicemail answers before the Dial gives up
            verdict = self._weighted(ANSWERED_BY)
            return Forward(FORWARD_MACHINE, desk, late_pickup, "completed", answered_by=verdict)
        rang = ring if missed_status == "no-answer" else 1
        # The parent's completed may overtake the Dial action, except when it would itself say
        # "missed" (shorter than 5 s) or follow a miss of an open case (see above).
        swap = not joins and missed_status == "no-answer" and rng.random() < PARENT_FIRST_SHARE
        return Forward(
            FORWARD_MISSED, desk, rang, missed_status, parent_first=swap, machine_detection=flow.machine_detection
        )

    def _opened(self, call: SimEvent) -> float:
        """When the call's case opens (wall s): a forwarded call is a miss once its deciding callback came."""
        forward = call.forward
        if forward is None:
            return call.at
        callbacks = forward.callbacks(call.duration_s, call.outcome == VOICEMAIL)
        return call.at + self.day.wall(next(t for t, what in callbacks if what == forward.deciding))

    def _transcript(self, call: SimEvent, text: str) -> SimEvent | None:
        if not self._transcribes or call.outcome != VOICEMAIL:
            return None
        if self.gvoice == GV_EMAIL:  # the transcript is in the voicemail's e-mail
            self.events[self.events.index(call)] = replace(call, text=text)
            return None
        delay = self.day.wall(self.rng.uniform(60, 150))  # transcription takes a minute or two
        if call.forward is not None:  # Twilio transcribes the fallback's recording once it ends
            delay = self.day.wall(call.forward.ends_s(call.duration_s, voicemail=True) + self.rng.uniform(20, 60))
        elif self.hold > 0:
            delay = min(delay, 0.5 * self.hold)  # before the first response decides the scenario
        return self._event(
            call.at + delay,
            TRANSCRIPT,
            caller=call.caller,
            called=self.did,
            call_id=call.call_id,
            text=text,
            case=call.case,
            forward=call.forward,  # posted to the transcribeCallback URL the flow named
        )

    def _sms(self, at: float, caller: str, text: str, case: str, note: str) -> SimEvent:
        """The patient texts the number our SMS came from: Twilio's webhook, or at a Google
        Voice practice reading its e-mails, Google Voice's text e-mail (its Message-ID)."""
        by_email = self.gvoice == GV_EMAIL
        token = f"{self.rng.getrandbits(128):032x}"
        return self._event(
            at,
            SMS,
            provider=GVOICE if by_email else "twilio",
            caller=caller,
            called=self.p.sms_from or self.did,
            call_id=f"<{token}@google.com>" if by_email else "SM" + token,
            text=text,
            case=case,
            after_sms=True,
            note=note,
        )

    def _staff(self, at: float, case: CaseSpec, step: str, note: str) -> SimEvent:
        return self._event(
            at, STAFF, provider="console", caller=case.caller, called=self.did, step=step, case=case.case, note=note
        )

    def _answered_back(self, at: float, caller: str, case: str, note: str, after_sms: bool = False) -> SimEvent:
        """The caller calls again and reaches staff (replaces an ordinary answered call of that hour)."""
        if self._answered_slots:
            practice_s = at * self.day.speed
            nearest = min(range(len(self._answered_slots)), key=lambda i: abs(self._answered_slots[i] - practice_s))
            self._answered_slots.pop(nearest)
        return self._call(at, caller, ANSWERED, case=case, note=note, after_sms=after_sms)

    def _patient(self, phone: str, given: str, family: str) -> tuple[str, dict]:
        self._patient_seq += 1
        pid = f"{self.pid}-pat-{self._patient_seq:04d}"
        digits = phone[2:]
        resource = {
            "resourceType": "Patient",
            "id": pid,
            "active": True,
            "identifier": [{"system": f"urn:ringback:demo:{self.pid}:mrn", "value": f"MRN{self._patient_seq:06d}"}],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": f"({digits[:3]}) {digits[3:6]}-{digits[6:]}", "use": "mobile"}],
            "gender": self.rng.choice(("female", "male")),
            "birthDate": (
                f"{self.rng.randrange(1940, 2015)}-{self.rng.randrange(1, 13):02d}-{self.rng.randrange(1, 29):02d}"
            ),
            "_updated_ago_s": self.rng.randrange(30, 400) * 86_400,
        }
        return pid, resource

    def _appointment(
        self, patient_id: str, start_in_s: float, appointment_id: str | None = None, updated_ago_s: float | None = None
    ) -> dict:
        self._patient_seq += 1
        resource = {
            "resourceType": "Appointment",
            "id": appointment_id or f"{self.pid}-appt-{self._patient_seq:04d}",
            "status": "booked",
            "description": "Office visit",
            "participant": [
                {"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"},
                {
                    "actor": {"reference": f"Practitioner/{self.pid}-dr-{self.rng.randrange(1, 5)}"},
                    "status": "accepted",
                },
            ],
            "_start_in_s": round(start_in_s),
            "_minutes": 20,
        }
        if updated_ago_s is not None:
            resource["_updated_ago_s"] = round(updated_ago_s)
        return resource

    def _flag(self, patient_id: str) -> dict:
        _, code, display, priority = self.rng.choices(URGENT_FLAGS, weights=[f[0] for f in URGENT_FLAGS])[0]
        self._patient_seq += 1
        return {
            "resourceType": "Flag",
            "id": f"{self.pid}-flag-{self._patient_seq:04d}",
            "status": "active",
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                    "valueCodeableConcept": {
                        "coding": [{"system": "http://hl7.org/fhir/flag-priority-code", "code": priority}]
                    },
                }
            ],
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                            "code": "clinical",
                            "display": "Clinical",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "urn:ringback:demo:flag", "code": code, "display": display}],
                "text": display,
            },
            "subject": {"reference": f"Patient/{patient_id}"},
            "_updated_ago_s": self.rng.randrange(1, 20) * 3600,
        }

    def _ehr(
        self, at: float, caller: str, resources: list[dict], case: str | None, note: str, after_sms: bool
    ) -> SimEvent:
        return self._event(
            at,
            EHR,
            provider="fhir",
            caller=caller,
            resources=tuple(resources),
            case=case,
            after_sms=after_sms,
            note=note,
        )

    def _window_fraction(self, window: float, lo: float, hi: float, floor_practice_s: float = 120) -> float:
        """A delay inside a window (wall s): uniform between lo and hi of it, at least a couple of
        practice minutes (people need time to read a text)."""
        return max(self.rng.uniform(lo, hi) * window, self.day.wall(floor_practice_s))

    # ------------------------------------------------------------ the day
    def build(self) -> None:
        rng, site = self.rng, self.site
        n = site.calls if site.reference else max(1, round(site.calls * rng.uniform(0.75, 1.25)))
        missed = round(n * MISS_RATE) if site.reference else sum(rng.random() < MISS_RATE for _ in range(n))
        times = sorted(self._call_time() for _ in range(n))
        roles = self._roles(missed)
        repeats = roles.count("repeat")
        roles = [r for r in roles if r != "repeat"]
        rng.shuffle(roles)
        # Which calls are missed: weighted by the hour (Efraimidis-Spirakis sampling without replacement).
        keys = [rng.random() ** (1 / MISS_WEIGHT[self._hour(t) in PEAK_HOURS]) for t in times]
        missed_idx = sorted(sorted(range(n), key=lambda i: -keys[i])[: len(roles)])
        chosen = set(missed_idx)
        new_positions = [k for k, r in enumerate(roles) if r == NEW]
        repeaters = rng.sample(new_positions, min(repeats, len(new_positions)))
        in_hold = (
            new_positions[0]
            if (
                site.reference
                and self.hold >= 3
                and self._sees_answered
                and new_positions
                and new_positions[0] not in repeaters
            )
            else None
        )
        self._answered_slots = [times[i] for i in range(n) if i not in chosen]
        for _ in repeaters:  # the second miss of a repeat caller is one of the day's calls
            if self._answered_slots:
                self._answered_slots.pop(rng.randrange(len(self._answered_slots)))
        self._morning: tuple[list, list, list] = ([], [], [])
        for k, (i, role) in enumerate(zip(missed_idx, roles, strict=True)):
            at = self.day.wall(times[i])
            if role == "spam":
                self._call(
                    at,
                    self.p.blocked_numbers[0] if self.p.blocked_numbers else self._number(),
                    MISSED,
                    note="spam from a blocked number: ignored",
                )
            elif role == NEW:
                self._new_patient(at, repeat=k in repeaters, in_hold=k == in_hold)
            else:
                {URGENT: self._urgent, RESCHEDULE: self._reschedule, GENERAL: self._general}[role](at)
        self._ordinary_answered()
        self._junk()
        self._imports()
        self._preload()

    def _hour(self, practice_s: float) -> int:
        return DAY_OPEN_H + int(practice_s // 3600)

    def _call_time(self) -> float:
        hours = list(HOURLY)
        hour = self.rng.choices(hours, weights=[HOURLY[h] for h in hours])[0]
        return (hour - DAY_OPEN_H) * 3600 + self.rng.uniform(0, 3600)

    def _roles(self, missed: int) -> list[str]:
        if self.site.reference:
            if self.site.calls == REFERENCE_CALLS:
                return [r for r, k in REFERENCE_MIX.items() for _ in range(k)]
            spam = 1 if missed >= 3 else 0
            repeat = 1 if missed >= 5 else 0
            cases = missed - spam - repeat
            weights = CASE_WEIGHTS
            total = sum(weights.values())
            shares = {s: cases * w / total for s, w in weights.items()}
            counts = {s: int(v) for s, v in shares.items()}
            for s in sorted(shares, key=lambda s: -(shares[s] - counts[s]))[: cases - sum(counts.values())]:
                counts[s] += 1
            return ["spam"] * spam + ["repeat"] * repeat + [s for s, k in counts.items() for _ in range(k)]
        roles = []
        if missed >= 3 and self.rng.random() < 0.8:
            roles.append("spam")
        if missed >= 5 and self.rng.random() < 0.5:
            roles.append("repeat")
        while len(roles) < missed:
            roles.append(self._weighted(CASE_WEIGHTS))
        return roles

    def _case(
        self,
        scenario: str,
        caller: str,
        call: SimEvent,
        behaviour: str,
        sms_steps: tuple[str, ...],
        final: str,
        channel: str | None = None,
        note: str = "",
    ) -> CaseSpec:
        case = CaseSpec(
            case=call.case or "",
            practice_id=self.pid,
            caller=caller,
            scenario=scenario,
            behaviour=behaviour,
            missed_at=call.at,
            opening_event_id=call.opening_event_id or "",
            sms_steps=sms_steps,
            final_state=final,
            channel=channel,
            note=note,
        )
        self.cases.append(case)
        return case

    def _label(self) -> str:
        return f"{self.pid}#{len(self.cases) + 1:02d}"

    # ------------------------------------------------------------ new patient
    def _new_patient(self, at: float, repeat: bool = False, in_hold: bool = False) -> CaseSpec:
        rng, label = self.rng, self._label()
        caller = self._number()
        voicemail = rng.random() < BEHAVIOUR.new_patient_voicemail
        call = self._call(at, caller, VOICEMAIL if voicemail else MISSED, case=label, note="new patient")
        if call.outcome == VOICEMAIL:
            self._transcript(call, rng.choice(NEW_PATIENT_VOICEMAILS))
        behaviour = self._weighted(BEHAVIOUR.new_patient)
        staff_done = rng.random() < BEHAVIOUR.new_patient_staff_calls_back
        if in_hold:  # gets through during the hold: the first SMS is cancelled (cancel if answered)
            case = self._case(NEW, caller, call, "through_in_hold", (), "SUPPRESSED")
            back = self._opened(call) + 0.3 * self.hold
            self._answered_back(back, caller, label, "calls again at once and gets through")
            return case
        if repeat:  # misses twice, then waits: the repeat joins the case, no reaction before the 2 h gate
            behaviour = "silent"
        react = call.at + self._window_fraction(self.followup, 0.05, 0.5)
        steps: tuple[str, ...] = (recipes.FIRST_SMS,)
        if behaviour == "reply":
            # A person reads the reply (a task); nobody books in the plan: a response, not a conversion.
            case = self._case(NEW, caller, call, behaviour, steps, "EXPIRED", note="replied: a task, no booking")
            self._sms(react, caller, rng.choice(REPLIES), label, "replies to the booking SMS")
        elif behaviour == "book":
            case = self._case(NEW, caller, call, behaviour, steps, "CONVERTED", "booking")
            given, family = self._name()
            pid, patient = self._patient(caller, given, family)
            patient["_updated_ago_s"] = 0
            appt = self._appointment(pid, rng.randrange(1, 8) * DAY_S + rng.randrange(0, 8) * 3600, updated_ago_s=0)
            self._ehr(react, caller, [patient, appt], label, "books a first visit with the link (FHIR)", after_sms=True)
        elif behaviour == "calls_back" and not self._sees_answered:
            # Gets through, but Google Voice e-mails nothing for an answered call: the case goes on
            # as a silent one's (second SMS at the 2 h gate, the callback task never done).
            case = self._case(
                NEW,
                caller,
                call,
                "calls_back_unseen",
                steps + (recipes.SECOND_SMS,),
                "ESCALATED_AND_CLOSED",
                note="got through, but Google Voice sends no signal for an answered call",
            )
            self._answered_back(react, caller, label, "calls again and gets through (not seen)", after_sms=True)
        elif behaviour == "calls_back":
            # Reached staff after the SMS: a response (no follow-up), not a conversion without a booking.
            case = self._case(NEW, caller, call, behaviour, steps, "EXPIRED", note="got through: no booking")
            self._answered_back(react, caller, label, "calls again and reaches the front desk", after_sms=True)
        elif behaviour in ("stop", "stop_sentence"):
            sentence = behaviour == "stop_sentence"
            sms_steps = steps + ((recipes.OPTOUT_CONFIRMATION,) if sentence else ())
            case = self._case(
                NEW,
                caller,
                call,
                behaviour,
                sms_steps,
                "ESCALATED_AND_CLOSED",
                note="opted out: the 2 h gate makes a callback task instead of a second SMS",
            )
            self._sms(react, caller, "Please stop texting me" if sentence else "STOP", label, "opts out")
        else:
            behaviour = "silent_staff" if staff_done else "silent"
            case = self._case(
                NEW,
                caller,
                call,
                behaviour,
                steps + (recipes.SECOND_SMS,),
                "CONVERTED" if staff_done else "ESCALATED_AND_CLOSED",
                "callback" if staff_done else None,
            )
            if staff_done:
                at_done = call.at + self.followup + self._window_fraction(self.expiry - self.followup, 0.1, 0.6)
                self._staff(at_done, case, recipes.CALLBACK_TASK, "coordinator calls back after the 2 h gate")
        if repeat:
            self._repeat(case)
        return case

    def _repeat(self, case: CaseSpec) -> None:
        """The same caller misses again while the case is open: the call joins it."""
        at = case.missed_at + self._window_fraction(self.followup, 0.02, 0.2)
        note = "calls again, missed again: joins the case"
        self._call(at, case.caller, MISSED, case=case.case, note=note, joins=True)
        case.calls += 1

    # ------------------------------------------------------------ urgent existing patient
    def _urgent(self, at: float) -> CaseSpec:
        rng, label = self.rng, self._label()
        caller = self._number()
        given, family = self._name()
        pid, patient = self._patient(caller, given, family)
        if not any("communication" in p for p in self._morning[0]):  # a practice's first: the Spanish ack
            patient["communication"] = [SPANISH_PREFERRED]
        self._morning[0].append(patient)
        self._morning[1].append(self._flag(pid))
        voicemail = rng.random() < BEHAVIOUR.urgent_voicemail
        call = self._call(at, caller, VOICEMAIL if voicemail else MISSED, case=label, note="urgent existing patient")
        if call.outcome == VOICEMAIL:
            self._transcript(call, rng.choice(URGENT_VOICEMAILS))
        staff = self._weighted(BEHAVIOUR.urgent_staff)
        final, channel = ("ESCALATED_AND_CLOSED", None) if staff == "never" else ("CONVERTED", "callback")
        case = self._case(URGENT, caller, call, f"nurse_{staff}", (recipes.ACK_SMS,), final, channel)
        if staff == "in_time":
            self._staff(
                call.at + self._window_fraction(self.escalation, 0.1, 0.6, 60),
                case,
                recipes.CLINICAL_TASK,
                "nurse calls back within the 45 min",
            )
        elif staff == "late":
            self._staff(
                call.at + self._window_fraction(self.escalation, 1.25, 2.0, 60),
                case,
                recipes.CLINICAL_TASK,
                "nurse calls back after the manager alert",
            )
        return case

    # ------------------------------------------------------------ reschedule request
    def _reschedule(self, at: float) -> CaseSpec:
        if not self._transcribes:
            return self._general(at, note="reschedule voicemail, but this phone system sends no transcript")
        rng, label = self.rng, self._label()
        caller = self._number()
        given, family = self._name()
        pid, patient = self._patient(caller, given, family)
        when = self._weighted(BEHAVIOUR.reschedule_appointment)
        start_in = {
            "within_48h": rng.uniform(0.6, 1.8),
            "within_14d": rng.uniform(3, 13),
            "later": rng.uniform(15, 40),
        }[when] * DAY_S
        appt = self._appointment(pid, start_in, updated_ago_s=rng.randrange(7, 40) * DAY_S)
        self._morning[0].append(patient)
        self._morning[2].append(appt)
        call = self._call(at, caller, VOICEMAIL, case=label, note="reschedule voicemail")
        self._transcript(call, rng.choice(RESCHEDULE_VOICEMAILS))
        if when == "later":  # no appointment within 14 days: a callback task, no link
            done = rng.random() < BEHAVIOUR.reschedule_callback_done
            case = self._case(
                RESCHEDULE,
                caller,
                call,
                "callback_done" if done else "callback_open",
                (),
                "CONVERTED" if done else "EXPIRED",
                "callback" if done else None,
            )
            if done:
                self._staff(
                    call.at + self._window_fraction(self.reschedule_gate, 0.1, 0.7),
                    case,
                    recipes.CALLBACK_TASK,
                    "scheduling calls back",
                )
            return case
        moves = rng.random() < BEHAVIOUR.reschedule_moves
        if moves:
            case = self._case(RESCHEDULE, caller, call, "moves", (recipes.RESCHEDULE_SMS,), "CONVERTED", "reschedule")
            moved = dict(appt, _start_in_s=round(start_in + rng.randrange(2, 8) * DAY_S), _updated_ago_s=0)
            self._ehr(
                call.at + self._window_fraction(self.reschedule_gate, 0.05, 0.5),
                caller,
                [moved],
                label,
                "moves the appointment with the link (FHIR)",
                after_sms=True,
            )
            return case
        protected = when == "within_48h"
        done = protected and rng.random() < BEHAVIOUR.reschedule_protect_done
        final = "CONVERTED" if done else ("ESCALATED_AND_CLOSED" if protected else "EXPIRED")
        case = self._case(
            RESCHEDULE,
            caller,
            call,
            "protect_done" if done else ("protect_open" if protected else "no_move"),
            (recipes.RESCHEDULE_SMS,),
            final,
            "callback" if done else None,
        )
        if done:
            self._staff(
                call.at + self.reschedule_gate + self._window_fraction(self.expiry - self.reschedule_gate, 0.1, 0.6),
                case,
                recipes.PROTECT_TASK,
                "scheduling protects the slot after the 4 h gate",
            )
        return case

    # ------------------------------------------------------------ general inquiry
    def _general(self, at: float, note: str = "") -> CaseSpec:
        rng, label = self.rng, self._label()
        caller = self._number()
        given, family = self._name()
        pid, patient = self._patient(caller, given, family)
        self._morning[0].append(patient)
        voicemail = rng.random() < BEHAVIOUR.general_voicemail or bool(note)
        call = self._call(at, caller, VOICEMAIL if voicemail else MISSED, case=label, note=note or "general inquiry")
        if call.outcome == VOICEMAIL:
            self._transcript(call, rng.choice(GENERAL_VOICEMAILS))
        what = self._weighted(BEHAVIOUR.general)
        final, channel = {
            "calls_back": ("EXPIRED", None),  # reached the office: a response, not a conversion
            "staff": ("CONVERTED", "callback"),
            "nothing": ("EXPIRED", None),
        }[what]
        behaviour = what
        if what == "calls_back" and not self._sees_answered:  # gets through; Google Voice e-mails nothing
            final, channel, behaviour = "EXPIRED", None, "calls_back_unseen"
        case = self._case(GENERAL, caller, call, behaviour, (), final, channel, note=note)
        later = call.at + self._window_fraction(self.expiry, 0.05, 0.5, 600)
        if what == "calls_back":
            self._answered_back(later, caller, label, "calls again and reaches the office")
        elif what == "staff":
            self._staff(later, case, recipes.ADMIN_TASK, "admin team calls back")
        return case

    # ------------------------------------------------------------ everything else
    def _ordinary_answered(self) -> None:
        for practice_s in self._answered_slots:
            known = self.rng.random() < KNOWN_SHARE_OF_ANSWERED
            caller = self._number()
            if known:
                given, family = self._name()
                _, patient = self._patient(caller, given, family)
                self._morning[0].append(patient)
            self._call(
                self.day.wall(practice_s),
                caller,
                ANSWERED,
                note="answered: an existing patient" if known else "answered: a new caller",
            )

    def _junk(self) -> None:
        rng, length = self.rng, self.day.length_s

        def when() -> float:
            return rng.uniform(0.05, 0.95) * length

        if self.provider == "cdr":
            self._event(when(), JUNK, junk="bad_cdr_line", note="a CDR line cut in half: dead letter")
            return
        if self.provider == GVOICE:
            self._gvoice_junk(when())
            self._redelivery()
            return
        self._event(
            when(),
            JUNK,
            caller=self._number(),
            called=self.did,
            call_id=self._call_id(),
            junk="forged",
            outcome=MISSED,
            status=self._missed_status(),
            expect_status=403,
            note="a forged signature: refused",
        )
        self._event(
            when(),
            JUNK,
            caller=self._number(),
            called=f"+1555555{self.index % 10000:04d}",
            call_id=self._call_id(),
            junk="unknown_number",
            outcome=MISSED,
            status=self._missed_status(),
            expect_status=404,
            note="a number no practice owns",
        )
        self._event(
            when(),
            JUNK,
            caller="anonymous",
            called=self.did,
            call_id=self._call_id(),
            junk="malformed",
            outcome=MISSED,
            status=self._missed_status(),
            # RingCentral is answered 200 once dead-lettered: it blacklists subscriptions that collect 4xx
            expect_status=200 if self.provider == "ringcentral" else 400,
            note="a withheld caller id: nobody to call back (dead letter)",
        )
        self._redelivery()

    def _redelivery(self) -> None:
        """The input that made a case's call a miss, again: same event id, dropped downstream
        (a webhook retried; a notification e-mail sent twice; a row in two audit-log exports)."""
        missed_calls = [e for e in self.events if e.kind == CALL and e.outcome == MISSED and e.case]
        if missed_calls:
            original = self.rng.choice(missed_calls)
            self._event(
                original.at + self._window_fraction(self.followup, 0.01, 0.05, 30),
                JUNK,
                caller=original.caller,
                called=original.called,
                call_id=original.call_id,
                outcome=original.outcome,
                status=original.status,
                junk="redelivery",
                case=original.case,
                forward=original.forward,
                event_id=original.event_id,
                row=original.row,
                note="the provider sends the same call again: same event id, dropped downstream",
            )

    def _gvoice_junk(self, at: float) -> None:
        if self.gvoice == GV_EMAIL:
            self._event(
                at,
                JUNK,
                call_id=self._call_id(),
                junk="unreadable",
                note="a Google Voice e-mail that is no call or text notification: dead letter",
            )
            return
        caller, actor = self._number(), f"frontdesk@{self.pid}.example.org"
        row = ("Missed call", f"{actor} missed a call", "yesterday afternoon", actor, caller, self.did, "", "", "")
        self._event(at, JUNK, junk="bad_row", row=row, note="an audit-log row whose date is no date: dead letter")

    def _imports(self) -> None:
        """The audit-log exports, every GV_BATCH_S practice seconds until one came after every row
        (a row whose event waited for an SMS may miss the batch of its time: the next takes it)."""
        if self.gvoice != GV_AUDIT:
            return
        last = max((e.at for e in self.events if e.row), default=0.0)
        step, k = self.day.wall(GV_BATCH_S), 1
        while (k - 1) * step <= last + step:
            self._event(k * step, IMPORT, note="the Voice audit log since the last export, imported")
            k += 1

    def _preload(self) -> None:
        patients, flags, appointments = self._morning
        # Patients who do not call today (the practice's panel is larger than one day's callers).
        for _ in range(10):
            given, family = self._name()
            _, patient = self._patient(self._number(), given, family)
            patients.append(patient)
        resources = patients + flags + appointments
        self._seq += 1
        self.preload.append(
            SimEvent(
                at=0.0,
                seq=self._seq,
                kind=EHR,
                practice_id=self.pid,
                provider="fhir",
                resources=tuple(resources),
                note="the EHR in the morning",
            )
        )
