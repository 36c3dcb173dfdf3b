"""The KPI report computed from a hand-written scenario, checked against numbers
computed by hand (in the comments), without Kafka. The integration test
(tests/report/test_report_cli.py) produces the same records to a real topic."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime

import pytest

from ringback.report.kpis import ReportBuilder, ReportError, build_report, parse_time, quantile
from ringback.report.text import human_duration, render_text
from ringback.schemas import codec

MAPLE, OAK = "maple-family", "oak-peds"


def t(text: str) -> int:
    """'11-20 09:00:50' -> epoch ms of 2026-11-20T09:00:50Z."""
    return int(datetime.strptime(f"2026-{text}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() * 1000)


def case(
    case_id: str,
    practice: str,
    scenario: str,
    state: str,
    at: str,
    missed: str,
    *,
    final: bool = False,
    responded: str | None = None,
    escalations: int = 0,
    converted: str | None = None,
    channel: str | None = None,
    reason: str | None = None,
    replied: str | None = None,
) -> dict:
    missed_at = t(missed)
    first = t(responded) if responded else None
    return {
        "outcome_id": f"{case_id}:{state}",
        "case_id": case_id,
        "practice_id": practice,
        "scenario": scenario,
        "state": state,
        "final": final,
        "missed_at": missed_at,
        "first_response_at": first,
        "response_latency_ms": first - missed_at if first is not None else None,
        "within_window": None,
        "escalations": escalations,
        "converted": converted is not None,
        "converted_at": t(converted) if converted else None,
        "conversion_channel": channel,
        "responded": replied is not None,
        "responded_at": t(replied) if replied else None,
        "response_channel": "sms_reply" if replied else None,
        "channel": "sms" if first is not None else None,
        "reason": reason,
        "at": t(at),
        "record_type": "CASE",
        "action_id": None,
        "action_kind": None,
        "action_result": None,
    }


def action(action_id: str, practice: str, scenario: str, missed: str, at: str, kind: str, result: str) -> dict:
    case_id = action_id.rsplit(":", 1)[0]
    return {
        "outcome_id": f"{action_id}:{result}",
        "case_id": case_id,
        "practice_id": practice,
        "scenario": scenario,
        "state": "RESPONDED",
        "final": False,
        "missed_at": t(missed),
        "first_response_at": None,
        "response_latency_ms": None,
        "within_window": None,
        "escalations": 0,
        "converted": False,
        "converted_at": None,
        "conversion_channel": None,
        "responded": False,
        "responded_at": None,
        "response_channel": None,
        "channel": None,
        "reason": None,
        "at": t(at),
        "record_type": "ACTION",
        "action_id": action_id,
        "action_kind": kind,
        "action_result": result,
    }


NP, URG, RES, GEN = "NEW_PATIENT", "URGENT_EXISTING", "RESCHEDULE", "GENERAL_INQUIRY"

# The period: missed calls from 2026-11-19 00:00 to 2026-11-26 00:00 UTC; data as of 2026-11-26 00:05 UTC.
SINCE, UNTIL, AS_OF = "2026-11-19", "2026-11-26", "2026-11-26T00:05:00Z"

# In the order they are produced: some cases' records arrive out of order.
RECORDS = [
    # A1 new patient, Maple: SMS after 50 s, the patient replied 20 min after the call, booked 1 h 30 min after it.
    case("A1", MAPLE, NP, "OPEN", "11-20 09:00:05", "11-20 09:00:00"),
    case("A1", MAPLE, NP, "RESPONDED", "11-20 09:00:50", "11-20 09:00:00", responded="11-20 09:00:50"),
    case(
        "A1",
        MAPLE,
        NP,
        "CONVERTED",
        "11-20 10:30:00",
        "11-20 09:00:00",
        final=True,
        responded="11-20 09:00:50",
        converted="11-20 10:30:00",
        channel="booking",
        replied="11-20 09:20:00",
    ),
    # A2 new patient, Maple: SMS after 90 s, gate at 2 h, expired a day later. Final record first.
    case(
        "A2",
        MAPLE,
        NP,
        "EXPIRED",
        "11-21 09:10:00",
        "11-20 09:10:00",
        final=True,
        responded="11-20 09:11:30",
        escalations=1,
        reason="no reply",
    ),
    case("A2", MAPLE, NP, "RESPONDED", "11-20 09:11:30", "11-20 09:10:00", responded="11-20 09:11:30"),
    case("A2", MAPLE, NP, "ESCALATED", "11-20 11:11:30", "11-20 09:10:00", responded="11-20 09:11:30", escalations=1),
    # A3 urgent, Maple: clinical task after 4 min, manager alerted, closed.
    case("A3", MAPLE, URG, "RESPONDED", "11-21 12:04:00", "11-21 12:00:00", responded="11-21 12:04:00"),
    case(
        "A3",
        MAPLE,
        URG,
        "ESCALATED_AND_CLOSED",
        "11-21 13:00:00",
        "11-21 12:00:00",
        final=True,
        responded="11-21 12:04:00",
        escalations=1,
    ),
    # A4 reschedule, Maple: only its final record: response after 20 min, rescheduled 19 h 40 min later.
    case(
        "A4",
        MAPLE,
        RES,
        "CONVERTED",
        "11-23 10:00:00",
        "11-22 14:00:00",
        final=True,
        responded="11-22 14:20:00",
        converted="11-23 10:00:00",
        channel="reschedule",
    ),
    # A5 new patient, Maple: the caller got through to staff during the hold: suppressed.
    case("A5", MAPLE, NP, "OPEN", "11-23 10:00:02", "11-23 10:00:00"),
    case("A5", MAPLE, NP, "SUPPRESSED", "11-23 10:00:30", "11-23 10:00:00", final=True, reason="answered"),
    # A6 general inquiry, Maple, missed on 11-18: before the period.
    case(
        "A6",
        MAPLE,
        GEN,
        "CONVERTED",
        "11-19 09:00:00",
        "11-18 16:00:00",
        final=True,
        responded="11-18 16:30:00",
        converted="11-19 09:00:00",
        channel="callback",
    ),
    # B1 new patient, Oak: SMS after 60 s; the patient replied 2 min later, nobody booked: expired. A reply
    # is a response, not a conversion.
    case(
        "B1",
        OAK,
        NP,
        "EXPIRED",
        "11-25 08:30:00",
        "11-24 08:30:00",
        final=True,
        responded="11-24 08:31:00",
        replied="11-24 08:33:00",
    ),
    case("B1", OAK, NP, "RESPONDED", "11-24 08:31:00", "11-24 08:30:00", responded="11-24 08:31:00"),
    # B2 general inquiry, Oak: task after 45 min, expired.
    case("B2", OAK, GEN, "RESPONDED", "11-24 17:45:00", "11-24 17:00:00", responded="11-24 17:45:00"),
    case("B2", OAK, GEN, "EXPIRED", "11-25 17:00:00", "11-24 17:00:00", final=True, responded="11-24 17:45:00"),
    # B3 new patient, Oak: SMS after 45 s at 23:50:45; still open at as_of (14 min later).
    case("B3", OAK, NP, "RESPONDED", "11-25 23:50:45", "11-25 23:50:00", responded="11-25 23:50:45"),
    # B4 urgent, Oak: missed at 23:58, nothing sent yet at as_of (7 min later).
    case("B4", OAK, URG, "OPEN", "11-25 23:58:05", "11-25 23:58:00"),
    # B5 new patient, Oak, written by an older worker that called an SMS reply a conversion: SMS after 60 s,
    # "converted" by the reply at 10:30. Read today as responded at 10:30, not converted.
    case(
        "B5",
        OAK,
        NP,
        "CONVERTED",
        "11-22 10:30:00",
        "11-22 10:00:00",
        final=True,
        responded="11-22 10:01:00",
        converted="11-22 10:30:00",
        channel="sms_reply",
    ),
    # B6 general inquiry, Oak: task after 10 min; the admin team reached the patient 3 h 50 min later.
    case("B6", OAK, GEN, "RESPONDED", "11-23 11:10:00", "11-23 11:00:00", responded="11-23 11:10:00"),
    case(
        "B6",
        OAK,
        GEN,
        "CONVERTED",
        "11-23 15:00:00",
        "11-23 11:00:00",
        final=True,
        responded="11-23 11:10:00",
        converted="11-23 15:00:00",
        channel="callback",
    ),
    # B7 new patient, Oak: SMS after 60 s, replied at 08:05; staff's pending appointment confirmed in the EHR
    # 24 h 59 min after the SMS (an appointment recovered, but not within the 24 h).
    case("B7", OAK, NP, "RESPONDED", "11-21 08:01:00", "11-21 08:00:00", responded="11-21 08:01:00"),
    case(
        "B7",
        OAK,
        NP,
        "CONVERTED",
        "11-22 09:00:00",
        "11-21 08:00:00",
        final=True,
        responded="11-21 08:01:00",
        converted="11-22 09:00:00",
        channel="confirmation",
        replied="11-21 08:05:00",
    ),
    # Sink results. A1's delivery receipt arrives before its "sent".
    action("A1:first_sms", MAPLE, NP, "11-20 09:00:00", "11-20 09:00:55", "SEND_SMS", "DELIVERED"),
    action("A1:first_sms", MAPLE, NP, "11-20 09:00:00", "11-20 09:00:50", "SEND_SMS", "SENT"),
    action("A2:first_sms", MAPLE, NP, "11-20 09:10:00", "11-20 09:11:30", "SEND_SMS", "SENT"),
    action("A3:clinical_task", MAPLE, URG, "11-21 12:00:00", "11-21 12:04:00", "CREATE_TASK", "SENT"),
    action("A6:admin_task", MAPLE, GEN, "11-18 16:00:00", "11-18 16:30:00", "CREATE_TASK", "SENT"),
]

# ---------------------------------------------------------------- by hand
# Conversion = an appointment booked, rescheduled or confirmed, or a callback that reached the patient;
# a reply is a response. Cases in the period: A1-A5 (Maple), B1-B7 (Oak) = 12; A6 is outside
# (1 CASE + 1 ACTION record).
# Latest states: A1 CONVERTED, A2 EXPIRED (final wins over the later-read ESCALATED), A3 ESCALATED_AND_CLOSED,
#   A4 CONVERTED, A5 SUPPRESSED, B1 EXPIRED, B2 EXPIRED, B3 RESPONDED (open), B4 OPEN (open), B5 CONVERTED
#   (as recorded; not a conversion), B6 CONVERTED, B7 CONVERTED.
# First response latencies: A1 50 s, A2 90 s, A3 240 s, A4 1200 s, B1 60 s, B2 2700 s, B3 45 s, B5 60 s,
#   B6 600 s, B7 60 s.
#
# Answered within 15 min: A5 needs no response (suppressed); B4 has none yet and only 7 min have passed: pending.
#   Denominator the other 10; within 900 s: A1 A2 A3 B1 B3 B5 B6 B7 = 8 (not A4, B2)  -> 8/10.
#   Maple A1-A4: A1 A2 A3 = 3/4.  Oak B1 B2 B3 B5 B6 B7: B1 B3 B5 B6 B7 = 5/6 (B4 pending).
# Responses converting within 24 h: the 10 with a first response; B3 is open and only 14 min past its SMS:
#   pending. Denominator 9. A1 converts 1 h 29 min 10 s after its SMS (yes), A4 19 h 40 min (yes), B6 3 h 50 min
#   (yes), B7 24 h 59 min (no); A2 A3 B1 B2 closed unconverted; B5's reply is not a conversion -> 3/9.
#   Maple A1-A4: 2/4.  Oak B1 B2 B5 B6 B7: B6 = 1/5 (B3 pending).
# Appointments recovered: A1 (booking), A4 (reschedule), B7 (confirmation) = 3 (B6 is a callback, B1 and B5
#   replies). Maple 2, Oak 1.
# Callers who responded, of the cases with a first response: A1, B1, B5 (the old record's reply), B7 = 4/10.
#   Maple A1 = 1/4. Oak B1 B5 B7 = 3/6. Older conversions read as responses: B5 = 1 (Oak).
# Time to first response, sorted: 45 50 60 60 60 90 240 600 1200 2700 (n=10).
#   median at rank 4.5: 60 + 0.5*30 = 75 s; p90 at rank (10-1)*0.9 = 8.1: 1200 + 0.1*(2700-1200) = 1350 s.
#   Maple 50 90 240 1200: median (90+240)/2 = 165 s; p90 at 2.7: 240 + 0.7*960 = 912 s.
#   Oak 45 60 60 60 600 2700: median at 2.5: 60 s; p90 at 4.5: 600 + 0.5*2100 = 1650 s.
# New-patient recovery: A1 A2 A5 B1 B3 B5 B7; B3 open and unconverted: pending. A1 B7 converted -> 2/6.
#   Maple A1 A2 A5: 1/3. Oak B1 B5 B7: 1/3.
# Call to booking: A1 5400 s, A4 72000 s, B7 90000 s: mean 167400/3 = 55800 s, median 72000 s.
#   Maple A1 A4: mean = median = 38700 s. Oak B7: 90000 s.
# Escalations: A2 1 + A3 1 = 2, both escalated cases. Oak 0.
# First-response buckets: <=1 min 45 50 60 60 60 -> 5; 1-5 min 90 240 -> 2; 5-15 min 600 -> 1;
#   15-60 min 1200 2700 -> 2.
# Actions in the period: A1:first_sms DELIVERED (later `at` than SENT), A2:first_sms SENT, A3 task SENT.
# Records: 28 read (23 CASE, 5 ACTION); 22 CASE and 4 ACTION in the period; 2 (A6) outside.
EXPECTED_TOTAL = {
    "cases": 12,
    "open_cases": 2,
    "answered_within_15min": {"count": 8, "of": 10, "share": 8 / 10, "pending": 1, "no_response_needed": 1},
    "converted_within_24h": {"count": 3, "of": 9, "share": 3 / 9, "pending": 1},
    "appointments_recovered": 3,
    "caller_responded": {"count": 4, "of": 10, "share": 4 / 10},
    "older_conversions_read_as_responses": 1,
    "time_to_first_response_s": {"count": 10, "median": 75.0, "p90": 1350.0},
    "new_patient_recovery": {"count": 2, "of": 6, "share": 2 / 6, "pending": 1},
    "call_to_booking_s": {"count": 3, "mean": 55800.0, "median": 72000.0},
    "escalations": 2,
    "escalated_cases": 2,
    "cases_by_scenario": {NP: 7, URG: 2, RES: 1, GEN: 2},
    "cases_by_state": {
        "OPEN": 1,
        "RESPONDED": 1,
        "CONVERTED": 5,
        "ESCALATED_AND_CLOSED": 1,
        "EXPIRED": 3,
        "SUPPRESSED": 1,
    },
    "cases_by_scenario_state": {
        NP: {"RESPONDED": 1, "CONVERTED": 3, "EXPIRED": 2, "SUPPRESSED": 1},
        URG: {"OPEN": 1, "ESCALATED_AND_CLOSED": 1},
        RES: {"CONVERTED": 1},
        GEN: {"CONVERTED": 1, "EXPIRED": 1},
    },
    "first_response_buckets": {"<=1 min": 5, "1-5 min": 2, "5-15 min": 1, "15-60 min": 2, "1-4 h": 0, ">4 h": 0},
    "actions": {"CREATE_TASK": {"SENT": 1}, "SEND_SMS": {"DELIVERED": 1, "SENT": 1}},
}
EXPECTED_MAPLE = {
    "cases": 5,
    "open_cases": 0,
    "answered_within_15min": {"count": 3, "of": 4, "share": 3 / 4, "pending": 0, "no_response_needed": 1},
    "converted_within_24h": {"count": 2, "of": 4, "share": 0.5, "pending": 0},
    "appointments_recovered": 2,
    "caller_responded": {"count": 1, "of": 4, "share": 1 / 4},
    "older_conversions_read_as_responses": 0,
    "time_to_first_response_s": {"count": 4, "median": 165.0, "p90": 912.0},
    "new_patient_recovery": {"count": 1, "of": 3, "share": 1 / 3, "pending": 0},
    "call_to_booking_s": {"count": 2, "mean": 38700.0, "median": 38700.0},
    "escalations": 2,
    "escalated_cases": 2,
}
EXPECTED_OAK = {
    "cases": 7,
    "open_cases": 2,
    "answered_within_15min": {"count": 5, "of": 6, "share": 5 / 6, "pending": 1, "no_response_needed": 0},
    "converted_within_24h": {"count": 1, "of": 5, "share": 1 / 5, "pending": 1},
    "appointments_recovered": 1,
    "caller_responded": {"count": 3, "of": 6, "share": 3 / 6},
    "older_conversions_read_as_responses": 1,
    "time_to_first_response_s": {"count": 6, "median": 60.0, "p90": 1650.0},
    "new_patient_recovery": {"count": 1, "of": 3, "share": 1 / 3, "pending": 1},
    "call_to_booking_s": {"count": 1, "mean": 90000.0, "median": 90000.0},
    "escalations": 0,
    "escalated_cases": 0,
}
EXPECTED_RECORDS = {"records": 28, "case": 22, "action": 4, "outside_period": 2, "other_practices": 0}


def compute(records=RECORDS, **kw) -> dict:
    args = {"since_ms": parse_time(SINCE), "until_ms": parse_time(UNTIL), "as_of_ms": parse_time(AS_OF)}
    return build_report(records, **{**args, **kw})


def assert_matches(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert actual[key] == value, f"{key}: {actual[key]!r} != {value!r}"


def test_every_scenario_record_is_a_valid_outcome():
    for record in RECORDS:
        assert codec.decode("outcome", codec.encode("outcome", record)) == record


def test_totals_match_the_hand_computation():
    report = compute()
    assert_matches(report["total"], EXPECTED_TOTAL)
    assert report["records"] == EXPECTED_RECORDS
    assert report["period"] == {
        "since": "2026-11-19T00:00:00Z",
        "until": "2026-11-26T00:00:00Z",
        "as_of": "2026-11-26T00:05:00Z",
    }


def test_per_practice_numbers_match_the_hand_computation():
    report = compute()
    assert list(report["practices"]) == [MAPLE, OAK]
    assert_matches(report["practices"][MAPLE], EXPECTED_MAPLE)
    assert_matches(report["practices"][OAK], EXPECTED_OAK)


def test_practice_filter_gives_that_practice_only():
    report = compute(practice_id=OAK)
    assert list(report["practices"]) == [OAK]
    assert_matches(report["total"], EXPECTED_OAK)
    assert report["records"]["other_practices"] == 17


@pytest.mark.parametrize("seed", range(20))
def test_arrival_order_does_not_matter(seed):
    shuffled = RECORDS[:]
    random.Random(seed).shuffle(shuffled)
    assert compute(shuffled) == compute()


def test_redelivered_duplicates_change_nothing_but_the_record_count():
    twice = compute(RECORDS + RECORDS)
    once = compute()
    assert twice["total"] == once["total"] and twice["practices"] == once["practices"]
    assert twice["records"]["records"] == 56


def test_a_final_record_wins_over_a_later_non_final_one():
    # A worker with a skewed clock writes ESCALATED after the final EXPIRED.
    records = [
        case("X", MAPLE, GEN, "EXPIRED", "11-21 10:00:00", "11-20 10:00:00", final=True, responded="11-20 10:01:00"),
        case(
            "X", MAPLE, GEN, "ESCALATED", "11-21 10:00:01", "11-20 10:00:00", responded="11-20 10:01:00", escalations=1
        ),
    ]
    for order in itertools.permutations(records):
        total = compute(list(order))["total"]
        assert total["cases_by_state"] == {"EXPIRED": 1}
        assert total["open_cases"] == 0
        assert total["escalations"] == 1  # the counter only grows: taken from any record


def test_a_response_time_is_not_lost_when_the_latest_record_lacks_it():
    records = [
        case("Y", OAK, NP, "RESPONDED", "11-20 10:00:40", "11-20 10:00:00", responded="11-20 10:00:40"),
        case("Y", OAK, NP, "EXPIRED", "11-21 10:00:00", "11-20 10:00:00", final=True),
    ]
    total = compute(records)["total"]
    assert total["time_to_first_response_s"] == {"count": 1, "median": 40.0, "p90": 40.0}
    assert total["answered_within_15min"]["count"] == 1


def test_pending_cases_are_decided_once_their_time_is_over():
    # As of a day later, B3 (no conversion 24 h after its SMS) and B4 (no response 15 min after the call)
    # are decided: both count as misses. B3 is still not final, so new-patient recovery keeps it pending.
    total = compute(as_of_ms=parse_time("2026-11-27T00:00:00Z"))["total"]
    assert total["answered_within_15min"] == {
        "count": 8,
        "of": 11,
        "share": 8 / 11,
        "pending": 0,
        "no_response_needed": 1,
    }
    assert total["converted_within_24h"] == {"count": 3, "of": 10, "share": 3 / 10, "pending": 0}
    assert total["new_patient_recovery"]["pending"] == 1


def test_a_case_converted_before_any_response_needed_none():
    records = [
        case(
            "Z",
            MAPLE,
            NP,
            "CONVERTED",
            "11-20 10:00:20",
            "11-20 10:00:00",
            final=True,
            converted="11-20 10:00:20",
            channel="booking",
        )
    ]
    total = compute(records)["total"]
    assert total["answered_within_15min"] == {"count": 0, "of": 0, "share": None, "pending": 0, "no_response_needed": 1}
    assert total["new_patient_recovery"] == {"count": 1, "of": 1, "share": 1.0, "pending": 0}
    assert total["appointments_recovered"] == 1


@pytest.mark.parametrize("channel", ["sms_reply", "answered_call", "cancellation"])
def test_what_older_records_called_a_conversion_is_not_one(channel):
    """Before `responded`, the worker closed a case as converted on a reply, an answered call or
    a cancellation: the report reads those by today's definition (the first two as responses)."""
    old = case(
        "L", OAK, NP, "CONVERTED", "11-20 10:30:00", "11-20 10:00:00", final=True, responded="11-20 10:01:00",
        converted="11-20 10:30:00", channel=channel,
    )  # fmt: skip
    for name in ("responded", "responded_at", "response_channel"):
        del old[name]  # an older writer's record, as the older schema wrote it
    total = compute([old])["total"]
    assert total["converted_within_24h"] == {"count": 0, "of": 1, "share": 0.0, "pending": 0}
    assert total["new_patient_recovery"]["count"] == 0 and total["appointments_recovered"] == 0
    responded = 0 if channel == "cancellation" else 1
    assert total["caller_responded"] == {"count": responded, "of": 1, "share": float(responded)}
    assert total["older_conversions_read_as_responses"] == 1


