"""The KPIs of the weekly report (`ringback report`), per practice and in total:
the three weekly KPIs (share answered within 15 min, responses converted within 24 h,
appointments recovered) and what explains them. Reading the topic: `reader.py`;
the terminal table: `text.py`; the HTML page: `html.py`.

The computation is a pure function of the outcome records (`build_report`, or
`ReportBuilder` to feed them one at a time: memory grows with the cases of the
period, not with the records). Definitions (also in docs/report.md):

* A case belongs to the period when its missed call (`missed_at`) is in
  [since, until). Everything that happened to it up to `as_of` counts, even
  after `until` (a conversion on Monday of a call on Sunday).
* The state of a case is its latest CASE record: a `final` record wins over any
  other, then the later `at`, then the later state (OPEN < RESPONDED < ESCALATED
  < the closing states). Fields that are set once are merged over all its
  records so that an out-of-order or partial record cannot unset them:
  `first_response_at`, `converted_at` and `responded_at` (the earliest),
  `escalations` (the highest), `converted` and `responded` (any record).
* A conversion is an appointment booked, rescheduled or confirmed, or a callback
  that reached the patient (`CONVERSION_CHANNELS`). The caller's SMS reply or call
  that reached staff is a *response* (`responded`): older records that called those
  conversions (`conversion_channel` sms_reply / answered_call; cancellation) are read
  as not converted, the first two as responded at `converted_at`.
* A rate counts a case in its denominator only once the case's result for that
  rate is decided; undecided ("pending") cases are reported beside the rate.
* ACTION records (sink results) are counted per action id (latest by `at`,
  then the later result) by kind and result; they never count as cases.

The records hold no phone numbers or names, and neither does the report.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import TypedDict

log = logging.getLogger(__name__)

ANSWER_TARGET_MS = 15 * 60 * 1000
CONVERSION_WINDOW_MS = 24 * 3600 * 1000

SCENARIOS = ("NEW_PATIENT", "URGENT_EXISTING", "RESCHEDULE", "GENERAL_INQUIRY")
STATES = ("OPEN", "RESPONDED", "ESCALATED", "CONVERTED", "ESCALATED_AND_CLOSED", "EXPIRED", "SUPPRESSED")
CLOSING_STATES = ("CONVERTED", "ESCALATED_AND_CLOSED", "EXPIRED", "SUPPRESSED")
_STATE_RANK = {"OPEN": 0, "RESPONDED": 1, "ESCALATED": 2, **{s: 3 for s in CLOSING_STATES}}
# An action's later result wins over an earlier one at the same `at`.
_RESULT_RANK = {
    "DEFERRED": 0,
    "SENT": 1,
    "SUPPRESSED": 2,
    "DELIVERED": 3,
    "UNDELIVERED": 3,
    "FAILED": 3,
    "DEAD_LETTERED": 3,
}
APPOINTMENT_CHANNELS = ("booking", "reschedule", "confirmation")
CONVERSION_CHANNELS = (*APPOINTMENT_CHANNELS, "callback")
# What older records (before `responded`) called conversions and today are not.
LEGACY_RESPONSE_CHANNELS = ("sms_reply", "answered_call")
NOT_CONVERSIONS = (*LEGACY_RESPONSE_CHANNELS, "cancellation")

# (label, upper bound in seconds, inclusive); the last has none.
LATENCY_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("<=1 min", 60),
    ("1-5 min", 300),
    ("5-15 min", 900),
    ("15-60 min", 3600),
    ("1-4 h", 4 * 3600),
    (">4 h", None),
)


class ManualBaseline(TypedDict):
    new_patient_recovery_share: float
    new_patient_recovery_range: list[float]
    time_to_first_response_s_range: list[int]
    call_to_booking_mean_s: float


class PublishedBaseline(TypedDict):
    new_patient_recovery_range: list[float]
    time_to_first_response_s_range: list[int]


class Baseline(TypedDict):
    manual: ManualBaseline
    automated_published: PublishedBaseline


# What manual call-log review achieves, and published automated workflows (docs/product.md).
BASELINE: Baseline = {
    "manual": {
        "new_patient_recovery_share": 0.40,  # "about 40 %" (35-45 %)
        "new_patient_recovery_range": [0.35, 0.45],
        "time_to_first_response_s_range": [4 * 3600, 6 * 3600],  # "4-6 h"
        "call_to_booking_mean_s": 6.2 * 3600,  # "6.2 h average call-to-booking time"
    },
    "automated_published": {
        "new_patient_recovery_range": [0.65, 0.80],
        "time_to_first_response_s_range": [8 * 60, 15 * 60],
    },
}

DEFINITIONS = {
    "period": "cases whose missed call (missed_at) is in [since, until); what happened to them up to as_of counts",
    "answered_within_15min": "cases with a first response (SMS or task) at most 15 min after the missed call / "
    "cases that needed a response: all but the SUPPRESSED ones (the caller reached "
    "staff first) and those converted before any response; a case with no response "
    "yet is pending until 15 min have passed or it closes",
    "conversion": "an appointment booked, rescheduled or confirmed (EHR) after the missed call, or a callback "
    "task completed with the patient reached; a caller's SMS reply or call that reached staff is a response, "
    "not a conversion (older records saying so are read that way)",
    "converted_within_24h": "cases that converted at most 24 h after their first response / cases with a first "
    "response; pending while not converted, not closed and within the 24 h",
    "appointments_recovered": "converted cases whose conversion_channel is booking, reschedule or confirmation",
    "caller_responded": "cases whose caller responded (SMS reply, or a call that reached staff after the first "
    "response) / cases with a first response",
    "time_to_first_response": "first_response_at - missed_at over cases with a first response; median and p90 "
    "by linear interpolation between ranks (numpy default, Excel PERCENTILE.INC)",
    "new_patient_recovery": "converted NEW_PATIENT cases / NEW_PATIENT cases (SUPPRESSED included); pending "
    "while not converted and not closed",
    "call_to_booking": "converted_at - missed_at over the appointments recovered (mean, median)",
    "escalations": "sum of escalations (gates fired) of the cases; escalated_cases: cases with at least one "
    "or in state ESCALATED / ESCALATED_AND_CLOSED",
    "open_cases": "cases whose latest record is not final",
}


class ReportError(RuntimeError):
    """The report cannot be made (broker unreachable, bad period, ...): the message says why."""


# ---------------------------------------------------------------- time helpers
def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """`YYYY-MM-DD` (00:00 UTC that day) or an ISO 8601 time (UTC when it has no
    offset) to epoch ms."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ReportError(f"not a date or time: {text!r} (use 2026-11-19 or 2026-11-19T08:00:00-06:00)") from None
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def quantile(values_ms: list[int], q: Fraction) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), exact, in seconds."""
    if not values_ms:
        return None
    ordered = sorted(values_ms)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    value = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return float(Fraction(value) / 1000)


# ---------------------------------------------------------------- per-case state
@dataclass
class _Case:
    case_id: str
    practice_id: str
    scenario: str
    state: str
    final: bool
    key: tuple  # (final, at, state rank) of the record the state comes from
    missed_at: int
    first_response_at: int | None
    latency_ms: int | None
    escalations: int
    converted: bool
    converted_at: int | None
    conversion_key: tuple | None  # key of the latest converted record
    conversion_channel: str | None
    responded_at: int | None = None
    responded: bool = False
    legacy: bool = False  # an older record called a response (or a cancellation) a conversion

    @classmethod
    def of(cls, r: dict) -> _Case:
        key = _case_key(r)
        case = cls(
            r["case_id"], r["practice_id"], r["scenario"], r["state"], bool(r["final"]), key, r["missed_at"],
            None, None, 0, False, None, None, None,
        )  # fmt: skip
        case.merge(r)
        return case

    def merge(self, r: dict) -> None:
        key = _case_key(r)
        if key > self.key:
            self.key, self.state, self.final = key, r["state"], bool(r["final"])
            self.scenario, self.practice_id = r["scenario"], r["practice_id"]
        self.missed_at = min(self.missed_at, r["missed_at"])
        if r.get("first_response_at") is not None:
            self.first_response_at = _min(self.first_response_at, r["first_response_at"])
        if self.latency_ms is None:
            self.latency_ms = r.get("response_latency_ms")
        self.escalations = max(self.escalations, r.get("escalations") or 0)
        channel = r.get("conversion_channel")
        if r.get("converted") and channel in NOT_CONVERSIONS:
            self.legacy = True
            if channel in LEGACY_RESPONSE_CHANNELS:
                self._responded(r.get("converted_at"))
        elif r.get("converted"):
            self.converted = True
            if r.get("converted_at") is not None:
                self.converted_at = _min(self.converted_at, r["converted_at"])
            if self.conversion_key is None or key > self.conversion_key:
                self.conversion_key = key
                self.conversion_channel = channel or self.conversion_channel
        if r.get("responded"):
            self._responded(r.get("responded_at"))

    def _responded(self, at: int | None) -> None:
        self.responded = True
        if at is not None:
            self.responded_at = _min(self.responded_at, at)

    def response_ms(self) -> int | None:
        """Missed call to first response in ms (never negative), or None."""
        if self.first_response_at is not None:
            return max(0, self.first_response_at - self.missed_at)
        if self.latency_ms is not None:
            return max(0, self.latency_ms)
        return None


def _case_key(r: dict) -> tuple:
    return (bool(r["final"]), r["at"], _STATE_RANK.get(r["state"], 0))


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


# ---------------------------------------------------------------- the computation
class ReportBuilder:
    """Feed outcome records in any order (`add`), then take the report (`result`)."""

    def __init__(
        self, *, since_ms: int | None = None, until_ms: int | None = None, as_of_ms: int, practice_id: str | None = None
    ) -> None:
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise ReportError(f"until ({iso(until_ms)}) must be after since ({iso(since_ms)})")
        self.since_ms, self.until_ms, self.as_of_ms = since_ms, until_ms, as_of_ms
        self.practice_id = practice_id
        self.cases: dict[str, _Case] = {}
        self.actions: dict[str, tuple[tuple, str, str, str]] = {}  # id -> (key, practice, kind, result)
        self.counts: Counter[str] = Counter()

    def _in_period(self, missed_at: int) -> bool:
        return (self.since_ms is None or missed_at >= self.since_ms) and (
            self.until_ms is None or missed_at < self.until_ms
        )

    def add(self, r: dict) -> None:
        self.counts["records"] += 1
        if self.practice_id is not None and r["practice_id"] != self.practice_id:
            self.counts["other_practices"] += 1
            return
        if not self._in_period(r["missed_at"]):
            self.counts["outside_period"] += 1
            return
        if r.get("record_type", "CASE") == "ACTION":
            self.counts["action"] += 1
            action_id = r.get("action_id") or f"{r['case_id']}:?"
            key = (r["at"], _RESULT_RANK.get(r.get("action_result") or "", 0))
            seen = self.actions.get(action_id)
            if seen is None or key > seen[0]:
                self.actions[action_id] = (
                    key,
                    r["practice_id"],
                    r.get("action_kind") or "UNKNOWN",
                    r.get("action_result") or "UNKNOWN",
                )
            return
        self.counts["case"] += 1
        case = self.cases.get(r["case_id"])
        if case is None:
            self.cases[r["case_id"]] = _Case.of(r)
        else:
            case.merge(r)

    def result(self) -> dict:
        by_practice: dict[str, list[_Case]] = defaultdict(list)
        for case in self.cases.values():
            by_practice[case.practice_id].append(case)
        actions_by_practice: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for _, practice, kind, result in self.actions.values():
            actions_by_practice[practice].append((kind, result))
        practices = sorted(set(by_practice) | set(actions_by_practice))
        return {
            "report": "ringback KPI report",
            "period": {"since": iso(self.since_ms), "until": iso(self.until_ms), "as_of": iso(self.as_of_ms)},
            "practice_filter": self.practice_id,
            "records": {k: self.counts[k] for k in ("records", "case", "action", "outside_period", "other_practices")},
            "total": _metrics(
                list(self.cases.values()), [(k, r) for _, _, k, r in self.actions.values()], self.as_of_ms
            ),
            "practices": {
                p: _metrics(by_practice.get(p, []), actions_by_practice.get(p, []), self.as_of_ms) for p in practices
            },
            "baseline": BASELINE,
            "definitions": DEFINITIONS,
        }


def build_report(
    records: Iterable[dict],
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    as_of_ms: int,
    practice_id: str | None = None,
) -> dict:
    """Outcome records (decoded, any order) in, report dict out. Pure."""
    builder = ReportBuilder(since_ms=since_ms, until_ms=until_ms, as_of_ms=as_of_ms, practice_id=practice_id)
    for r in records:
        builder.add(r)
    return builder.result()


def _rate(count: int, of: int, **extra: int) -> dict:
    return {"count": count, "of": of, "share": (count / of) if of else None, **extra}


def _metrics(cases: list[_Case], actions: list[tuple[str, str]], as_of_ms: int) -> dict:
    answered = of_answered = pending_answer = no_response_needed = 0
    responded = of_responded = legacy = 0
    converted24 = of_converted = pending_conversion = 0
    recovered = of_new = pending_new = 0
    latencies: list[int] = []
    to_booking: list[int] = []
    appointments = escalations = escalated = open_cases = 0
    by_scenario_state: dict[str, Counter] = defaultdict(Counter)
    buckets: Counter[str] = Counter()

    for c in cases:
        by_scenario_state[c.scenario][c.state] += 1
        open_cases += not c.final
        escalations += c.escalations
        escalated += c.escalations > 0 or c.state in ("ESCALATED", "ESCALATED_AND_CLOSED")
        latency = c.response_ms()

        # KPI 1: answered within 15 min.
        if c.state == "SUPPRESSED" or (c.converted and latency is None):
            no_response_needed += 1
        elif latency is not None:
            of_answered += 1
            answered += latency <= ANSWER_TARGET_MS
        elif not c.final and as_of_ms - c.missed_at < ANSWER_TARGET_MS:
            pending_answer += 1
        else:
            of_answered += 1  # no response, and 15 min are over (or the case closed)

        if latency is not None:
            latencies.append(latency)
            for label, bound in LATENCY_BUCKETS:
                if bound is None or latency <= bound * 1000:
                    buckets[label] += 1
                    break

        legacy += c.legacy
        if latency is not None:
            of_responded += 1
            responded += c.responded

        # KPI 2: responses converting within 24 h.
        if latency is not None:
            responded_at = c.first_response_at if c.first_response_at is not None else c.missed_at + latency
            if c.converted and c.converted_at is not None:
                of_converted += 1
                converted24 += c.converted_at - responded_at <= CONVERSION_WINDOW_MS
            elif c.converted or c.final or as_of_ms - responded_at >= CONVERSION_WINDOW_MS:
                of_converted += 1  # decided: converted at an unknown time, closed, or the 24 h are over
            else:
                pending_conversion += 1

        # KPI 3 and call-to-booking time.
        if c.converted and c.conversion_channel in APPOINTMENT_CHANNELS:
            appointments += 1
            if c.converted_at is not None:
                to_booking.append(max(0, c.converted_at - c.missed_at))

        if c.scenario == "NEW_PATIENT":
            if c.converted or c.final:
                of_new += 1
                recovered += c.converted
            else:
                pending_new += 1

    # Known symbols in their order, then any a newer schema added.
    scenarios = [*[s for s in SCENARIOS if s in by_scenario_state], *sorted(set(by_scenario_state) - set(SCENARIOS))]
    seen_states = {st for counter in by_scenario_state.values() for st in counter}
    states = [*[s for s in STATES if s in seen_states], *sorted(seen_states - set(STATES))]
    action_counts: dict[str, Counter] = defaultdict(Counter)
    for kind, result in actions:
        action_counts[kind][result] += 1

    return {
        "cases": len(cases),
        "open_cases": open_cases,
        "answered_within_15min": _rate(
            answered, of_answered, pending=pending_answer, no_response_needed=no_response_needed
        ),
        "converted_within_24h": _rate(converted24, of_converted, pending=pending_conversion),
        "appointments_recovered": appointments,
        "caller_responded": _rate(responded, of_responded),
        "older_conversions_read_as_responses": legacy,
        "time_to_first_response_s": {
            "count": len(latencies),
            "median": quantile(latencies, Fraction(1, 2)),
            "p90": quantile(latencies, Fraction(9, 10)),
        },
        "new_patient_recovery": _rate(recovered, of_new, pending=pending_new),
        "call_to_booking_s": {
            "count": len(to_booking),
            "mean": float(Fraction(sum(to_booking), len(to_booking)) / 1000) if to_booking else None,
            "median": quantile(to_booking, Fraction(1, 2)),
        },
        "escalations": escalations,
        "escalated_cases": escalated,
        "cases_by_scenario": {s: sum(by_scenario_state[s].values()) for s in scenarios},
        "cases_by_state": {st: n for st in states if (n := sum(by_scenario_state[s][st] for s in scenarios))},
        "cases_by_scenario_state": {
            s: {st: by_scenario_state[s][st] for st in states if by_scenario_state[s][st]} for s in scenarios
        },
        "first_response_buckets": {label: buckets[label] for label, _ in LATENCY_BUCKETS},
        "actions": {k: dict(sorted(v.items())) for k, v in sorted(action_counts.items())},
    }
