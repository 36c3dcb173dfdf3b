"""Figure (e): kill -9 → next SMS, for the worker, the sinks and the broker.

The whole pipeline runs on a broker of the figure's own (it is killed too): `ringback
ingest`, one `ringback worker`, one `ringback sinks` and the Twilio stand-in answering
after the API latency. A load generator posts a missed call from a new caller every
1/rate seconds for the whole figure, so SMS leave at a steady pace. Then, one at a time:

- worker, sinks: SIGKILL, and at once the same command again with the same
  `RINGBACK_INSTANCE_ID` (what systemd's `Restart=always` or a StatefulSet pod does);
- broker: SIGKILL, then start it again on the same port and data (log recovery included).

"Kill → next SMS" is how long after the kill (for the broker: after it serves metadata
again) the SMS flow resumes: the first Messages POST at the stand-in after the longest
silence that begins after the kill. Its resolution is the load's pace (1/rate). Between
faults every accepted call must have its SMS. At the end every call the gateway accepted
(2xx) is checked: lost (no SMS) and twice (more than one message created for its caller).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import signal
import socket
import threading
import time
from collections import Counter
from datetime import datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

from ringback.dev.bench import workload
from ringback.dev.bench.harness import BENCH_ACCOUNT, BENCH_TOKEN, SLACK_SECRET, Namespace, Proc, log, wait_until
from ringback.dev.fake_apis import LATENCY_S
from ringback.dev.local_kafka import LocalKafka, free_port

VOICE_STATUS = "/webhooks/twilio/voice/status"
SETTLE_S = 60.0  # at most this long for every accepted call to have its SMS between faults


# ---------------------------------------------------------------- the stand-in, in its own process
def _serve_standin(conn, latency_s: float) -> None:
    from ringback.dev.fake_apis import FakeApiServer

    server = FakeApiServer(keep_alive=True, latency_s=latency_s)
    conn.send(server.url)
    while conn.recv() == "sms":
        posts = [(r.form.get("To"), r.received_at) for r in server.messages()]
        conn.send((posts, Counter(m["to"] for m in list(server.created))))
    server.close()


class Standin:
    def __init__(self, latency_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_standin, args=(child, latency_s), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    def sms(self) -> tuple[dict[str, float], list[float], Counter]:
        """(caller → first Messages POST time, every POST time in order, messages created per caller)."""
        self._conn.send("sms")
        posts, created = self._conn.recv()
        first: dict[str, float] = {}
        for to, at in posts:
            first.setdefault(to, at)
        return first, sorted(at for _, at in posts), created

    def close(self) -> None:
        try:
            self._conn.send("stop")
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()


# ---------------------------------------------------------------- steady load of new callers
class Load:
    """Posts a signed missed-call status callback from a new caller every 1/rate s, open
    loop, in a thread of its own until `stop()`; `calls`: (caller, posted at, answered at, status)."""

    def __init__(self, base_url: str, rate: float, practices: int) -> None:
        from twilio.request_validator import RequestValidator

        self.url = base_url + VOICE_STATUS
        self.rate = rate
        self.practices = practices
        self.calls: list[tuple[str, float, float, int]] = []
        self._validator = RequestValidator(BENCH_TOKEN)
        self._rng = random.Random(11)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def accepted(self) -> dict[str, float]:
        """Caller → when the gateway's 2xx arrived."""
        return {c: done for c, _, done, status in list(self.calls) if 200 <= status < 300}

    def _request(self, n: int) -> tuple[str, bytes, dict[str, str]]:
        practice = self._rng.randrange(self.practices)
        caller = workload.caller_number(30_000_000 + n)
        params = {
            "CallSid": "CA" + f"{self._rng.getrandbits(128):032x}",
            "AccountSid": BENCH_ACCOUNT,
            "From": caller,
            "To": workload.practice_did(practice),
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "CallStatus": "no-answer",
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self._validator.compute_signature(self.url, params),
        }
        return caller, urlencode(params).encode(), headers

    async def _run(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task] = set()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:

            async def post(n: int) -> None:
                caller, body, headers = self._request(n)
                posted = time.time()
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except Exception:  # noqa: BLE001 - refused, reset, timed out: not accepted
                    status = -1
                self.calls.append((caller, posted, time.time(), status))

            start, n = loop.time(), 0
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, start + n / self.rate - loop.time()))
                task = asyncio.ensure_future(post(n))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
            await asyncio.gather(*pending)


# ---------------------------------------------------------------- one fault
def next_sms_after(ref: float, post_times: list[float], kill: float) -> tuple[float | None, float | None]:
    """(seconds from `ref` to the SMS that ends the longest silence begun at `kill`, that
    silence); (None, None) when no SMS came after `ref`. An SMS already on its way at the kill
    does not count as the flow resumed; for the broker `ref` is when it was ready again."""
    edges = [kill, *(t for t in post_times if t > kill)]
    if edges[-1] <= ref:
        return None, None
    gap, end = max((b - a, b) for a, b in zip(edges, edges[1:], strict=False))
    end = max(end, next(t for t in edges if t > ref))
    return end - ref, gap


