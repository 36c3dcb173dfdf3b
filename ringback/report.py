"""The weekly KPI report (`ringback report`): read the outcome topic, compute per
practice and in total the KPIs of SPEC section 7, print a table, optionally write
JSON and a self-contained HTML page with charts (`ringback/report_html.py`).

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
  `first_response_at` and `converted_at` (the earliest), `escalations` (the
  highest), `converted` (any record).
* A rate counts a case in its denominator only once the case's result for that
  rate is decided; undecided ("pending") cases are reported beside the rate.
* ACTION records (sink results) are counted per action id (latest by `at`,
  then the later result) by kind and result; they never count as cases.

The records hold no phone numbers or names, and neither does the report.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from fractions import Fraction
from pathlib import Path

log = logging.getLogger(__name__)

ANSWER_TARGET_MS = 15 * 60 * 1000
CONVERSION_WINDOW_MS = 24 * 3600 * 1000
# offsets_for_times seeks to the first record produced at or after `since` minus this:
# a record is produced after its missed call, but clocks of the phone systems and
# ours may disagree a little.
SEEK_MARGIN_MS = 3600 * 1000

SCENARIOS = ("NEW_PATIENT", "URGENT_EXISTING", "RESCHEDULE", "GENERAL_INQUIRY")
STATES = ("OPEN", "RESPONDED", "ESCALATED", "CONVERTED", "ESCALATED_AND_CLOSED", "EXPIRED", "SUPPRESSED")
CLOSING_STATES = ("CONVERTED", "ESCALATED_AND_CLOSED", "EXPIRED", "SUPPRESSED")
_STATE_RANK = {"OPEN": 0, "RESPONDED": 1, "ESCALATED": 2, **{s: 3 for s in CLOSING_STATES}}
# An action's later result wins over an earlier one at the same `at`.
_RESULT_RANK = {"DEFERRED": 0, "SENT": 1, "SUPPRESSED": 2, "DELIVERED": 3, "UNDELIVERED": 3,
                "FAILED": 3, "DEAD_LETTERED": 3}
APPOINTMENT_CHANNELS = ("booking", "reschedule")

# (label, upper bound in seconds, inclusive); the last has none.
LATENCY_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("<=1 min", 60), ("1-5 min", 300), ("5-15 min", 900), ("15-60 min", 3600),
    ("1-4 h", 4 * 3600), (">4 h", None))

# SPEC section 1: what manual call-log review achieves, and published automated workflows.
BASELINE = {
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
    "converted_within_24h": "cases that converted at most 24 h after their first response / cases with a first "
                            "response; pending while not converted, not closed and within the 24 h",
    "appointments_recovered": "converted cases whose conversion_channel is booking or reschedule",
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
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except ValueError:
        raise ReportError(f"not a date or time: {text!r} (use 2026-11-19 or 2026-11-19T08:00:00-06:00)") from None
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def human_duration(seconds: float | None) -> str:
    """90 -> '1 min 30 s'; 38700 -> '10.8 h'; None -> '-'."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min {r} s" if r else f"{m} min"
    if s < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def human_share(rate: dict) -> str:
    if not rate["of"]:
        return "-"
    return f"{100 * rate['share']:.1f}% ({rate['count']}/{rate['of']})"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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

    @classmethod
    def of(cls, r: dict) -> "_Case":
        key = _case_key(r)
        return cls(r["case_id"], r["practice_id"], r["scenario"], r["state"], bool(r["final"]), key,
                   r["missed_at"], r.get("first_response_at"), r.get("response_latency_ms"),
                   r.get("escalations") or 0, bool(r.get("converted")),
                   r.get("converted_at") if r.get("converted") else None,
                   key if r.get("converted") else None,
                   r.get("conversion_channel") if r.get("converted") else None)

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
        if r.get("converted"):
            self.converted = True
            if r.get("converted_at") is not None:
                self.converted_at = _min(self.converted_at, r["converted_at"])
            if self.conversion_key is None or key > self.conversion_key:
                self.conversion_key = key
                self.conversion_channel = r.get("conversion_channel") or self.conversion_channel

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

    def __init__(self, *, since_ms: int | None = None, until_ms: int | None = None, as_of_ms: int,
                 practice_id: str | None = None) -> None:
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise ReportError(f"until ({iso(until_ms)}) must be after since ({iso(since_ms)})")
        self.since_ms, self.until_ms, self.as_of_ms = since_ms, until_ms, as_of_ms
        self.practice_id = practice_id
        self.cases: dict[str, _Case] = {}
        self.actions: dict[str, tuple[tuple, str, str, str]] = {}  # id -> (key, practice, kind, result)
        self.counts = Counter()

    def _in_period(self, missed_at: int) -> bool:
        return ((self.since_ms is None or missed_at >= self.since_ms)
                and (self.until_ms is None or missed_at < self.until_ms))

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
                self.actions[action_id] = (key, r["practice_id"], r.get("action_kind") or "UNKNOWN",
                                           r.get("action_result") or "UNKNOWN")
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
            "records": {k: self.counts[k] for k in ("records", "case", "action", "outside_period",
                                                    "other_practices")},
            "total": _metrics(list(self.cases.values()), [(k, r) for _, _, k, r in self.actions.values()],
                              self.as_of_ms),
            "practices": {p: _metrics(by_practice.get(p, []), actions_by_practice.get(p, []), self.as_of_ms)
                          for p in practices},
            "baseline": BASELINE,
            "definitions": DEFINITIONS,
        }


