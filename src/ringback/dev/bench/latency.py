"""Figure (b): webhook accepted (the gateway's 2xx) → SMS request leaving the sink,
p50/p99 at fixed offered loads, and the knee where the pipeline stops keeping up.

Everything is real and local: `ringback ingest`, one `ringback worker`, `ringback
sinks` (the official twilio library) and the Twilio stand-in (src/ringback/dev/fake_apis.py,
in a process of its own, timestamping every request when it arrives, answering Messages
creates and Slack posts after Twilio's latency: 250 ms ±50 % unless told otherwise). A load
generator posts signed Twilio voice status callbacks open-loop (each request at
its scheduled time, whether earlier ones were answered or not): 81 % answered calls,
19 % missed calls from numbers no practice knows (new patients → first SMS).
First-response hold 0, as the target has it (docs/benchmarks.md). The latency of a missed call is
(stand-in received the Messages POST for that caller) − (the generator received the
gateway's 2xx), both `time.time()` on this machine. The actions topic's record
timestamps split it into worker (accepted → action produced) and sinks (action → SMS).
Each step also reports the CPU every part used for it, per accepted call event (the
gateway, the worker, the sinks, the broker when the bench started it, the stand-in, the load
generator): what a deployment of that rate needs in CPUs, and which part needs the most.

Ladder: rates in ascending order from the lowest until one does not keep up (each step then
starts with empty queues), then the low fixed rate (100/s) and 1,000/s in any case, last
(stats.keeps_up, stats.knee).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from urllib.parse import urlencode

from ringback.dev.bench import stats, workload
from ringback.dev.bench.harness import (
    BENCH_ACCOUNT,
    BENCH_TOKEN,
    SLACK_SECRET,
    Namespace,
    free_port,
    loadavg,
    log,
    proc_cpu_s,
    read_records,
    wait_until,
)
from ringback.dev.fake_apis import LATENCY_S
from ringback.kafka import topics

VOICE_STATUS = "/webhooks/twilio/voice/status"
DRAIN_CAP_S = 30.0  # after a step that did not keep up, wait at most this long for the queues to empty


# ---------------------------------------------------------------- the stand-in, in its own process
def _serve_standin(conn, latency_s: float) -> None:
    from ringback.dev.fake_apis import FakeApiServer

    # Twilio's API and Slack keep connections open too.
    server = FakeApiServer(keep_alive=True, latency_s=latency_s)
    conn.send(server.url)
    while True:
        msg = conn.recv()
        if msg == "times":
            conn.send(sorted(r.received_at for r in server.messages()))
        elif msg == "dump":
            conn.send([(r.path, r.form.get("To"), r.received_at) for r in list(server.requests) if r.method == "POST"])
        elif msg == "count":
            conn.send(sum(1 for r in list(server.requests) if r.method == "POST" and r.path.endswith("/Messages.json")))
        else:
            server.close()
            conn.send("closed")
            return


class StandinProcess:
    def __init__(self, latency_s: float = LATENCY_S) -> None:
        self.latency_s = latency_s
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_standin, args=(child, latency_s), daemon=True)
        self._proc.start()
        self.url = self._conn.recv()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def messages_count(self) -> int:
        self._conn.send("count")
        return self._conn.recv()

    def message_times(self) -> list[float]:
        """When each Messages POST arrived (time.time()), in order."""
        self._conn.send("times")
        return self._conn.recv()

    def sms(self) -> dict[str, float]:
        """Caller number → when its first Messages POST arrived."""
        self._conn.send("dump")
        first: dict[str, float] = {}
        for path, to, at in self._conn.recv():
            if path.endswith("/Messages.json") and to and to not in first:
                first[to] = at
        return first

    def close(self) -> None:
        try:
            self._conn.send("stop")
            self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()


# ---------------------------------------------------------------- the load generator
def _requests(base_url: str, count: int, practices: int, rng: random.Random, next_caller: list[int]) -> list:
    """Signed voice status callbacks: (body, headers, caller of a missed call or None)."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(BENCH_TOKEN)
    url = base_url + VOICE_STATUS
    out = []
    for _ in range(count):
        practice = rng.randrange(practices)
        next_caller[0] += 1
        caller = workload.caller_number(next_caller[0])
        missed = rng.random() < workload.MISS_RATE
        params = {
            "CallSid": "CA" + f"{rng.getrandbits(128):032x}",
            "AccountSid": BENCH_ACCOUNT,
            "From": caller,
            "To": workload.practice_did(practice),
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "CallStatus": "no-answer" if missed else "completed",
        }
        if not missed:
            params["CallDuration"] = "180"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": validator.compute_signature(url, params),
        }
        out.append((urlencode(params).encode(), headers, caller if missed else None))
    return out


