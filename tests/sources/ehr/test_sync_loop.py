"""`ringback ehr sync --every`: the loop around the FHIR sync (sources/ehr/sync_loop.py),
with a fake sync, clock and sleep: no broker, no FHIR server."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from ringback.sources.ehr import sync_loop as ehr_sync_loop


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("ringback_ehr_sync_runs_total", {"result": result}) or 0.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def wall(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_failed_run_is_counted_and_the_next_run_goes_on():
    clock = FakeTime()
    calls: list[bool] = []
    reported: list[str] = []

    def sync_once(first: bool) -> str:
        calls.append(first)
        clock.now += 2  # each run takes 2 s
        if len(calls) == 2:
            raise ConnectionError("FHIR server unreachable")
        return f"report {len(calls)}"

    ok, failed = runs("ok"), runs("failed")
    ehr_sync_loop.run_forever(sync_once, 30, report=reported.append, sleep=clock.sleep, wall=clock.wall, runs=3)
    assert calls == [True, False, False]  # only the first run honours --since
    assert reported == ["report 1", "report 3"]
    assert (runs("ok") - ok, runs("failed") - failed) == (2, 1)
    assert clock.slept == [28, 28]  # the interval is from start to start
    assert REGISTRY.get_sample_value("ringback_ehr_last_success_timestamp_seconds") == clock.now


def test_a_run_longer_than_the_interval_starts_the_next_at_once():
    clock = FakeTime()

    def slow(first: bool) -> str:
        clock.now += 90
        return "done"

    ehr_sync_loop.run_forever(slow, 60, report=lambda r: None, sleep=clock.sleep, wall=clock.wall, runs=2)
    assert clock.slept == [0.0]


def test_series_exist_at_zero_before_the_first_run():
    ehr_sync_loop.declare_series()
    for result in ("ok", "failed"):
        assert REGISTRY.get_sample_value("ringback_ehr_sync_runs_total", {"result": result}) is not None
    for kind in ("Patient", "Appointment", "Flag"):
        assert REGISTRY.get_sample_value("ringback_dead_letters_total", {"source": f"fhir:{kind}"}) is not None


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_stopping_the_process_is_not_swallowed(exc):
    def interrupted(first: bool) -> str:
        raise exc

    with pytest.raises(exc):
        ehr_sync_loop.run_forever(interrupted, 30, report=lambda r: None, sleep=lambda s: None, runs=3)