def test_zero_records_gives_an_empty_report_that_says_so():
    report = compute([])
    total = report["total"]
    assert total["cases"] == 0 and report["practices"] == {}
    assert total["answered_within_15min"]["share"] is None
    assert total["time_to_first_response_s"] == {"count": 0, "median": None, "p90": None}
    assert total["call_to_booking_s"]["mean"] is None
    text = render_text(report)
    assert "No cases in this period." in text
    json.dumps(report)  # serialisable as it is


def test_records_only_outside_the_period_say_none_is_in_it():
    text = render_text(compute([RECORDS[11]]))
    assert "No cases in this period. (1 outcome records read, none for this period.)" in text


def test_text_report_shows_the_numbers():
    text = render_text(compute())
    assert "missed calls from 2026-11-19 00:00 UTC to 2026-11-26 00:00 UTC" in text
    total_row = next(line for line in text.splitlines() if line.startswith("TOTAL"))
    for cell in ("12 (2)", "80.0% (8/10)", "33.3% (3/9)", "1 min 15 s", "22 min 30 s", "33.3% (2/6)"):
        assert cell in total_row, (cell, total_row)
    maple_row = next(line for line in text.splitlines() if line.startswith(MAPLE))
    for cell in ("75.0% (3/4)", "2 min 45 s", "15 min 12 s", "33.3% (1/3)"):
        assert cell in maple_row, (cell, maple_row)
    assert "manual ~40%" in text and "15.5 h" in text
    assert "40.0% (4/10)" in text  # callers who responded


