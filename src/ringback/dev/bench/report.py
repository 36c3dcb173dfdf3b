"""The results as rows against the performance targets (docs/benchmarks.md), and as a Markdown table
(pure functions)."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "throughput": 2000.0,  # call events/s per worker process
    "ratio_to_faust": 0.5,
    "p99_latency_s": 1.0,  # at 1,000 call events/s
    "latency_rate": 1000.0,
    "gate_p99_s": 1.0,
    "restart_s": 60.0,
    "takeover_s": 5.0,  # kill -9 → next SMS (for the broker: from it being ready again)
}


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:,.0f} ms"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def _mib(kb: float | None) -> str:
    return "–" if kb is None else f"{kb / 1024:,.0f} MiB"


def _api(latency_s: float | None) -> str:
    """How fast the Twilio/Slack stand-in answered, for a figure's label."""
    return "" if latency_s is None else f", API answering in {latency_s * 1000:,.0f} ms ±50 %"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, target, met: True/False/None for 'no target')."""
    out: list[tuple[str, str, str, bool | None]] = []
    a = results.get("a")
    if a:
        rate = a.get("worker_rate")
        out.append(
            (
                "(a) one worker, full pipeline, day mix (hold 0)",
                f"{_num(rate)} events/s",
                f"≥ {TARGETS['throughput']:,.0f}/s",
                None if rate is None else rate >= TARGETS["throughput"],
            )
        )
        r = a.get("ratio_to_faust")
        out.append(
            (
                "(a) worker ÷ bare Faust pass-through agent",
                f"{_pct(r)} ({_num(a['faust_passthrough'].get('rate'))}/s)",
                "≥ 50 %",
                None if r is None else r >= TARGETS["ratio_to_faust"],
            )
        )
        cr = a.get("cpu_ratio_to_faust")
        if cr is not None:
            out.append(
                (
                    "(a) worker ÷ bare Faust, in events per CPU-second (steadier on a shared machine)",
                    f"{_pct(cr)} ({_num(a['worker'].get('events_per_cpu_s'))} vs "
                    f"{_num(a['faust_passthrough'].get('events_per_cpu_s'))})",
                    "≥ 50 %",
                    None,
                )
            )
        out.append(
            (
                "(a) worker ÷ bare aiokafka consume→produce",
                f"{_pct(a.get('ratio_to_aiokafka'))} ({_num(a['aiokafka'].get('rate'))}/s)",
                "reported",
                None,
            )
        )
        out.append(("(a) bare Faust ÷ bare aiokafka", _pct(a.get("faust_to_aiokafka")), "expected ≈ 10-15 %", None))
    b = results.get("b")
    if b:
        low, high = b.get("low_rate"), b.get("high_rate")
        api = _api(b.get("api_latency_s"))
        out.append(
            (
                f"(b) webhook accepted → SMS at {_num(low)}/s{api}: p50 / p99",
                f"{_ms(b.get('p50_at_low_s'))} / {_ms(b.get('p99_at_low_s'))}",
                "p99 < 1 s",
                None if b.get("p99_at_low_s") is None else b["p99_at_low_s"] < TARGETS["p99_latency_s"],
            )
        )
        p99 = b.get("p99_at_high_s")
        kept = b.get("high_keeps_up")
        out.append(
            (
                f"(b) webhook accepted → SMS at {_num(high)}/s{api}: p50 / p99",
                f"{_ms(b.get('p50_at_high_s'))} / {_ms(p99)}" + ("" if kept else " (did not keep up)"),
                "p99 < 1 s at 1,000/s",
                None if p99 is None else bool(kept) and p99 < TARGETS["p99_latency_s"],
            )
        )
        k = b.get("knee") or {}
        knee_ok = k.get("highest_kept_up")
        out.append(
            (
                "(b) knee: highest offered rate kept up / first not",
                f"{_num(knee_ok)}/s / {_num(k.get('first_not_kept_up'))}/s",
                "≥ 1,000/s",
                None
                if knee_ok is None and k.get("first_not_kept_up") is None
                else (knee_ok or 0) >= TARGETS["latency_rate"],
            )
        )
    sink = results.get("sink")
    if sink:
        per_sms = sink.get("seconds_per_sms")
        out.append(
            (
                f"SMS/s carried by one sink process{_api(sink.get('api_latency_s'))}",
                f"{_num(sink.get('rate'), '{:,.2f}')} SMS/s ({_ms(per_sms)} per SMS)",
                "reported",
                None,
            )
        )
    c = results.get("c")
    if c:
        d = c.get("delay_s") or {}
        out.append(
            (
                f"(c) gate firing delay with {c['open_cases']:,} open cases: p50 / p99 / max",
                f"{_ms(d.get('p50'))} / {_ms(d.get('p99'))} / {_ms(d.get('max'))} "
                f"({c.get('gates_fired')} of {c.get('gates_expected')} gates)",
                "p99 < 1 s",
                None
                if d.get("p99") is None
                else d["p99"] < TARGETS["gate_p99_s"] and c.get("gates_fired") == c.get("gates_expected"),
            )
        )
        out.append(
            (
                "(c) building the open cases (new-patient missed calls)",
                f"{_num(c.get('build_rate'))} cases/s",
                "reported",
                None,
            )
        )
    d = results.get("d")
    if d:
        for key, label, target in (
            ("warm_restart", "warm restart (SIGTERM, RocksDB on disk)", True),
            ("restart_after_sigkill", "restart after SIGKILL", False),
            ("cold_start", "cold start (restore everything from the changelog)", False),
        ):
            r = d.get(key)
            if not r:
                continue
            ok = r["seconds"] < TARGETS["restart_s"] and r["known_patient"]
            out.append(
                (
                    f"(d) {label}, {d['entries']:,} entries → first event processed",
                    f"{r['seconds']:.1f} s" + ("" if r["known_patient"] else " (entry not found!)"),
                    "< 60 s" if target else "reported",
                    ok if target else None,
                )
            )
    e = results.get("e")
    if e:
        for fault, label in (("worker", "the worker"), ("sinks", "the sinks"), ("broker", "the broker")):
            r = e.get(fault) or {}
            took = r.get("next_sms_s")
            since = " (from the broker ready again)" if fault == "broker" else ""
            out.append(
                (
                    f"(e) kill -9 of {label}, restarted at once → next SMS{since}",
                    _num(took, "{:.1f} s") if took is not None else r.get("error", "–"),
                    f"< {TARGETS['takeover_s']:.0f} s",
                    None if took is None else took < TARGETS["takeover_s"],
                )
            )
        out.append(
            (
                "(e) calls accepted through the three kills: without an SMS / texted twice",
                f"{e.get('lost', '–')} / {e.get('twice', '–')} of {e.get('accepted', '–')}",
                "0 / 0",
                None if e.get("lost") is None else e["lost"] == 0 and e["twice"] == 0,
            )
        )
    mem = memory(results)
    if mem.get("peak_rss_kb"):
        out.append(("peak RSS of one worker (largest over the figures)", _mib(mem["peak_rss_kb"]), "reported", None))
    if c and c.get("rss_per_100k_open_cases_kb") is not None:
        out.append(("worker RSS per 100,000 open cases", _mib(c["rss_per_100k_open_cases_kb"]), "reported", None))
    s = results.get("scaling")
    if s:
        parts = ", ".join(
            f"{r['workers']}: {_num(r['drain_rate'])}/s (×{r['speedup'] or 0:.2f})"
            + (" stalled" if r.get("stalled") else "")
            for r in s["runs"]
        )
        out.append(
            (f"scaling, {s['partitions']} partitions, {s['cpus']} CPUs: workers → events/s", parts, "reported", None)
        )
    return out


def memory(results: dict[str, Any]) -> dict:
    peaks = []
    a = results.get("a")
    if a:
        peaks += [x for x in a["worker"].get("peak_rss_kb", []) if x]
    b = results.get("b")
    if b and (b.get("peak_rss_kb") or {}).get("worker"):
        peaks.append(b["peak_rss_kb"]["worker"])
    c = results.get("c")
    if c and c.get("peak_rss_kb"):
        peaks.append(c["peak_rss_kb"])
    d = results.get("d")
    if d:
        peaks += [
            d[k]["peak_rss_kb"]
            for k in ("cold_start", "warm_restart", "restart_after_sigkill")
            if d.get(k) and d[k].get("peak_rss_kb")
        ]
    return {"peak_rss_kb": max(peaks) if peaks else None}


def cpu_table(steps: list[dict]) -> list[str]:
    """The CPU each part used per accepted call event at each step of (b)."""
    steps = [st for st in steps if (st.get("cpu") or {}).get("ms_per_event")]
    if not steps:
        return []
    names = list(dict.fromkeys(k for st in steps for k in st["cpu"]["ms_per_event"]))
    lines = [
        "",
        "CPU per accepted call event (ms) at each step of (b), and the CPUs kept busy",
        "",
        "| offered | " + " | ".join(names) + " | all | CPUs busy |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for st in steps:
        cpu = st["cpu"]
        cells = [_float(cpu["ms_per_event"].get(n)) for n in names]
        lines.append(
            f"| {_num(st['offered'])}/s | " + " | ".join(cells) + f" | {_float(cpu['total_ms_per_event'])} | "
            f"{_float(cpu['cpus_busy'])} |"
        )
    return lines


def _float(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = ["| figure | measured | target (docs/benchmarks.md) | met |", "|---|---|---|---|"]
    for figure, measured, target, met in rows(results):
        mark = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {figure} | {measured} | {target} | {mark} |")
    b = results.get("b")
    if b and b.get("steps"):
        lines += [
            "",
            "Latency ladder (b): webhook accepted → SMS request at the Twilio stand-in",
            "",
            "| offered | accepted | SMS | p50 | p99 | max | worker p50 / p99 | sinks p50 / p99 | kept up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for st in b["steps"]:
            lat, w, sk = st["latency_s"], st.get("worker_s") or {}, st.get("sinks_s") or {}
            lines.append(
                f"| {_num(st['offered'])}/s | {_num(st['achieved_rate'])}/s | {st['sms_arrived']} | "
                f"{_ms(lat['p50'])} | {_ms(lat['p99'])} | {_ms(lat['max'])} | "
                f"{_ms(w.get('p50'))} / {_ms(w.get('p99'))} | {_ms(sk.get('p50'))} / {_ms(sk.get('p99'))} | "
                f"{'yes' if st['keeps_up'] else 'no: ' + st['why']} |"
            )
        lines += cpu_table(b["steps"])
    return "\n".join(lines) + "\n"
