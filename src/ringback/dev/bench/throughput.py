"""Figure (a): sustained throughput of one `ringback worker` on the full pipeline, as a
fraction of a bare Faust pass-through agent and of a bare aiokafka consume→produce
loop, all three reading the same pre-produced call-event topic on the same broker.

Method: the worker first reads the EHR records (patients, flags, appointments) so the
joins find them; then N call events of the day mix (workload.day_mix) are produced
as fast as the broker takes them and the worker's committed offsets on the call-event
topic are polled every 100 ms. The rate is the slope between 10 % and 90 % of N
(stats.sustained_rate). First-response hold 0: every missed call is answered inline
(a worker working off a backlog finds every hold expired anyway), so all the work an
event causes happens inside the measured window. The pass-through agent is measured
the same way (its committed offsets); the aiokafka loop, too fast for 1 s commits,
counts itself (a sample every 1,000 records) and the same slope is taken.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from ringback.dev.bench import profile as profiling
from ringback.dev.bench import stats, workload
from ringback.dev.bench.harness import Namespace, Stalled, create_topics, loadavg, log, wait_committed, wait_until
from ringback.kafka import topics

HOLD0 = {"first_response_hold": 0}
STALL_S = 30.0  # no commit for this long while records wait: the group is stuck, not slow


def prepare(ns: Namespace, practices: int, patients_per_practice: int, seed: int = 7) -> workload.Population:
    """Practices, topics, and the EHR records on their topics."""
    ns.apply_practices(workload.practices(practices, HOLD0))
    pop = workload.Population(practices, patients_per_practice, seed=seed)
    for name, records in pop.ehr_records(ns.partitions).items():
        spec = {"patients": topics.PATIENTS, "flags": topics.FLAGS, "appointments": topics.APPOINTMENTS}[name]
        ns.produce(ns.topic(spec), records)
    return pop


def wait_ehr_read(ns: Namespace, timeout: float, alive=None) -> None:
    for spec in (topics.PATIENTS, topics.FLAGS, topics.APPOINTMENTS):
        name = ns.topic(spec)
        end = ns.end(name)
        if end:
            wait_committed(
                ns.bootstrap, ns.streams_group, name, end, timeout, interval=0.25, alive=alive, stall_s=STALL_S
            )


def measure_workers(ns: Namespace, events: list, workers: int, timeout: float, profile: bool = False) -> dict:
    """Start `workers` stream workers, let them read the EHR records, produce the call
    events and measure how fast the group works them off."""
    # One state folder per worker, as on separate hosts: two workers on one RocksDB folder
    # fight over the databases' LOCK files (the second crashes at its first rebalance).
    procs = [
        ns.worker(f"worker-{i + 1}", env={"RINGBACK_STATE_DIR": str(ns.work_dir / f"state-{i + 1}")})
        for i in range(workers)
    ]

    def alive() -> bool:
        return all(p.alive() for p in procs)

    t0 = time.monotonic()
    try:
        try:
            wait_ehr_read(ns, timeout, alive=alive)
        except Stalled as exc:
            for p in procs:
                p.dump_stacks()
            log(
                f"    STALLED while reading the EHR records: {exc}; partitions behind (committed, end): "
                f"{exc.partitions}"
            )
            return {
                "workers": workers,
                "events": len(events),
                "rate": None,
                "events_per_cpu_s": None,
                "stalled": {
                    "phase": "reading the EHR records before the load",
                    "topic": str(exc),
                    "committed_of_end_by_partition": {str(k): list(v) for k, v in exc.partitions.items()},
                },
                "peak_rss_kb": [p.sample_peak() for p in procs],
                "loadavg_after": loadavg(),
            }
        if workers > 1:  # every worker has its share before the load starts
            from ringback.dev.bench.harness import group_members

            wait_until(
                lambda: (
                    group_members(ns.bootstrap, ns.streams_group)[2] >= workers
                    and group_members(ns.bootstrap, ns.streams_group)[0] == "STABLE"
                ),
                120,
                f"{workers} workers sharing the partitions",
            )
        ready_s = time.monotonic() - t0
        rss_before = [p.rss_kb() for p in procs]
        call_topic = ns.topic(topics.CALL_EVENTS)
        base = ns.committed(ns.streams_group, call_topic)
        load0 = loadavg()
        cpu0 = [p.cpu_s() for p in procs]
        recording = None
        if profile and profiling.available():
            recording = profiling.Recording(procs[0].pid, ns.work_dir / "profile-worker.txt")
        produced_at = time.monotonic()
        ns.produce(call_topic, events)
        produce_s = time.monotonic() - produced_at
        stalled = None
        try:
            samples = wait_committed(
                ns.bootstrap,
                ns.streams_group,
                call_topic,
                len(events),
                timeout,
                base=base,
                on_sample=lambda t, n: [p.sample_peak() for p in procs],
                alive=alive,
                stall_s=STALL_S,
            )
        except Stalled as exc:
            # faust-streaming 0.15.3 after a rebalance (docs/benchmarks.md): some partitions stop
            # committing. The rate is taken over what was committed; the partitions are reported.
            for p in procs:  # what were they doing? (py-spy stacks into their logs)
                p.dump_stacks()
            samples = exc.samples
            stalled = {
                "committed_of_end_by_partition": {str(k): list(v) for k, v in exc.partitions.items()},
                "committed": samples[-1][1],
            }
            log(f"    STALLED: {exc}; partitions behind (committed, end): {exc.partitions}")
        except TimeoutError:
            for p in procs:
                p.dump_stacks()
            raise
        profiled = None
        if recording is not None:
            raw = recording.stop()
            if raw is not None:
                text = raw.read_text()
                profiled = {"file": str(raw), **profiling.top(text, 30), "by_package": profiling.by_module(text)}
        reached = samples[-1][1]
        rate = stats.sustained_rate(samples, reached if stalled else len(events))
        cpu = sum((p.cpu_s() or 0) - (c or 0) for p, c in zip(procs, cpu0, strict=True))
        for p in procs:
            p.sample_peak()
        return {
            "workers": workers,
            "events": len(events),
            "rate": rate,
            # The whole backlog over the time to commit it (start-up and last commit included).
            "drain_rate": None if stalled else stats.ratio(reached, samples[-1][0] - produced_at),
            "stalled": stalled,
            "profile": profiled,
            "wall_s": samples[-1][0] - produced_at,
            # what the rate was taken from: (s after the produce started, records committed)
            "committed_samples": [[round(t - produced_at, 3), n] for t, n in samples],
            "produce_s": produce_s,
            "ready_s": ready_s,
            "cpu_s": cpu,
            "events_per_cpu_s": stats.ratio(reached, cpu),
            "rss_before_kb": rss_before,
            "peak_rss_kb": [p.peak_rss_kb for p in procs],
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
    finally:
        for p in procs:
            p.stop()


async def _aiokafka_loop(bootstrap: str, source: str, sink: str, total: int, timeout: float) -> list[tuple[float, int]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"bench-aiokafka-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
    n = 0
    deadline = time.monotonic() + timeout
    try:
        while n < total and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    await producer.send(sink, m.value, key=m.key, partition=tp.partition)
                    n += 1
                    if n % 1000 == 0:
                        samples.append((time.monotonic(), n))
        await producer.flush()
        samples.append((time.monotonic(), n))
    finally:
        await consumer.stop()
        await producer.stop()
    return samples


def measure_aiokafka(ns: Namespace, total: int, timeout: float) -> dict:
    source, sink = ns.topic(topics.CALL_EVENTS), f"{ns.name}.bench-aiokafka-out"
    create_topics(ns.bootstrap, [(sink, ns.partitions, {})])
    load0 = loadavg()
    samples = asyncio.run(_aiokafka_loop(ns.bootstrap, source, sink, total, timeout))
    return {
        "events": samples[-1][1],
        "rate": stats.sustained_rate(samples, total),
        "wall_s": samples[-1][0] - samples[0][0],
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }


def measure_faust_passthrough(ns: Namespace, total: int, timeout: float) -> dict:
    source = ns.topic(topics.CALL_EVENTS)
    app_id, sink = f"{ns.name}-passthrough", f"{ns.name}.bench-passthrough-out"
    create_topics(ns.bootstrap, [(sink, ns.partitions, {})])
    proc = ns.start_python(
        "faust-passthrough",
        "ringback.dev.bench.passthrough",
        env={
            "BENCH_APP_ID": app_id,
            "BENCH_SOURCE": source,
            "BENCH_SINK": sink,
            "BENCH_PARTITIONS": str(ns.partitions),
        },
    )
    load0 = loadavg()
    cpu_first: list[float] = []

    def sample(t: float, done: int) -> None:
        proc.sample_peak()
        if done and not cpu_first:  # CPU from the first commit on: leave the imports out
            cpu_first.append(proc.cpu_s() or 0.0)
            cpu_first.append(done)

    try:
        samples = wait_committed(ns.bootstrap, app_id, source, total, timeout, on_sample=sample, alive=proc.alive)
        proc.sample_peak()
        cpu = (proc.cpu_s() or 0.0) - cpu_first[0] if cpu_first else None
        return {
            "events": total,
            "rate": stats.sustained_rate(samples, total),
            "events_per_cpu_s": stats.ratio(total - cpu_first[1], cpu) if cpu_first else None,
            "wall_s": samples[-1][0] - samples[0][0],
            "peak_rss_kb": proc.peak_rss_kb,
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
    finally:
        proc.stop()


def run(
    ns: Namespace, *, events: int, practices: int, patients_per_practice: int, timeout: float, profile: bool = False
) -> dict:
    log(
        f"(a) throughput: {events:,} call events of the day mix, {practices} practices, "
        f"{practices * patients_per_practice:,} patients, {ns.partitions} partitions"
    )
    pop = prepare(ns, practices, patients_per_practice)
    records, mix = workload.day_mix(pop, events, ns.partitions)
    worker = measure_workers(ns, records, 1, timeout, profile=profile)
    log(
        f"    ringback worker (full pipeline): {worker['rate'] or 0:,.0f} events/s "
        f"(peak RSS {worker['peak_rss_kb'][0] / 1024:.0f} MiB)"
    )
    faust_pt = measure_faust_passthrough(ns, events, timeout)
    log(f"    bare Faust pass-through agent:    {faust_pt['rate'] or 0:,.0f} events/s")
    aio = measure_aiokafka(ns, events, timeout)
    log(f"    bare aiokafka consume→produce:    {aio['rate'] or 0:,.0f} events/s")
    result = {
        "events": events,
        "mix": mix,
        "partitions": ns.partitions,
        "practices": practices,
        "patients": practices * patients_per_practice,
        "first_response_hold_s": 0,
        "worker": worker,
        "faust_passthrough": faust_pt,
        "aiokafka": aio,
        "worker_rate": worker["rate"],
        "ratio_to_faust": stats.ratio(worker["rate"], faust_pt["rate"]),
        "ratio_to_aiokafka": stats.ratio(worker["rate"], aio["rate"]),
        "faust_to_aiokafka": stats.ratio(faust_pt["rate"], aio["rate"]),
        # The same comparison in CPU cost: steadier than wall-clock rates on a loaded machine.
        "cpu_ratio_to_faust": stats.ratio(worker.get("events_per_cpu_s"), faust_pt.get("events_per_cpu_s")),
    }

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.1%}"

    log(
        f"    worker/Faust {pct(result['ratio_to_faust'])} (in CPU cost {pct(result['cpu_ratio_to_faust'])}), "
        f"worker/aiokafka {pct(result['ratio_to_aiokafka'])}, Faust/aiokafka {pct(result['faust_to_aiokafka'])}"
    )
    return result