async def _offer(base_url: str, requests: list, rate: float) -> list[tuple[float, float, int]]:
    """Post each request at its time (open loop); (scheduled wall time, 2xx wall time, status)."""
    import aiohttp

    results: list = [None] * len(requests)
    loop = asyncio.get_running_loop()
    url = base_url + VOICE_STATUS
    connector = aiohttp.TCPConnector(limit=1024)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(i: int, scheduled: float) -> None:
            body, headers, _ = requests[i]
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    results[i] = (scheduled, time.time(), response.status)
            except Exception:  # noqa: BLE001 - counted as not accepted
                results[i] = (scheduled, time.time(), -1)

        tasks = []
        start = loop.time() + 0.05
        wall0 = time.time() + 0.05
        i = 0
        while i < len(requests):
            now = loop.time()
            while i < len(requests) and start + i / rate <= now:
                tasks.append(asyncio.ensure_future(one(i, wall0 + i / rate)))
                i += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    return results


def run_step(
    base_url: str,
    standin: StandinProcess,
    rate: float,
    duration: float,
    practices: int,
    rng: random.Random,
    next_caller: list[int],
    drain_s: float,
) -> dict:
    count = max(1, int(rate * duration))
    requests = _requests(base_url, count, practices, rng, next_caller)
    load0 = loadavg()
    results = asyncio.run(_offer(base_url, requests, rate))
    accepted = [(r, req) for r, req in zip(results, requests, strict=True) if r and 200 <= r[2] < 300]
    first_sched, last_done = results[0][0], max(r[1] for r in results if r)
    achieved = len(accepted) / max(last_done - first_sched, 1e-9) if accepted else 0.0
    expected = {req[2]: r[1] for r, req in accepted if req[2]}
    deadline = time.monotonic() + drain_s
    sms: dict[str, float] = {}
    while time.monotonic() < deadline:
        sms = standin.sms()
        if all(c in sms for c in expected):
            break
        time.sleep(0.5)
    ordered = [(acc, sms[c] - acc) for c, acc in sorted(expected.items(), key=lambda kv: kv[1]) if c in sms]
    latencies = [lat for _, lat in ordered]
    ok, why = stats.keeps_up(rate, achieved, len(expected), len(latencies), latencies)
    ack_ms = [(r[1] - r[0]) * 1000 for r, _ in accepted]
    return {
        "offered": rate,
        "duration_s": duration,
        "requests": count,
        "accepted": len(accepted),
        "achieved_rate": achieved,
        "missed_calls": len(expected),
        "sms_arrived": len(latencies),
        "latency_s": stats.summarize(latencies),
        "gateway_response_ms": stats.summarize(ack_ms),
        "keeps_up": ok,
        "why": why,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
        "_accepted_at": expected,
        "_sms_at": {c: sms[c] for c in expected if c in sms},
    }