def run(
    ns: Namespace,
    *,
    rate: float,
    practices: int,
    steady_s: float,
    timeout: float,
    api_latency_s: float = LATENCY_S,
    static: bool = True,
) -> dict:
    membership = "static members (RINGBACK_INSTANCE_ID)" if static else "dynamic members"
    log(
        f"(e) kill -9 → next SMS: worker, sinks, broker; {rate:g} new callers/s, API at "
        f"{api_latency_s * 1000:.0f} ms, {membership}, restarted at once"
    )
    broker = LocalKafka(port=free_port(), home=ns.work_dir / "kafka")
    broker.start()
    ns = Namespace(broker.bootstrap, ns.name, ns.partitions, ns.work_dir)
    standin = Standin(api_latency_s)
    load: Load | None = None
    try:
        ns.extra_env.update({"TWILIO_API_BASE_URL": standin.url, SLACK_SECRET: standin.url + "/slack/bench"})
        ns.apply_practices(workload.practices(practices, {"first_response_hold": 0}))
        port = free_port()
        ns.start("gateway", "ingest", "--host", "127.0.0.1", "--port", str(port))
        base_url = f"http://127.0.0.1:{port}"

        def start(role: str) -> Proc:
            env = {"RINGBACK_INSTANCE_ID": f"bench-{role}-0"} if static else {}
            if role == "worker":
                return ns.worker("worker", env=env)
            return ns.start("sinks", "sinks", env={"RINGBACK_SINKS_METRICS_PORT": str(free_port()), **env})

        procs = {role: start(role) for role in ("worker", "sinks")}
        import httpx

        wait_until(lambda: httpx.get(base_url + "/readyz").status_code == 200, 90, "the gateway")
        load = Load(base_url, rate, practices).start()

        def settle(what: str, wait_s: float) -> None:
            """Until every call accepted so far has its SMS (later ones are still on their way)."""
            wanted = set(load.accepted())
            wait_until(lambda: wanted <= set(standin.sms()[0]), wait_s, what, interval=0.5)

        def sms_after(t0: float) -> bool:
            return any(t > t0 for t in standin.sms()[1])

        wait_until(load.accepted, timeout, "the gateway accepting calls")
        settle("the first SMS (warm-up)", timeout)
        results: dict = {"rate": rate, "api_latency_s": api_latency_s, "static_membership": static}
        for fault in ("worker", "sinks", "broker"):
            time.sleep(steady_s)
            killed_at = time.time()
            if fault == "broker":
                broker.kill()
                # A SIGKILLed JVM's threads close its sockets after its main thread is reaped.
                wait_until(lambda: not _port_open(broker.port), 30, "the killed broker's port to close", interval=0.1)
                broker.start()
            else:
                procs[fault].stop(signal.SIGKILL)
                procs[fault] = start(fault)
            ref = time.time() if fault == "broker" else killed_at
            try:
                wait_until(partial(sms_after, ref), timeout, f"an SMS after the {fault}'s kill")
                settle(f"every call accepted by the end of the {fault}'s takeover has its SMS", SETTLE_S)
            except TimeoutError as exc:
                results[fault] = {"error": str(exc)}
                log(f"    {fault}: {exc}")
                continue
            _, posts, _ = standin.sms()
            next_s, gap = next_sms_after(ref, posts, killed_at)
            refused = [c for c in list(load.calls) if c[2] > killed_at and not 200 <= c[3] < 300]
            results[fault] = {
                "killed_at": killed_at,  # wall time: to line up with the process logs
                "next_sms_s": next_s,
                "longest_silence_s": gap,
                "ready_after_kill_s": ref - killed_at,
                "refused_calls": len(refused),
                "refused_until_s": max((c[2] for c in refused), default=ref) - ref if refused else 0.0,
            }
            extra = f", broker ready {ref - killed_at:.1f}s after the kill" if fault == "broker" else ""
            if fault != "broker":  # where the restarted process's time went (its own log)
                marks = {k: t - killed_at for k, t in _faust_marks(procs[fault].log_path, killed_at).items()}
                spawned_s = procs[fault].started_at - killed_at
                results[fault].update(marks, spawned_s=spawned_s)
                if len(marks) == 2:
                    spawned, faust, ready = spawned_s, marks["faust_start_s"], marks["faust_ready_s"]
                    extra = f"; spawned {spawned:.1f}s, Faust started {faust:.1f}s, Ready {ready:.1f}s after the kill"
            log(
                f"    {fault}: kill → next SMS {_s(next_s)}{' after the broker was ready' if fault == 'broker' else ''}"
                f" (longest silence {_s(gap)}{extra}; {len(refused)} calls refused)"
            )
        time.sleep(steady_s)
        load.stop()
        settle("every accepted call's SMS at the end", SETTLE_S)
        return {**results, **_tally(load, standin)}
    finally:
        if load is not None:
            load.stop()
        ns.stop_all()
        standin.close()
        broker.stop()


def _tally(load: Load, standin: Standin) -> dict:
    accepted = load.accepted()
    first, _, created = standin.sms()
    lost = [c for c in accepted if c not in first]
    twice = [c for c, n in created.items() if n > 1]
    log(f"    {len(accepted)} calls accepted: {len(lost)} without an SMS, {len(twice)} callers texted twice")
    return {"accepted": len(accepted), "lost": len(lost), "twice": len(twice)}


def _faust_marks(log_path: Path, after: float) -> dict[str, float]:
    """Wall times at which the process logged Faust's start (all imports done, the topics and
    the practice directory read) and Ready (partitions assigned, tables recovered), first after
    `after`; none when the log's format is not the text one."""
    marks = {"faust_start_s": "[^Worker]: Starting...", "faust_ready_s": "[^Worker]: Ready"}
    found: dict[str, float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        for name, text in marks.items():
            if text in line and name not in found:
                try:
                    at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # logging's local asctime
                except ValueError:
                    continue
                if at >= after:
                    found[name] = at
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _s(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}s"
