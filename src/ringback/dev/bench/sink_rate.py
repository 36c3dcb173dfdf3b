"""Figure "sink": SMS per second carried by one sink process when Twilio answers in 250 ms.

One `ringback sinks` process and the Twilio stand-in (answering Messages creates after
250 ms ±50 %, as Twilio's API takes a few hundred milliseconds). A backlog of first-SMS
actions for distinct new patients (the 08:00 burst of SMS deferred by quiet hours, or
phones coming back after an outage) is produced straight to the actions topic; the
stand-in timestamps every Messages POST as it arrives. The rate is the SMS that arrived
in a steady window (after a warm-up from the first SMS, while the backlog lasts) over
the window's length. The sink carries many actions at once (RINGBACK_SINK_CONCURRENCY,
docs/sinks.md "Lanes"; reported as `sink_concurrency`), so the gaps between consecutive
SMS are far shorter than the API's answer, and rate × mean answer time is about how many
requests were in flight. Also reported: the CPU the sink process used.
"""

from __future__ import annotations

import os
import time

from ringback.dev.bench import stats, workload
from ringback.dev.bench.harness import SLACK_SECRET, Namespace, free_port, loadavg, log, wait_until
from ringback.dev.bench.latency import StandinProcess
from ringback.dev.fake_apis import LATENCY_S
from ringback.kafka import topics
from ringback.schemas import codec

SMS_BODY = "Hi, this is {practice}. Sorry we missed your call! Book here: {link} Reply STOP to opt out."


def sms_actions(count: int, practices: int, now_ms: int, first_caller: int = 30_000_000) -> list[tuple]:
    """`count` first-SMS actions for distinct new patients, keyed and placed as the worker
    produces them (practice|caller, murmur2)."""
    out = []
    for n in range(count):
        practice = n % practices
        pid, caller = workload.practice_id(practice), workload.caller_number(first_caller + n)
        case = f"{pid}:bench-sink-{n}"
        action = {
            "action_id": f"{case}:first_sms",
            "case_id": case,
            "practice_id": pid,
            "kind": "SEND_SMS",
            "step": "first_sms",
            "scenario": "NEW_PATIENT",
            "recipient": caller,
            "body": SMS_BODY.format(
                practice=f"Bench Practice {practice}", link=f"https://book.example.org/p{practice}"
            ),
            "reason": "missed call from an unknown number",
            "priority": "NORMAL",
            "created_at": now_ms,
            "due_at": None,
            "missed_at": now_ms - 20_000,
            "call_reported_at": now_ms - 19_000,
            "params": {},
        }
        out.append((topics.join_key(pid, caller), codec.encode("action_command", action), None))
    return out


def steady_rate(arrivals: list[float], warmup_s: float, window_s: float) -> dict:
    """SMS per second in the window that starts `warmup_s` after the first arrival and lasts
    `window_s` (cut at the last arrival when the backlog ran out first): the arrivals in it,
    less one, over the time from the first to the last of them."""
    if not arrivals:
        return {"rate": None, "sms_in_window": 0, "window_s": 0.0}
    start = arrivals[0] + warmup_s
    inside = [t for t in arrivals if start <= t <= start + window_s]
    if len(inside) < 2:
        return {"rate": None, "sms_in_window": len(inside), "window_s": 0.0}
    span = inside[-1] - inside[0]
    # One request at a time, the gaps are never shorter than the API's fastest answer.
    gaps = [b - a for a, b in zip(inside, inside[1:], strict=False)]
    return {
        "rate": (len(inside) - 1) / span,
        "sms_in_window": len(inside),
        "window_s": span,
        "gap_s": {"min": min(gaps), **stats.summarize(gaps)},
    }


def run(
    ns: Namespace,
    *,
    actions: int,
    practices: int,
    warmup_s: float,
    window_s: float,
    timeout: float,
    api_latency_s: float = LATENCY_S,
) -> dict:
    log(
        f"(sink) SMS/s carried by one sink process, Twilio stand-in answering in {api_latency_s * 1000:.0f} ms "
        f"±50 %: a backlog of {actions:,} first-SMS actions, {window_s:.0f}s window after {warmup_s:.0f}s"
    )
    standin = StandinProcess(api_latency_s)
    try:
        ns.extra_env.update({"TWILIO_API_BASE_URL": standin.url, SLACK_SECRET: standin.url + "/slack/bench"})
        ns.apply_practices(workload.practices(practices))
        sinks = ns.start("sinks", "sinks", env={"RINGBACK_SINKS_METRICS_PORT": str(free_port())})
        load0 = loadavg()
        produced_at = time.time()
        ns.produce(ns.topic(topics.ACTIONS), sms_actions(actions, practices, int(produced_at * 1000)))
        wait_until(lambda: standin.messages_count() > 0, timeout, "the first SMS at the stand-in", interval=0.5)
        first = standin.message_times()[0]
        cpu0, wall0 = sinks.cpu_s(), time.time()
        # Until the window is over or the backlog is carried out.
        wait_until(
            lambda: time.time() > first + warmup_s + window_s or standin.messages_count() >= actions,
            warmup_s + window_s + timeout,
            "the measuring window",
            interval=0.5,
        )
        cpu1, wall1 = sinks.cpu_s(), time.time()
        arrivals = standin.message_times()
        measured = steady_rate(arrivals, warmup_s, window_s)
        rate = measured["rate"]
        result = {
            "api_latency_s": api_latency_s,
            "api_jitter": 0.5,
            "actions": actions,
            "practices": practices,
            "warmup_s": warmup_s,
            "sms_arrived": len(arrivals),
            "first_sms_after_s": first - produced_at,
            **measured,
            "seconds_per_sms": 1 / rate if rate else None,
            "sink_concurrency": int(os.environ.get("RINGBACK_SINK_CONCURRENCY", "64")),
            "backlog_lasted": len(arrivals) < actions,
            "sinks_cpu_share": (cpu1 - cpu0) / (wall1 - wall0) if cpu0 is not None and cpu1 is not None else None,
            "peak_rss_kb": sinks.sample_peak(),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        log(
            f"    {_num(rate, '{:.2f}')} SMS/s ({measured['sms_in_window']} SMS in {measured['window_s']:.1f}s; "
            f"{_num(result['seconds_per_sms'] and result['seconds_per_sms'] * 1000)} ms per SMS with the API "
            f"answering in {api_latency_s * 1000:.0f} ms on average; sink CPU "
            f"{_num(result['sinks_cpu_share'] and result['sinks_cpu_share'] * 100)} %; shortest gap between two SMS "
            f"{_num(measured.get('gap_s', {}).get('min') and measured['gap_s']['min'] * 1000)} ms)"
        )
        return result
    finally:
        ns.stop_all()
        standin.close()


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)
