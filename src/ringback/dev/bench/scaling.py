"""Scaling: throughput with 1, 2 and 3 worker processes on more partitions.

Figure (a)'s workload (day mix, hold 0) on `partitions` partitions (12: even shares for
1, 2, 3, 4 or 6 workers), each worker count in a fresh namespace. Before the load starts
every worker owns its share (the group is stable with all members assigned). The rate is
the whole backlog over the time until the group committed all of it, not (a)'s slope
between 10 % and 90 %: several workers commit in bursts, each every second or two and
not in step, and a slope through a few such steps said 4,000-6,000 events/s for 3 workers
that drained the backlog at 1,500-2,500/s.
"""

from __future__ import annotations

import os

from ringback.dev.bench import stats, throughput, workload
from ringback.dev.bench.harness import Namespace, log


def run(
    make_ns,
    *,
    partitions: int,
    workers: list[int],
    events: int,
    practices: int,
    patients_per_practice: int,
    timeout: float,
) -> dict:
    log(
        f"(scaling) {events:,} call events, {', '.join(map(str, workers))} workers, "
        f"{partitions} partitions, {os.cpu_count()} CPUs"
    )
    runs = []
    for k in workers:
        ns: Namespace = make_ns(k)
        try:
            pop = throughput.prepare(ns, practices, patients_per_practice)
            records, _ = workload.day_mix(pop, events, ns.partitions, seed=100 + k)
            r = throughput.measure_workers(ns, records, k, timeout)
        finally:
            ns.stop_all()
        runs.append(r)
        log(
            f"    {k} worker{'s' if k > 1 else ''}: {r['drain_rate'] or 0:,.0f} events/s "
            + ("(STALLED: see docs/benchmarks.md) " if r.get("stalled") else f"(drained in {r['wall_s']:.1f}s; ")
            + f"{r['events_per_cpu_s'] or 0:,.0f} events per CPU-second, load {r['loadavg_after'][0]})"
        )
    base = runs[0]["drain_rate"] if runs else None
    for r in runs:
        r["speedup"] = stats.ratio(r["drain_rate"], base)
    return {"partitions": partitions, "cpus": os.cpu_count(), "events": events, "runs": runs}
