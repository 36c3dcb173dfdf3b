"""`ringback bench`: the figures of the performance targets (docs/benchmarks.md) in one run on this machine.

Starts its own broker (or uses KAFKA_BOOTSTRAP_SERVERS), runs each figure in its
own namespace, prints every figure, and writes `bench.json` (everything measured,
the machine, the versions, the command) and `bench.md` (the table) to --out.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ringback.config import user_dirs
from ringback.dev.bench import report
from ringback.dev.bench.harness import Broker, Namespace, close_probes, log, new_namespace
from ringback.dev.fake_apis import LATENCY_S

FIGURES = ("a", "b", "sink", "c", "d", "e", "scaling")


@dataclass(frozen=True)
class Profile:
    name: str
    partitions: int
    # (a)
    a_events: int
    a_practices: int
    a_patients_per_practice: int
    # (b)
    b_practices: int
    b_step_s: float
    b_rates: tuple[float, float]  # the two fixed points: a low rate and the 1,000/s of the latency target
    b_ladder: tuple[float, ...]  # the knee search, ascending
    b_drain_s: float
    # sink: SMS/s of one sink process
    sink_actions: int
    sink_warmup_s: float
    sink_window_s: float
    # (c)
    c_open_cases: int
    c_probe_rate: float
    c_probe_s: float
    c_hold_s: int
    c_followup_s: int
    c_background_rate: float
    # (d)
    d_entries: int
    # (e): kill -9 → next SMS under a steady flow of new callers; each makes an SMS and a Slack post. One
    # sink process carries ~80 SMS/s at 250 ms (BENCHMARKS.md): 10 callers/s gives the figure a 0.1 s
    # resolution and shows the worker's outage (at 1/s a queue in the sinks hid it)
    e_rate: float
    e_steady_s: float
    # scaling
    s_partitions: int
    s_workers: tuple[int, ...]
    s_events: int
    timeout_s: float


FULL = Profile(
    "full",
    partitions=8,
    a_events=30_000,
    a_practices=100,
    a_patients_per_practice=100,
    b_practices=100,
    b_step_s=12,
    b_rates=(100, 1000),
    # From 5/s: with the API answering in 250 ms the knee is far below 100/s (BENCHMARKS.md).
    b_ladder=(5, 10, 20, 50, 100, 150, 200, 300, 450, 650, 1000, 1500, 2200, 3000),
    b_drain_s=45,
    # A backlog that outlasts the window: one sink process carries ~250 SMS/s at the API's latency.
    sink_actions=10_000,
    sink_warmup_s=5,
    sink_window_s=30,
    c_open_cases=100_000,
    c_probe_rate=100,
    c_probe_s=30,
    c_hold_s=15,
    c_followup_s=30,
    c_background_rate=200,
    d_entries=1_000_000,
    e_rate=10,
    e_steady_s=10,
    s_partitions=12,
    s_workers=(1, 2, 3),
    s_events=45_000,  # 20-30 s per worker count: the first and last commit matter little
    timeout_s=900,
)
# CI-sized: every code path of the full run, on small numbers (a few minutes, most of it
# process start-ups); its timings mean nothing.
QUICK = Profile(
    "quick",
    partitions=8,
    a_events=5_000,
    a_practices=20,
    a_patients_per_practice=25,
    b_practices=20,
    b_step_s=3,
    b_rates=(100, 1000),
    b_ladder=(100,),
    b_drain_s=20,
    sink_actions=1_500,
    sink_warmup_s=1,
    sink_window_s=8,
    c_open_cases=5_000,
    c_probe_rate=40,
    c_probe_s=3,
    c_hold_s=4,
    c_followup_s=7,
    c_background_rate=40,
    d_entries=50_000,
    e_rate=2,
    e_steady_s=3,
    s_partitions=12,
    s_workers=(1, 2),
    s_events=3_000,
    timeout_s=240,
)


def machine() -> dict:
    info: dict = {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["ram_gib"] = round(int(mem) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    try:
        models = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        info["cpu_model"] = models[0] if models else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("faust-streaming", "aiokafka", "confluent-kafka", "rocksdict", "twilio", "aiohttp"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    from ringback.dev.local_kafka import kafka_version

    out["kafka"] = kafka_version()
    java = shutil.which("java")
    if java:
        first = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()
        out["java"] = first[0] if first else None
    out["ringback_commit"] = git_commit()
    return out


def git_commit() -> str:
    """The commit of the checkout the bench runs in (the current directory), marked when the
    tree has uncommitted changes; "unknown" outside a checkout (an installed ringback)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:  # no git
        return "unknown"
    return head.stdout.strip() + ("+uncommitted changes" if dirty else "")


