"""`ringback ehr sync --every N`: the FHIR sync as a long-running process with /metrics.

A one-shot `ringback ehr sync` run by a scheduler has no /metrics page to scrape, so a
sync that keeps failing, or its dead letters, would not reach Prometheus. Run with
`--every`, the process syncs, waits, syncs again (each run continues from the saved
cursor, so nothing is read twice that was acknowledged), serves its counters, and never
stops on a failed run: the failure is counted and logged, and the next run tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from ringback.observability.metrics import declare_dead_letter_sources
from ringback.sources.ehr.publisher import DEAD_LETTER_KINDS

log = logging.getLogger(__name__)

RUNS = Counter("ringback_ehr_sync_runs_total", "FHIR sync runs of `ringback ehr sync --every`, by result", ["result"])
LAST_SUCCESS = Gauge(
    "ringback_ehr_last_success_timestamp_seconds",
    "Wall time (Unix seconds) the last FHIR sync run finished without an error",
)


def declare_series() -> None:
    """Every series at 0 from the start (increase() cannot see the first value of a series)."""
    for result in ("ok", "failed"):
        RUNS.labels(result)
    # the REST sync's sources (ndjson is the import's)
    declare_dead_letter_sources(f"fhir:{kind}" for kind in DEAD_LETTER_KINDS if kind != "ndjson")


def run_forever(
    sync_once: Callable[[bool], object],
    every_s: float,
    *,
    report: Callable[[object], None],
    sleep: Callable[[float], None] = time.sleep,
    wall: Callable[[], float] = time.time,
    runs: int | None = None,
    runs_counter: Counter = RUNS,
    last_success: Gauge = LAST_SUCCESS,
    what: str = "EHR sync",
) -> None:
    """Call `sync_once(first)` every `every_s` seconds (`first`: True for the first run only,
    which alone honours --since). `runs`: stop after that many (tests); None: forever.
    `runs_counter`, `last_success`, `what`: another loop's series and log name (`ehr export`)."""
    done = 0
    while runs is None or done < runs:
        started = wall()
        try:
            result = sync_once(done == 0)
        except Exception as exc:  # noqa: BLE001 - a long-running sync outlives a bad run; the next one retries
            runs_counter.labels("failed").inc()
            log.warning("%s run failed, next run in %.0f s: %s: %s", what, every_s, type(exc).__name__, exc)
        else:
            runs_counter.labels("ok").inc()
            last_success.set(wall())
            report(result)
        done += 1
        if runs is not None and done >= runs:
            break
        sleep(max(0.0, every_s - (wall() - started)))