def build_report(records: Iterable[dict], *, since_ms: int | None = None, until_ms: int | None = None,
                 as_of_ms: int, practice_id: str | None = None) -> dict:
    """Outcome records (decoded, any order) in, report dict out. Pure."""
    builder = ReportBuilder(since_ms=since_ms, until_ms=until_ms, as_of_ms=as_of_ms, practice_id=practice_id)
    for r in records:
        builder.add(r)
    return builder.result()


def _rate(count: int, of: int, **extra: int) -> dict:
    return {"count": count, "of": of, "share": (count / of) if of else None, **extra}


def _metrics(cases: list[_Case], actions: list[tuple[str, str]], as_of_ms: int) -> dict:
    answered = of_answered = pending_answer = no_response_needed = 0
    converted24 = of_converted = pending_conversion = 0
    recovered = of_new = pending_new = 0
    latencies: list[int] = []
    to_booking: list[int] = []
    appointments = escalations = escalated = open_cases = 0
    by_scenario_state: dict[str, Counter] = defaultdict(Counter)
    buckets = Counter()

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
        "answered_within_15min": _rate(answered, of_answered, pending=pending_answer,
                                       no_response_needed=no_response_needed),
        "converted_within_24h": _rate(converted24, of_converted, pending=pending_conversion),
        "appointments_recovered": appointments,
        "time_to_first_response_s": {"count": len(latencies), "median": quantile(latencies, Fraction(1, 2)),
                                     "p90": quantile(latencies, Fraction(9, 10))},
        "new_patient_recovery": _rate(recovered, of_new, pending=pending_new),
        "call_to_booking_s": {"count": len(to_booking),
                              "mean": float(Fraction(sum(to_booking), len(to_booking)) / 1000) if to_booking else None,
                              "median": quantile(to_booking, Fraction(1, 2))},
        "escalations": escalations,
        "escalated_cases": escalated,
        "cases_by_scenario": {s: sum(by_scenario_state[s].values()) for s in scenarios},
        "cases_by_state": {st: n for st in states if (n := sum(by_scenario_state[s][st] for s in scenarios))},
        "cases_by_scenario_state": {s: {st: by_scenario_state[s][st] for st in states if by_scenario_state[s][st]}
                                    for s in scenarios},
        "first_response_buckets": {label: buckets[label] for label, _ in LATENCY_BUCKETS},
        "actions": {k: dict(sorted(v.items())) for k, v in sorted(action_counts.items())},
    }


# ---------------------------------------------------------------- terminal table
SCENARIO_NAMES = {"NEW_PATIENT": "New patient", "URGENT_EXISTING": "Urgent (existing patient)",
                  "RESCHEDULE": "Reschedule", "GENERAL_INQUIRY": "General inquiry"}
STATE_NAMES = {"OPEN": "Open", "RESPONDED": "Responded", "ESCALATED": "Escalated",
               "CONVERTED": "Converted", "ESCALATED_AND_CLOSED": "Escalated & closed",
               "EXPIRED": "Expired", "SUPPRESSED": "Suppressed"}


