"""Figure (e)'s reading of the SMS times (pure): kill -9 → next SMS, and its report rows."""

from __future__ import annotations

from datetime import datetime

from ringback.dev.bench import report
from ringback.dev.bench.takeover import _faust_marks, next_sms_after


def test_the_flow_resumes_with_the_sms_that_ends_the_longest_silence_after_the_kill():
    # Steady every 0.5 s, the kill at 10.0, two SMS already on their way, then silence until 13.4.
    times = [8.0, 8.5, 9.0, 9.5, 10.1, 10.6, 13.4, 13.9, 14.4]
    took, silence = next_sms_after(10.0, times, kill=10.0)
    assert round(took, 6) == 3.4 and round(silence, 6) == 2.8


def test_for_the_broker_the_figure_counts_from_it_being_ready_again():
    times = [9.5, 10.2, 31.0, 31.5]  # killed at 10.0, ready again at 29.0
    took, silence = next_sms_after(29.0, times, kill=10.0)
    assert round(took, 6) == 2.0 and round(silence, 6) == 20.8


def test_the_restarted_process_s_own_log_says_when_faust_started_and_was_ready(tmp_path):
    log = tmp_path / "sinks.log"
    log.write_text(
        "2026-12-05 00:35:17,139 INFO faust.worker [^Worker]: Starting...\n"  # the first run
        "2026-12-05 00:35:21,294 INFO faust.worker [^Worker]: Ready\n"
        "2026-12-05 00:35:49,523 INFO faust.worker [^Worker]: Starting...\n"  # after the kill
        "2026-12-05 00:35:50,810 INFO aiokafka.consumer.consumer Subscribed to topic(s): ...\n"
        "2026-12-05 00:35:53,121 INFO faust.worker [^Worker]: Ready\n"
    )
    killed = datetime(2026, 12, 5, 0, 35, 48).timestamp()  # the log's times are local, as logging writes them
    marks = _faust_marks(log, killed)
    assert {k: round(v - killed, 3) for k, v in marks.items()} == {"faust_start_s": 1.523, "faust_ready_s": 5.121}
    assert _faust_marks(log, killed + 60) == {}


def test_no_sms_after_the_reference_is_no_figure():
    assert next_sms_after(10.0, [8.0, 9.0], kill=10.0) == (None, None)
    assert next_sms_after(29.0, [8.0, 10.5], kill=10.0) == (None, None)


def test_the_report_holds_each_fault_against_five_seconds_and_the_tally_against_zero():
    rows = report.rows(
        {
            "e": {
                "worker": {"next_sms_s": 3.4},
                "sinks": {"next_sms_s": 6.2},
                "broker": {"error": "no SMS after the broker's kill"},
                "accepted": 120,
                "lost": 0,
                "twice": 0,
            }
        }
    )
    assert [(measured, met) for _, measured, _, met in rows] == [
        ("3.4 s", True),
        ("6.2 s", False),
        ("no SMS after the broker's kill", None),
        ("0 / 0 of 120", True),
    ]