def cpu_seconds(parts: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds used so far by each part (by pid); parts whose pid is unknown (None) or
    gone are left out."""
    used = {name: proc_cpu_s(pid) if pid is not None else None for name, pid in parts.items()}
    return {name: seconds for name, seconds in used.items() if seconds is not None}


def cpu_per_event(before: dict[str, float], after: dict[str, float], events: int, wall_s: float) -> dict:
    """Milliseconds of CPU per accepted call event, each part and in all, and the CPUs the
    parts kept busy on average over the step."""
    used = {k: after[k] - before[k] for k in before if k in after}
    per_event = {k: v * 1000 / events for k, v in used.items()} if events else {}
    return {
        "ms_per_event": per_event,
        "total_ms_per_event": sum(per_event.values()) if events else None,
        "cpus_busy": sum(used.values()) / wall_s if wall_s > 0 else None,
    }


def _split(ns: Namespace, steps: list[dict]) -> None:
    """Attach the worker/sinks split of each step's latency (from the action records)."""
    produced: dict[str, float] = {}
    for _, action, ts in read_records(ns.bootstrap, ns.topic(topics.ACTIONS), "action_command"):
        if action["kind"] == "SEND_SMS" and action["step"] == "first_sms":
            produced.setdefault(action["recipient"], ts / 1000)
    for step in steps:
        acc, sms = step.pop("_accepted_at"), step.pop("_sms_at")
        worker = [produced[c] - acc[c] for c in acc if c in produced]
        sinks = [sms[c] - produced[c] for c in sms if c in produced]
        step["worker_s"] = stats.summarize(worker)
        step["sinks_s"] = stats.summarize(sinks)


def wait_drained(ns: Namespace, timeout: float) -> bool:
    """Until the worker and the sinks committed everything (a failed step leaves a queue)."""
    call, actions = ns.topic(topics.CALL_EVENTS), ns.topic(topics.ACTIONS)
    try:
        wait_until(
            lambda: (
                ns.committed(ns.streams_group, call) >= ns.end(call)
                and ns.committed(f"{ns.name}-sinks", actions) >= ns.end(actions)
            ),
            timeout,
            "the queues to drain",
            interval=0.5,
        )
        return True
    except TimeoutError:
        return False


def run(
    ns: Namespace,
    *,
    practices: int,
    duration: float,
    rates: tuple[float, float],
    ladder: tuple[float, ...],
    drain_s: float,
    api_latency_s: float = LATENCY_S,
) -> dict:
    log(
        f"(b) latency webhook accepted → SMS at the Twilio stand-in (answering in {api_latency_s * 1000:.0f} ms "
        f"±50 %), hold 0, {practices} practices, {duration:.0f}s per step"
    )
    standin = StandinProcess(api_latency_s)
    try:
        ns.extra_env.update({"TWILIO_API_BASE_URL": standin.url, SLACK_SECRET: standin.url + "/slack/bench"})
        ns.apply_practices(workload.practices(practices, {"first_response_hold": 0}))
        port = free_port()
        gateway = ns.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(port))
        worker = ns.worker()
        sinks = ns.start("sinks", "sinks", env={"RINGBACK_SINKS_METRICS_PORT": str(free_port())})
        base_url = f"http://127.0.0.1:{port}"
        import httpx

        wait_until(lambda: httpx.get(base_url + "/readyz").status_code == 200, 90, "the gateway")
        rng = random.Random(5)
        next_caller = [20_000_000]
        # Warm-up: one missed call through everything (first start of the Faust apps).
        warm = run_step(base_url, standin, 20, 1.0, practices, rng, next_caller, drain_s=120)
        if warm["missed_calls"] and not warm["sms_arrived"]:
            raise RuntimeError("no SMS reached the stand-in during the warm-up; see the logs in " + str(ns.log_dir))
        warm.pop("_accepted_at"), warm.pop("_sms_at")
        time.sleep(3.0)  # let the first start settle (sinks' other agents, the first commits)
        steps: list[dict] = []

        parts = {
            "gateway": gateway.pid,
            "worker": worker.pid,
            "sinks": sinks.pid,
            "broker": ns.broker_pid,
            "stand-in": standin.pid,
            "load generator": os.getpid(),  # this process
        }

        def step(rate: float) -> dict:
            cpu0, wall0 = cpu_seconds(parts), time.monotonic()
            s = run_step(base_url, standin, rate, duration, practices, rng, next_caller, drain_s)
            s["cpu"] = cpu_per_event(cpu0, cpu_seconds(parts), s["accepted"], time.monotonic() - wall0)
            steps.append(s)
            lat = s["latency_s"]
            log(
                f"    {rate:>6,.0f}/s offered, {s['achieved_rate']:>6,.0f}/s accepted: SMS p50 "
                f"{_ms(lat['p50'])} p99 {_ms(lat['p99'])} max {_ms(lat['max'])} ({s['sms_arrived']} SMS) "
                f"{'keeps up' if s['keeps_up'] else 'does not keep up: ' + s['why']}; CPU per call event "
                + ", ".join(f"{k} {v:.2f}" for k, v in s["cpu"]["ms_per_event"].items())
                + f" ms ({s['cpu']['cpus_busy']:.2f} CPUs busy)"
            )
            if not s["keeps_up"]:
                wait_drained(ns, DRAIN_CAP_S)
            for p in (gateway, worker, sinks):
                p.sample_peak()
            return s

        # Ascending, stopping at the first rate that does not keep up: every step starts with
        # empty queues (the step before kept up). The fixed points are always measured, the
        # high one (1,000/s) last, so the queue it may leave behind spoils no other step.
        low, high = rates
        for rate in sorted(set(ladder) | {low}):
            if not step(rate)["keeps_up"]:
                break
        for rate in (low, high):
            if rate not in {st["offered"] for st in steps}:
                step(rate)
        _split(ns, steps)
        by_rate = {s["offered"]: s for s in steps}
        result = {
            "practices": practices,
            "api_latency_s": api_latency_s,
            "first_response_hold_s": 0,
            "steps": sorted(steps, key=lambda s: s["offered"]),
            "knee": stats.knee(steps),
            "p50_at_low_s": by_rate[low]["latency_s"]["p50"],
            "p99_at_low_s": by_rate[low]["latency_s"]["p99"],
            "p50_at_high_s": by_rate[high]["latency_s"]["p50"],
            "p99_at_high_s": by_rate[high]["latency_s"]["p99"],
            "low_rate": low,
            "high_rate": high,
            "high_keeps_up": by_rate[high]["keeps_up"],
            "peak_rss_kb": {
                "gateway": gateway.sample_peak(),
                "worker": worker.sample_peak(),
                "sinks": sinks.sample_peak(),
            },
        }
        k = result["knee"]
        log(f"    knee: keeps up at {k['highest_kept_up']}/s, not at {k['first_not_kept_up']}/s")
        return result
    finally:
        ns.stop_all()
        standin.close()


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f} ms"
