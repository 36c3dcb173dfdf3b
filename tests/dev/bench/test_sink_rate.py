"""The sink figure's arithmetic and traffic (ringback/dev/bench/sink_rate.py) and its row in the report."""

from __future__ import annotations

import pytest

from ringback.dev.bench import report, sink_rate
from ringback.kafka import topics
from ringback.schemas import codec


def test_steady_rate_counts_the_window_after_the_warm_up():
    # A slow start, then one SMS every 0.25 s for 20 s.
    arrivals = [0.0, 2.0, 3.0] + [4.0 + 0.25 * i for i in range(81)]
    measured = sink_rate.steady_rate(arrivals, warmup_s=4.0, window_s=10.0)
    assert measured["rate"] == pytest.approx(4.0)
    assert measured["sms_in_window"] == 41 and measured["window_s"] == pytest.approx(10.0)
    assert measured["gap_s"]["min"] == pytest.approx(0.25) and measured["gap_s"]["max"] == pytest.approx(0.25)


def test_steady_rate_is_cut_at_the_last_sms_when_the_backlog_runs_out():
    arrivals = [0.5 * i for i in range(11)]  # 2/s for 5 s, then nothing
    assert sink_rate.steady_rate(arrivals, warmup_s=1.0, window_s=30.0)["rate"] == pytest.approx(2.0)
    assert sink_rate.steady_rate([], 1.0, 10.0)["rate"] is None
    assert sink_rate.steady_rate([0.0, 5.0], 1.0, 10.0)["rate"] is None  # one SMS in the window: no rate


def test_actions_are_first_sms_for_distinct_new_patients_keyed_as_the_worker_keys_them():
    records = sink_rate.sms_actions(6, practices=4, now_ms=1_767_000_000_000)
    actions = [codec.decode("action_command", value) for _, value, _ in records]
    assert len({a["recipient"] for a in actions}) == 6 and len({a["action_id"] for a in actions}) == 6
    assert {a["kind"] for a in actions} == {"SEND_SMS"} and {a["step"] for a in actions} == {"first_sms"}
    assert [key for key, _, _ in records] == [topics.join_key(a["practice_id"], a["recipient"]) for a in actions]
    assert all(a["body"] and "Reply STOP" in a["body"] for a in actions)


def test_report_row_of_the_sink_figure_and_the_api_latency_in_the_labels():
    results = {
        "sink": {"rate": 3.62, "seconds_per_sms": 0.276, "api_latency_s": 0.25},
        "b": {"low_rate": 100, "high_rate": 1000, "api_latency_s": 0.25, "knee": {}},
    }
    rows = {figure: measured for figure, measured, _, _ in report.rows(results)}
    assert rows["SMS/s carried by one sink process, API answering in 250 ms ±50 %"] == "3.62 SMS/s (276 ms per SMS)"
    assert "(b) webhook accepted → SMS at 100/s, API answering in 250 ms ±50 %: p50 / p99" in rows