def period_text(report: dict) -> str:
    p = report["period"]
    since = human_time(parse_time(p["since"])) if p["since"] else "the beginning"
    until = human_time(parse_time(p["until"])) if p["until"] else "now"
    return f"missed calls from {since} to {until}"


def render_text(report: dict) -> str:
    from tabulate import tabulate

    total = report["total"]
    scope = f"practice {report['practice_filter']}" if report["practice_filter"] else "all practices"
    lines = [f"Ringback KPI report - {scope} - {period_text(report)}",
             f"(data as of {human_time(parse_time(report['period']['as_of']))})", ""]
    if not total["cases"]:
        lines.append("No cases in this period." + (
            f" ({report['records']['records']} outcome records read, none for this period"
            f"{' and practice' if report['practice_filter'] else ''}.)" if report["records"]["records"] else ""))
        return "\n".join(lines) + "\n"

    headers = ["Practice", "Cases\n(open)", "Answered\n<=15 min", "Responses\nconverted <=24 h",
               "Appointments\nrecovered", "First response\nmedian", "First response\np90",
               "New-patient\nrecovery", "Escalations"]
    rows = []
    items = list(report["practices"].items())
    if len(items) != 1 or report["practice_filter"] is None:
        items.append(("TOTAL", total))
    for name, m in items:
        rows.append([name, f"{m['cases']} ({m['open_cases']})", human_share(m["answered_within_15min"]),
                     human_share(m["converted_within_24h"]), m["appointments_recovered"],
                     human_duration(m["time_to_first_response_s"]["median"]),
                     human_duration(m["time_to_first_response_s"]["p90"]),
                     human_share(m["new_patient_recovery"]), m["escalations"]])
    lines.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                          colalign=("left", *["right"] * (len(headers) - 1))))

    lines += ["", "Cases by scenario and state (total):"]
    states = list(total["cases_by_state"])
    grid = [[SCENARIO_NAMES.get(s, s), *[total["cases_by_scenario_state"][s].get(st, 0) for st in states],
             total["cases_by_scenario"][s]] for s in total["cases_by_scenario_state"]]
    grid.append(["Total", *[total["cases_by_state"][st] for st in states], total["cases"]])
    lines.append(tabulate(grid, headers=["Scenario", *[STATE_NAMES.get(s, s) for s in states], "Total"],
                          tablefmt="simple"))

    manual = BASELINE["manual"]
    rec = total["new_patient_recovery"]
    lines += ["", "Against manual call-log review (SPEC section 1):",
              f"  new-patient recovery      {human_share(rec):>22}   manual ~40% (35-45%)",
              f"  median first response     {human_duration(total['time_to_first_response_s']['median']):>22}"
              "   manual 4-6 h",
              f"  mean call-to-booking      {human_duration(total['call_to_booking_s']['mean']):>22}"
              f"   manual {manual['call_to_booking_mean_s'] / 3600:.1f} h"]
    pending = [(total["answered_within_15min"]["pending"], "case", "awaiting a first response (under 15 min)"),
               (total["converted_within_24h"]["pending"], "case", "responded, still within the 24 h to convert"),
               (total["new_patient_recovery"]["pending"], "new-patient case", "still open")]
    if any(n for n, _, _ in pending):
        lines += ["", "Not yet decided, left out of the rates above: "
                  + "; ".join(f"{plural(n, noun)} {what}" for n, noun, what in pending if n) + "."]
    if n := total["answered_within_15min"]["no_response_needed"]:
        lines.append(f"{plural(n, 'case')} needed no response (suppressed: the caller reached staff first, or "
                     "converted before it): left out of 'answered <=15 min'.")
    if total["actions"]:
        lines += ["", "Actions by kind and latest result: " + "; ".join(
            f"{kind} " + ", ".join(f"{res} {n}" for res, n in results.items())
            for kind, results in total["actions"].items())]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading the topic
@dataclass
class ReadStats:
    topic: str
    start: str
    partitions: int = 0
    records_read: int = 0
    undecodable: int = 0
    tombstones: int = 0
    missing_topic: bool = False

    def as_dict(self) -> dict:
        return {"topic": self.topic, "start": self.start, "partitions": self.partitions,
                "records_read": self.records_read, "undecodable": self.undecodable,
                "tombstones": self.tombstones, "missing_topic": self.missing_topic}