def test_report_has_no_phone_numbers_or_names():
    text = json.dumps(compute()) + render_text(compute())
    assert "+1" not in text.replace("+00:00", "")


def test_json_is_plain_data():
    report = compute()
    assert json.loads(json.dumps(report)) == report


def test_until_before_since_is_refused():
    with pytest.raises(ReportError, match="must be after"):
        ReportBuilder(since_ms=parse_time("2026-11-26"), until_ms=parse_time("2026-11-19"), as_of_ms=0)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-11-19", "2026-11-19T00:00:00+00:00"),
        ("2026-11-19T08:00:00-06:00", "2026-11-19T14:00:00+00:00"),
        ("2026-11-19T08:00:00Z", "2026-11-19T08:00:00+00:00"),
        ("2026-11-19 08:00", "2026-11-19T08:00:00+00:00"),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == int(datetime.fromisoformat(expected).timestamp() * 1000)


def test_parse_time_refuses_nonsense():
    with pytest.raises(ReportError, match="not a date"):
        parse_time("last week")


def test_quantile_is_linear_interpolation_like_numpy():
    from fractions import Fraction

    import numpy

    values = [45, 50, 60, 90, 240, 1200, 2700, 13, 7]
    for q in (Fraction(1, 2), Fraction(9, 10), Fraction(1, 4)):
        ms = [v * 1000 for v in values]
        assert quantile(ms, q) == pytest.approx(numpy.percentile(values, float(q) * 100))
    assert quantile([], Fraction(1, 2)) is None


@pytest.mark.parametrize(
    "seconds,text",
    [(None, "-"), (45, "45 s"), (90, "1 min 30 s"), (1800, "30 min"), (38700, "10.8 h"), (3 * 86400, "3.0 days")],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text