def run(
    quick: bool = False,
    only: tuple[str, ...] = FIGURES,
    out_dir: Path | None = None,
    command: str | None = None,
    profile_worker: bool = False,
    api_latency_s: float = LATENCY_S,
) -> dict:
    import signal

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: every figure's `finally` stops the
    # processes it started and the broker is stopped, instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    profile = QUICK if quick else FULL
    out_dir = Path(out_dir or user_dirs.data_path("bench", user_dirs.run_name())).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "profile": profile.name,
        "command": command or "ringback bench",
        "api_latency_s": api_latency_s,
        "machine": machine(),
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "figures": {},
        "errors": {},
    }
    import logging

    for noisy in ("aiokafka", "faust", "mode", "kafka"):  # the in-process baselines' INFO lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log(f"ringback bench ({profile.name}): {', '.join(only)}; results in {out_dir}")
    m = results["machine"]
    log(f"· {m['nproc']} CPUs ({m.get('cpu_model')}), {m.get('ram_gib')} GiB RAM, load {m['loadavg_at_start']}")
    log(f"· the Twilio/Slack stand-in answers in {api_latency_s * 1000:.0f} ms ±50 % (--api-latency-ms)")
    broker = Broker(out_dir)
    started = time.monotonic()
    try:
        bootstrap = broker.start()

        def ns(tag: str, partitions: int | None = None) -> Namespace:
            return Namespace(
                bootstrap,
                new_namespace(tag),
                partitions or profile.partitions,
                out_dir / tag,
                broker_pid=broker.local.pid() if broker.local else None,
            )

        for figure in only:
            t0 = time.monotonic()
            try:
                results["figures"][figure] = _figure(figure, profile, ns, profile_worker, api_latency_s)
            except Exception as exc:  # noqa: BLE001 - the other figures still run; the error is reported
                log(f"    {figure}: FAILED: {type(exc).__name__}: {exc}")
                results["errors"][figure] = f"{type(exc).__name__}: {exc}"
            results.setdefault("durations_s", {})[figure] = round(time.monotonic() - t0, 1)
            # After every figure: an interrupted run keeps what it measured.
            (out_dir / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    finally:
        close_probes()
        broker.stop()
    results["total_s"] = round(time.monotonic() - started, 1)
    results["guidance"] = guidance(results["figures"])
    table = report.markdown(results["figures"])
    if results["guidance"]:
        g = results["guidance"]
        table += (
            f"\nPartitions for a health system of {g['practices']:,} practices (BENCHMARKS.md): "
            f"{g['partitions']} ({g['peak_events_per_s']:.0f} events/s at the peak hour, "
            f"{g['table_entries']:,} table entries, "
            f"{_fmt(g['restore_s_per_partition'])} s to restore one partition cold)\n"
        )
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "bench.md").write_text(f"# ringback bench ({profile.name})\n\n`{results['command']}`\n\n{table}")
    log("\n" + table)
    log(f"bench.json and bench.md in {out_dir} ({results['total_s']:.0f}s)")
    return results


def guidance(figures: dict) -> dict | None:
    """Partition guidance for 1,000 practices from the measured worker rate (a) and the
    measured cold-restore rate (d): stats.partition_guidance, assumptions in BENCHMARKS.md."""
    from ringback.dev.bench import stats

    a, d = figures.get("a"), figures.get("d")
    rate = a.get("worker_rate") if a else None
    restore = None
    if d and d.get("cold_start") and d.get("warm_restart"):
        restore = d["entries"] / max(d["cold_start"]["seconds"] - d["warm_restart"]["seconds"], 1.0)
    if restore is None:  # without figure (d) the state, which decides the count, is unknown
        return None
    return {
        **stats.partition_guidance(
            1000,
            calls_per_practice_day=100,
            events_per_call=2.5,
            peak_hour_share=0.15,
            worker_rate=rate,
            restore_rate=restore,
        ),
        "worker_rate": rate,
        "restore_rate": restore,
    }


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _figure(figure: str, p: Profile, ns, profile_worker: bool = False, api_latency_s: float = LATENCY_S) -> dict:
    from ringback.dev.bench import gates, latency, restart, scaling, sink_rate, takeover, throughput

    if figure == "a":
        n = ns("a")
        try:
            return throughput.run(
                n,
                events=p.a_events,
                practices=p.a_practices,
                patients_per_practice=p.a_patients_per_practice,
                timeout=p.timeout_s,
                profile=profile_worker,
            )
        finally:
            n.stop_all()
    if figure == "b":
        return latency.run(
            ns("b"),
            practices=p.b_practices,
            duration=p.b_step_s,
            rates=p.b_rates,
            ladder=p.b_ladder,
            drain_s=p.b_drain_s,
            api_latency_s=api_latency_s,
        )
    if figure == "sink":
        return sink_rate.run(
            ns("sink"),
            actions=p.sink_actions,
            practices=20,
            warmup_s=p.sink_warmup_s,
            window_s=p.sink_window_s,
            timeout=p.timeout_s,
            api_latency_s=api_latency_s,
        )
    if figure == "c":
        return gates.run(
            ns("c"),
            open_cases=p.c_open_cases,
            build_practices=20,
            probe_rate=p.c_probe_rate,
            probe_s=p.c_probe_s,
            hold_s=p.c_hold_s,
            followup_s=p.c_followup_s,
            background_rate=p.c_background_rate,
            timeout=p.timeout_s,
        )
    if figure == "d":
        n = ns("d")
        try:
            return restart.run(n, entries=p.d_entries, practices=100, timeout=p.timeout_s)
        finally:
            n.stop_all()
    if figure == "e":  # on a broker of its own: it kills it
        return takeover.run(
            ns("e"),
            rate=p.e_rate,
            practices=20,
            steady_s=p.e_steady_s,
            timeout=p.timeout_s,
            api_latency_s=api_latency_s,
        )
    if figure == "scaling":
        return scaling.run(
            lambda k: ns(f"s{k}", p.s_partitions),
            partitions=p.s_partitions,
            workers=list(p.s_workers),
            events=p.s_events,
            practices=20,
            patients_per_practice=50,
            timeout=p.timeout_s,
        )
    raise ValueError(f"unknown figure {figure!r} (one of {', '.join(FIGURES)})")


def parse_only(value: str | None) -> tuple[str, ...]:
    if not value:
        return FIGURES
    wanted = tuple(x.strip().lower() for x in value.split(",") if x.strip())
    unknown = [x for x in wanted if x not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    return wanted


def command_line() -> str:
    return "ringback " + " ".join(shlex.quote(a) for a in sys.argv[1:])
