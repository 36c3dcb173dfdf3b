"""Figure (c): gate timer firing delay (fired − due), p50/p99/max, with 100,000 open
cases in one worker; and the worker's memory per 100,000 open cases.

Build: N missed calls from distinct unknown numbers are produced straight to the
call-event topic (no gateway) for practices whose first-response hold is 4 hours, so
each opens a new-patient case that stays open, with its gates in the due-index,
through the whole measurement. The worker's RSS is read before and after the build.

Measure: probe missed calls are produced at a steady rate, in real time, for
practices with a short hold (first SMS gate) and follow-up (second SMS gate), while
the N cases sit in the table. Each probe's gates come due `hold` and `followup`
seconds after its `received_at`; "fired" is the timestamp of the action record the
worker produced for the step (its producer's clock, the same machine). Background
call traffic of the day mix runs during the probe window at `background_rate`.
"""

from __future__ import annotations

import random
import threading
import time

from ringback.dev.bench import stats, workload
from ringback.dev.bench.harness import Namespace, loadavg, log, read_records, wait_committed
from ringback.kafka import topics

BACKGROUND_HOLD_S = 4 * 3600


def _du(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _produce_paced(
    ns: Namespace,
    rate: float,
    duration: float,
    practices: range,
    partitions: int,
    first_caller: int,
    background: list | None = None,
    background_rate: float = 0.0,
) -> int:
    """Probe missed calls at `rate`/s for `duration` s, received_at = the time each is sent;
    interleaved with `background` records at `background_rate`/s. Returns the probe count."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": ns.bootstrap, "linger.ms": 2, "acks": "all", "partitioner": "murmur2_random"}
    )
    topic = ns.topic(topics.CALL_EVENTS)
    rng = random.Random(31)
    start = time.monotonic()
    sent = bg_sent = 0
    total = int(rate * duration)
    bg_total = int(background_rate * duration)
    while sent < total or (background and bg_sent < min(bg_total, len(background))):
        elapsed = time.monotonic() - start
        while sent < total and sent / rate <= elapsed:
            practice = practices[sent % len(practices)]
            event = workload.call_event(
                practice, workload.caller_number(first_caller + sent), "MISSED", int(time.time() * 1000), rng
            )
            key, value, part = workload.keyed(event, partitions)
            producer.produce(topic, key=key, value=value, partition=part)
            sent += 1
        while background and bg_sent < min(bg_total, len(background)) and bg_sent / background_rate <= elapsed:
            key, value, part = background[bg_sent]
            producer.produce(topic, key=key, value=value, partition=part)
            bg_sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    return sent


def run(
    ns: Namespace,
    *,
    open_cases: int,
    build_practices: int,
    probe_rate: float,
    probe_s: float,
    hold_s: int,
    followup_s: int,
    background_rate: float,
    timeout: float,
) -> dict:
    log(
        f"(c) gate firing delay with {open_cases:,} open cases: probes {probe_rate:.0f}/s for {probe_s:.0f}s "
        f"(gates at +{hold_s}s and +{followup_s}s), background {background_rate:.0f} events/s"
    )
    probe_practices = range(build_practices, build_practices + 10)
    entries = workload.practices(build_practices, {"first_response_hold": BACKGROUND_HOLD_S}) + workload.practices(
        10, {"first_response_hold": hold_s, "new_patient_followup": followup_s}, start=build_practices
    )
    ns.apply_practices(entries)
    call_topic = ns.topic(topics.CALL_EVENTS)
    worker = ns.worker()
    try:
        # Start-up and an idle baseline: a few calls through, then the RSS without cases.
        warm = workload.missed_calls(
            50, build_practices, ns.partitions, int(time.time() * 1000), seed=3, first_caller=30_000_000
        )
        ns.produce(call_topic, warm)
        wait_committed(
            ns.bootstrap, ns.streams_group, call_topic, len(warm), timeout, interval=0.25, alive=worker.alive
        )
        time.sleep(1.0)
        rss_before = worker.rss_kb()
        disk_before = _du(ns.work_dir / "state")

        # Build the open cases.
        now = int(time.time() * 1000)
        build = workload.missed_calls(open_cases, build_practices, ns.partitions, now, first_caller=31_000_000)
        t0 = time.monotonic()
        cpu0 = worker.cpu_s()
        ns.produce(call_topic, build)
        samples = wait_committed(
            ns.bootstrap,
            ns.streams_group,
            call_topic,
            open_cases,
            timeout,
            base=len(warm),
            interval=0.25,
            on_sample=lambda t, n: worker.sample_peak(),
            alive=worker.alive,
        )
        build_s = time.monotonic() - t0
        build_rate = stats.sustained_rate(samples, open_cases)
        build_cpu = (worker.cpu_s() or 0) - (cpu0 or 0)
        time.sleep(2.0)
        rss_after = worker.rss_kb()
        disk_after = _du(ns.work_dir / "state")
        log(
            f"    built {open_cases:,} open cases in {build_s:.0f}s ({build_rate or 0:,.0f} cases/s); "
            f"RSS {(rss_before or 0) / 1024:.0f} → {(rss_after or 0) / 1024:.0f} MiB"
        )

        # Probes, with background traffic from the day mix (own practices' numbers).
        background: list = []
        if background_rate > 0:
            pop = workload.Population(build_practices, 20, seed=41)
            background, _ = workload.day_mix(pop, int(background_rate * probe_s) + 1, ns.partitions, seed=43)
        load0 = loadavg()
        probe_first_caller = 40_000_000
        sent_box: list[int] = []
        producer = threading.Thread(
            target=lambda: sent_box.append(
                _produce_paced(
                    ns,
                    probe_rate,
                    probe_s,
                    probe_practices,
                    ns.partitions,
                    probe_first_caller,
                    background,
                    background_rate,
                )
            )
        )
        producer.start()
        producer.join()
        probes = sent_box[0]
        # Wait until the last follow-up is due, plus slack for lateness.
        time.sleep(followup_s + 3.0)
        deadline = time.monotonic() + 60
        delays: dict[str, list[float]] = {"first_sms": [], "second_sms": []}
        while True:
            delays = {"first_sms": [], "second_sms": []}
            windows = {"first_sms": hold_s * 1000, "second_sms": followup_s * 1000}
            for _, action, ts in read_records(ns.bootstrap, ns.topic(topics.ACTIONS), "action_command"):
                step = action["step"]
                if step in windows and action["practice_id"] in {workload.practice_id(p) for p in probe_practices}:
                    due = action["call_reported_at"] + windows[step]
                    delays[step].append((ts - due) / 1000)
            if (
                len(delays["first_sms"]) >= probes and len(delays["second_sms"]) >= probes
            ) or time.monotonic() > deadline:
                break
            time.sleep(2)
        worker.sample_peak()
        both = delays["first_sms"] + delays["second_sms"]
        delay = stats.summarize(both)
        rss_growth = stats.per_100k((rss_after or 0) - (rss_before or 0), open_cases)
        result = {
            "open_cases": open_cases,
            "build_s": build_s,
            "build_rate": build_rate,
            "build_events_per_cpu_s": stats.ratio(open_cases, build_cpu),
            "probes": probes,
            "probe_rate": probe_rate,
            "background_rate": background_rate,
            "gates_expected": 2 * probes,
            "gates_fired": len(both),
            "delay_s": delay,
            "first_sms_delay_s": stats.summarize(delays["first_sms"]),
            "second_sms_delay_s": stats.summarize(delays["second_sms"]),
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "rss_per_100k_open_cases_kb": rss_growth,
            "state_disk_per_100k_open_cases_bytes": stats.per_100k(disk_after - disk_before, open_cases),
            "peak_rss_kb": worker.peak_rss_kb,
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        log(
            f"    {len(both)} of {2 * probes} gates fired: delay p50 {delay['p50'] or 0:.3f}s "
            f"p99 {delay['p99'] or 0:.3f}s max {delay['max'] or 0:.3f}s; RSS +{(rss_growth or 0) / 1024:.0f} MiB "
            f"per 100k open cases"
        )
        return result
    finally:
        ns.stop_all()