def read_outcomes(bootstrap: str, topic: str, *, since_ms: int | None, stats: ReadStats,
                  timeout_s: float = 120.0, group_prefix: str = "ringback") -> Iterator[dict]:
    """Every decodable record of `topic` from `since_ms` (minus SEEK_MARGIN_MS; the
    beginning when None) up to the end offsets seen at the start. Assigns
    partitions itself: joins no consumer group and commits nothing."""
    from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

    from schemas import codec

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        # Never used to commit (assign(), enable.auto.commit off); librdkafka wants one.
        "group.id": f"{group_prefix}-report-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "socket.connection.setup.timeout.ms": 5000,
        # librdkafka's own messages through our logging (JSON in containers), not raw to stderr.
        "logger": logging.getLogger("ringback.report.librdkafka"),
    })
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(timeout_s, 15))
        except KafkaException as exc:
            raise ReportError(f"cannot reach the Kafka broker at {bootstrap}: {exc}") from None
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            stats.missing_topic = True
            log.warning("outcome topic %s does not exist (yet): no cases", topic)
            return
        stats.partitions = len(info.partitions)
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        if since_ms is not None and starts:
            wanted = [TopicPartition(topic, tp.partition, max(0, since_ms - SEEK_MARGIN_MS)) for tp in starts]
            found = consumer.offsets_for_times(wanted, timeout=10)
            starts = [TopicPartition(topic, tp.partition, tp.offset) for tp in found
                      if tp.offset not in (OFFSET_END, -1) and tp.offset < ends[tp.partition]]
        remaining = {tp.partition: ends[tp.partition] for tp in starts}
        log.info("reading %s: %d partitions, %d to read", topic, stats.partitions, len(remaining))
        if not remaining:
            return
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise ReportError(f"could not read {topic} to its end within {timeout_s:.0f} s "
                                  f"({len(remaining)} partitions left)")
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                p = msg.partition()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.pop(p, None)
                    elif err.fatal():
                        raise ReportError(f"reading {topic}: {err}")
                    else:
                        log.warning("reading %s: %s", topic, err)
                    continue
                if p not in remaining or msg.offset() >= remaining[p]:
                    continue  # produced after we started: the next report has it
                if msg.offset() + 1 >= remaining[p]:
                    remaining.pop(p)
                stats.records_read += 1
                value = msg.value()
                if value is None:
                    stats.tombstones += 1
                    continue
                try:
                    record = codec.decode("outcome", value)
                except ValueError as exc:
                    stats.undecodable += 1
                    log.warning("skipping an undecodable outcome record at %s[%d]@%d: %s",
                                topic, p, msg.offset(), exc)
                    continue
                yield record
    finally:
        consumer.close()


# ---------------------------------------------------------------- the command
def run(env, *, since: str | None, until: str | None, practice_id: str | None, html_path: Path | None,
        json_path: Path | None, as_of: str | None = None, timeout_s: float = 120.0, out=None) -> dict:
    """`ringback report`: read, compute, print; write JSON/HTML when asked. Returns the report."""
    import sys

    from ringback.clock import Clock
    from streams import topics

    out = out or sys.stdout
    since_ms = parse_time(since) if since else None
    until_ms = parse_time(until) if until else None
    as_of_ms = parse_time(as_of) if as_of else Clock().now_ms()
    builder = ReportBuilder(since_ms=since_ms, until_ms=until_ms, as_of_ms=as_of_ms, practice_id=practice_id)
    topic = topics.topic_name(topics.OUTCOMES, env)
    stats = ReadStats(topic=topic, start="timestamp" if since_ms is not None else "beginning")
    for record in read_outcomes(env.kafka_bootstrap_servers, topic, since_ms=since_ms, stats=stats,
                                timeout_s=timeout_s, group_prefix=env.ringback_namespace):
        builder.add(record)
    report = builder.result()
    report["source"] = stats.as_dict()
    log.info("report: %d records read, %d cases in the period", stats.records_read, report["total"]["cases"])
    out.write(render_text(report))
    if stats.undecodable:
        out.write(f"\n{stats.undecodable} undecodable outcome records were skipped (see the log).\n")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        out.write(f"JSON written to {json_path}\n")
    if html_path is not None:
        from ringback.report_html import render_html

        html_path.write_text(render_html(report), encoding="utf-8")
        out.write(f"HTML written to {html_path}\n")
    return report
