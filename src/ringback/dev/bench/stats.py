"""The figures' arithmetic, as pure functions (tested in tests/dev/bench/test_stats.py).

Nothing in here starts a process or reads a clock: the benchmark modules collect
samples (timestamps, counts, latencies) and these functions turn them into the
numbers BENCHMARKS.md reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0 ≤ q ≤ 100) by linear interpolation between closest ranks
    (numpy's default method); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (rank - lo))


def summarize(values: Iterable[float]) -> dict:
    """count, p50, p90, p99, max and mean of a sample (None fields when empty)."""
    data = sorted(values)
    if not data:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(data),
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "max": float(data[-1]),
        "mean": sum(data) / len(data),
    }


def sustained_rate(
    samples: Sequence[tuple[float, float]], total: float, lo: float = 0.1, hi: float = 0.9
) -> float | None:
    """Records per second while a backlog of `total` records is worked off.

    `samples` are (time in s, records done so far), in time order, e.g. a consumer
    group's committed offsets polled every 100 ms. With enough distinct counts between
    `lo` and `hi` of `total`, the rate is the least-squares slope of those samples, which
    leaves out the start (connecting, first fetch) and the tail (the last commit
    interval). With coarse samples (a small backlog worked off in a few commits: the
    counts move in steps) a slope through a step's plateau would be meaningless; the
    rate is then the records done from the first sample to the first sample at or above
    `hi`, over that time: a lower bound (it includes up to one commit interval).
    None when the samples never get there."""
    if total <= 0:
        return None
    band = [(t, n) for t, n in samples if lo * total <= n <= hi * total]
    if len({n for _, n in band}) >= 4 and band[-1][0] > band[0][0]:
        return _slope(band)
    if not samples:
        return None
    start = samples[0]
    end = next(((t, n) for t, n in samples if n >= hi * total), None)
    if end is None or end[0] <= start[0] or end[1] <= start[1]:
        return None
    return (end[1] - start[1]) / (end[0] - start[0])


def _slope(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx


def ratio(part: float | None, whole: float | None) -> float | None:
    """part / whole, None when either is missing or whole is not positive."""
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def keeps_up(
    offered_rate: float,
    achieved_rate: float,
    expected: int,
    arrived: int,
    latencies_in_order: Sequence[float],
    *,
    min_share: float = 0.95,
    growth_s: float = 0.5,
) -> tuple[bool, str]:
    """Whether a system kept up with an offered load during one step, and why not.

    Keeping up means: the load generator got (nearly) the offered rate through the
    gateway, every expected effect arrived, and the latency did not grow through the
    step (a growing queue): the median of the last third of the latencies (in send
    order) is at most `growth_s` above the median of the first third. A system that
    keeps up with a steady load has a flat latency, whatever its level."""
    if offered_rate > 0 and achieved_rate < min_share * offered_rate:
        return False, f"accepted {achieved_rate:.0f}/s of {offered_rate:.0f}/s offered"
    if arrived < expected:
        return False, f"{expected - arrived} of {expected} effects did not arrive"
    n = len(latencies_in_order)
    if n >= 6:
        third = n // 3
        first = percentile(latencies_in_order[:third], 50) or 0.0
        last = percentile(latencies_in_order[-third:], 50) or 0.0
        if last > first + growth_s:
            return False, f"latency grew through the step (median {first:.2f}s -> {last:.2f}s)"
    return True, "kept up"


def knee(steps: Sequence[dict]) -> dict:
    """The knee of a load ladder: the highest offered rate that kept up, and the lowest
    that did not (None when every step kept up, or none did). `steps`: dicts with
    `offered` and `keeps_up`."""
    ok = [s["offered"] for s in steps if s["keeps_up"]]
    bad = [s["offered"] for s in steps if not s["keeps_up"]]
    highest_ok = max(ok) if ok else None
    above = [r for r in bad if highest_ok is None or r > highest_ok]
    return {"highest_kept_up": highest_ok, "first_not_kept_up": min(above) if above else None}


def per_100k(delta_bytes: float | None, count: int) -> float | None:
    """Bytes per 100,000 items from a growth measured over `count` items."""
    if delta_bytes is None or count <= 0:
        return None
    return delta_bytes * 100_000 / count


def partition_guidance(
    practices: int,
    calls_per_practice_day: float,
    events_per_call: float,
    peak_hour_share: float,
    worker_rate: float | None,
    *,
    headroom: float = 0.5,
    min_workers: int = 3,
    entries_per_practice: int = 10_000,
    restore_rate: float | None = None,
    restore_target_s: float = 120.0,
) -> dict:
    """How many partitions a health system should give the co-partitioned topics.

    Partitions cap the number of workers that can share the load (one partition is never
    split), a partition's state is restored as a unit when a worker without a standby copy
    takes it over, and the count can only change by re-creating the topics (keys move).
    So the count is the largest of:
      * the workers the peak hour needs at `headroom` of the measured per-worker rate
        (plan no worker above half its benchmark rate: catch-up after an outage, retries
        and rebalances need the rest),
      * `min_workers` (a worker per host for availability, plus one to roll restarts),
      * enough partitions that one partition's table entries restore within
        `restore_target_s` at the measured cold-restore rate,
    rounded up to a multiple of 12 (even shares for 1, 2, 3, 4, 6 or 12 workers)."""
    events_per_day = practices * calls_per_practice_day * events_per_call
    peak_rate = events_per_day * peak_hour_share / 3600
    usable = worker_rate * headroom if worker_rate else None
    for_throughput = math.ceil(peak_rate / usable) if usable else 1
    entries = practices * entries_per_practice
    per_partition_max = restore_rate * restore_target_s if restore_rate else None
    for_state = math.ceil(entries / per_partition_max) if per_partition_max else 1
    need = max(for_throughput, min_workers, for_state, 1)
    partitions = int(math.ceil(need / 12) * 12)
    return {
        "practices": practices,
        "events_per_day": events_per_day,
        "peak_events_per_s": peak_rate,
        "workers_for_peak": for_throughput,
        "table_entries": entries,
        "partitions_for_restore": for_state,
        "entries_per_partition": entries / partitions,
        "restore_s_per_partition": (entries / partitions / restore_rate) if restore_rate else None,
        "partitions": partitions,
    }
