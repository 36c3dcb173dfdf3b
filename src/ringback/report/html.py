"""The KPI report as one self-contained HTML page (charts are matplotlib PNGs
embedded as data URIs), for a practice manager to open, print or forward.

`render_html(report)` takes the dict of `ringback.report.kpis.build_report` and
returns the page; nothing is fetched from anywhere when it is opened.
"""

from __future__ import annotations

import base64
import io

from jinja2 import Environment

from ringback.report.kpis import BASELINE, LATENCY_BUCKETS, parse_time
from ringback.report.text import (
    SCENARIO_NAMES,
    STATE_NAMES,
    human_duration,
    human_share,
    human_time,
    period_text,
    plural,
)

BRAND = "#1f6f8b"
BRAND_LIGHT = "#8fc1d4"
MANUAL = "#b3b9c0"
AUTOMATED_BAND = "#d6ecd9"
GOOD, WARN, BAD = "#2e8b57", "#e0a030", "#c0504d"
# Outcome groups of the scenario chart: closing states, and everything still open.
OUTCOME_GROUPS = (
    ("Converted", ("CONVERTED",), GOOD),
    ("Escalated & closed", ("ESCALATED_AND_CLOSED",), WARN),
    ("Expired", ("EXPIRED",), "#9aa3ab"),
    ("Suppressed (caller reached staff)", ("SUPPRESSED",), BRAND_LIGHT),
    ("Still open", ("OPEN", "RESPONDED", "ESCALATED"), "#f2d47f"),
)
MAX_PRACTICES_CHARTED = 20


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    ax.title.set_fontsize(11)


def _label_bars(ax, bars, labels, tops=None) -> None:
    for i, (bar, label) in enumerate(zip(bars, labels, strict=True)):
        top = max(bar.get_height(), tops[i]) if tops else bar.get_height()
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, top),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )


def chart_vs_baseline(total: dict) -> str:
    """Three panels: new-patient recovery, time to first response, call to booking;
    this period against manual call-log review (the reference practice of docs/product.md)."""
    manual, automated = BASELINE["manual"], BASELINE["automated_published"]
    fig = _figure(10.5, 3.6)
    ax1, ax2, ax3 = fig.subplots(1, 3)

    rec = total["new_patient_recovery"]
    lo, hi = automated["new_patient_recovery_range"]
    ax1.axhspan(100 * lo, 100 * hi, color=AUTOMATED_BAND, zorder=0, label="published automated (65-80%)")
    values = [100 * manual["new_patient_recovery_share"], 100 * rec["share"] if rec["of"] else 0]
    bars = ax1.bar(["Manual review", "This period"], values, color=[MANUAL, BRAND], width=0.6, zorder=2)
    _label_bars(ax1, bars, ["~40%", f"{values[1]:.0f}% ({rec['count']}/{rec['of']})" if rec["of"] else "no data"])
    ax1.set_ylim(0, 110)
    ax1.set_ylabel("% of new-patient inquiries")
    ax1.set_title("New-patient inquiries recovered")
    ax1.legend(loc="upper left", fontsize=8, frameon=False)

    first = total["time_to_first_response_s"]
    lo, hi = manual["time_to_first_response_s_range"]
    hours = [(lo + hi) / 2 / 3600, (first["median"] or 0) / 3600, (first["p90"] or 0) / 3600]
    bars = ax2.bar(["Manual review", "Median", "p90"], hours, color=[MANUAL, BRAND, BRAND_LIGHT], width=0.6, zorder=2)
    ax2.errorbar(
        [0],
        [hours[0]],
        yerr=[[hours[0] - lo / 3600], [hi / 3600 - hours[0]]],
        fmt="none",
        ecolor="#555",
        capsize=4,
        zorder=3,
    )
    _label_bars(
        ax2, bars, ["4-6 h", human_duration(first["median"]), human_duration(first["p90"])], tops=[hi / 3600, 0, 0]
    )
    ax2.set_ylim(0, max(hi / 3600, *hours) * 1.2)
    ax2.set_ylabel("hours")
    ax2.set_title("Missed call to first response")

    booking = total["call_to_booking_s"]
    hours = [manual["call_to_booking_mean_s"] / 3600, (booking["mean"] or 0) / 3600]
    bars = ax3.bar(["Manual review", "This period"], hours, color=[MANUAL, BRAND], width=0.6, zorder=2)
    _label_bars(
        ax3,
        bars,
        [
            human_duration(manual["call_to_booking_mean_s"]),
            human_duration(booking["mean"]) if booking["count"] else "no bookings",
        ],
    )
    ax3.set_ylim(0, max(hours) * 1.25)
    ax3.set_ylabel("hours (mean)")
    ax3.set_title("Missed call to booking")
    for ax in (ax1, ax2, ax3):
        _style(ax)
    return _png(fig)


def chart_latency(total: dict) -> str:
    """How long callers waited for the first response, in buckets around the 15-min target."""
    fig = _figure(10.5, 3.2)
    ax = fig.subplots()
    labels = [label for label, _ in LATENCY_BUCKETS]
    counts = [total["first_response_buckets"][label] for label in labels]
    colors = [GOOD, GOOD, GOOD, WARN, BAD, BAD]
    bars = ax.bar(labels, counts, color=colors, width=0.65, zorder=2)
    _label_bars(ax, bars, [str(c) for c in counts])
    ax.axvline(2.5, color="#444", linestyle="--", linewidth=1)
    top = max(counts) or 1
    ax.set_ylim(0, top * 1.3)
    ax.annotate(
        "15-min target",
        (2.5, top * 1.22),
        xytext=(-6, 0),
        textcoords="offset points",
        ha="right",
        va="center",
        fontsize=9,
        color="#444",
    )
    ax.set_ylabel("cases")
    ax.set_xlabel("time from missed call to first response (SMS or staff task)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    _style(ax)
    return _png(fig)


def chart_outcomes(total: dict) -> str:
    """Cases per scenario, stacked by how they ended (or that they are still open)."""
    scenarios = list(total["cases_by_scenario_state"])
    fig = _figure(10.5, 1.2 + 0.55 * len(scenarios))
    ax = fig.subplots()
    names = [SCENARIO_NAMES.get(s, s) for s in scenarios][::-1]
    left = [0] * len(scenarios)
    widest = max(total["cases_by_scenario"].values())
    for label, states, color in OUTCOME_GROUPS:
        counts = [sum(total["cases_by_scenario_state"][s].get(st, 0) for st in states) for s in scenarios][::-1]
        if not any(counts):
            continue
        bars = ax.barh(names, counts, left=left, color=color, label=label, height=0.6, zorder=2)
        for bar, n in zip(bars, counts, strict=True):
            if n and n >= 0.035 * widest:  # a label only where it fits in its segment
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_y() + bar.get_height() / 2,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=9,
                )
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_xlim(0, max(left) * 1.05)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("cases")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(scenarios) < 3 else -0.2),
        ncol=len(OUTCOME_GROUPS),
        fontsize=8,
        frameon=False,
    )
    _style(ax)
    return _png(fig)


def chart_practices(report: dict) -> str | None:
    """The rates side by side per practice (the practices with most cases, when many)."""
    items = sorted(report["practices"].items(), key=lambda kv: (-kv[1]["cases"], kv[0]))[:MAX_PRACTICES_CHARTED]
    items = [(p, m) for p, m in items if m["cases"]]
    if len(items) < 2:
        return None
    items.sort()
    labelled = len(items) <= 6  # values on the bars only while they fit; the table has them all
    fig = _figure(10.5, 3.6)
    ax = fig.subplots()
    series = (
        ("Answered within 15 min", "answered_within_15min", BRAND),
        ("Responses converted within 24 h", "converted_within_24h", BRAND_LIGHT),
        ("New-patient recovery", "new_patient_recovery", GOOD),
    )
    width = 0.8 / len(series)
    for i, (label, key, color) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(items))]
        values = [100 * m[key]["share"] if m[key]["of"] else 0 for _, m in items]
        bars = ax.bar(xs, values, width=width, color=color, label=label, zorder=2)
        if labelled:
            _label_bars(
                ax, bars, [f"{v:.0f}%" if m[key]["of"] else "-" for v, (_, m) in zip(values, items, strict=True)]
            )
    ax.set_xticks(
        range(len(items)),
        [p for p, _ in items],
        rotation=0 if len(items) <= 6 else 30,
        ha="center" if len(items) <= 6 else "right",
    )
    ax.set_ylim(0, 118)
    ax.set_ylabel("%")
    ax.legend(loc="upper left", ncol=3, fontsize=8, frameon=False)
    _style(ax)
    return _png(fig)


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Missed-call recovery report: {{ scope }}, {{ period }}</title>
<style>
  body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2733; margin: 0;
         background: #f4f6f8; }
  main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 40px; background: white; }
  h1 { font-size: 24px; margin: 0 0 4px; color: {{ brand }}; }
  h2 { font-size: 17px; margin: 30px 0 10px; border-bottom: 2px solid #e3e7eb; padding-bottom: 4px; }
  .sub { color: #5b6773; margin: 0 0 18px; font-size: 14px; }
  .cards { display: grid; grid-template-columns: repeat(3, 1fr); gap: 14px; margin-bottom: 14px; }
  .cards.small { grid-template-columns: repeat(4, 1fr); }
  .card { border: 1px solid #dfe4e8; border-radius: 8px; padding: 14px 16px; background: #fbfcfd; }
  .card .label { font-size: 13px; color: #5b6773; }
  .card .value { font-size: 34px; font-weight: bold; color: {{ brand }}; margin: 4px 0 2px; }
  .cards.small .value { font-size: 22px; }
  .card .detail { font-size: 12.5px; color: #5b6773; }
  .card .baseline { font-size: 12.5px; color: #2e6b45; margin-top: 4px; }
  img { display: block; width: 100%; height: auto; margin: 6px 0 4px; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { padding: 6px 7px; border-bottom: 1px solid #e3e7eb; text-align: right; white-space: nowrap; }
  th { background: #f0f3f5; font-weight: 600; white-space: normal; vertical-align: bottom; }
  th:first-child, td:first-child { text-align: left; }
  tr.total td { font-weight: bold; border-top: 2px solid #c9d1d8; }
  .note { font-size: 13px; color: #3d4954; }
  .empty { font-size: 18px; padding: 30px; text-align: center; border: 1px dashed #c9d1d8; border-radius: 8px;
           color: #5b6773; }
  dl { font-size: 12.5px; color: #3d4954; display: grid; grid-template-columns: 210px 1fr; gap: 4px 14px; }
  dt { font-weight: 600; }
  dd { margin: 0; }
  footer { margin-top: 28px; font-size: 12px; color: #7a8590; }
  @media print { body { background: white; } main { padding: 0; } h2 { break-after: avoid; }
                 img, table, .cards { break-inside: avoid; } }
</style>
</head>
<body>
<main>
<h1>Missed-call recovery report</h1>
<p class="sub">{{ scope }} &middot; {{ period }} &middot; data as of {{ as_of }}</p>
{% if not total.cases %}
<div class="empty">No cases in this period.{% if records %}<br><small>{{ records }} outcome records were read;
none is for this period{% if practice_filter %} and practice{% endif %}.</small>{% endif %}</div>
{% else %}
<div class="cards">
  <div class="card"><div class="label">Missed calls answered within 15 min</div>
    <div class="value">{{ pct(total.answered_within_15min) }}</div>
    <div class="detail">{{ total.answered_within_15min.count }} of {{ total.answered_within_15min.of }} cases</div>
    <div class="baseline">manual call-log review: 4-6 h to first response</div></div>
  <div class="card"><div class="label">Responses converting within 24 h</div>
    <div class="value">{{ pct(total.converted_within_24h) }}</div>
    <div class="detail">{{ total.converted_within_24h.count }} of {{ total.converted_within_24h.of }} responses
      booked, rescheduled or confirmed an appointment, or were called back</div></div>
  <div class="card"><div class="label">Appointments recovered</div>
    <div class="value">{{ total.appointments_recovered }}</div>
    <div class="detail">bookings, reschedules and confirmations from missed calls</div></div>
</div>
<div class="cards small">
  <div class="card"><div class="label">Time to first response</div>
    <div class="value">{{ dur(total.time_to_first_response_s.median) }}</div>
    <div class="detail">median; 90% within {{ dur(total.time_to_first_response_s.p90) }}</div></div>
  <div class="card"><div class="label">New-patient inquiries recovered</div>
    <div class="value">{{ pct(total.new_patient_recovery) }}</div>
    <div class="detail">{{ total.new_patient_recovery.count }} of {{ total.new_patient_recovery.of }}</div>
    <div class="baseline">manual review: ~40%</div></div>
  <div class="card"><div class="label">Missed call to booking</div>
    <div class="value">{{ dur(total.call_to_booking_s.mean) }}</div>
    <div class="detail">mean over {{ total.call_to_booking_s.count }} appointments</div>
    <div class="baseline">manual review: 6.2 h</div></div>
  <div class="card"><div class="label">Escalations</div>
    <div class="value">{{ total.escalations }}</div>
    <div class="detail">in {{ plural(total.escalated_cases, "case") }}; {{ total.open_cases }} still open</div></div>
</div>
{% if notes %}<p class="note">{{ notes|join(" ") }}</p>{% endif %}

<h2>Compared with manual call-log review</h2>
<img alt="New-patient recovery, time to first response and time to booking against manual review"
     src="{{ charts.baseline }}">

<h2>How fast callers heard back</h2>
<img alt="Distribution of the time from missed call to first response" src="{{ charts.latency }}">

<h2>Cases by scenario and outcome</h2>
<img alt="Cases by scenario, stacked by outcome" src="{{ charts.outcomes }}">

<h2>By practice</h2>
{% if charts.practices %}
<img alt="Rates by practice" src="{{ charts.practices }}">
{% if charted < rows|length - 1 %}<p class="note">The chart shows the {{ charted }} practices with the most cases;
the table has them all.</p>{% endif %}
{% endif %}
<table>
  <tr><th>Practice</th><th>Cases</th><th>Open</th><th>Answered &le;15&nbsp;min</th><th>Converted &le;24&nbsp;h</th>
      <th>Appointments</th><th>First response (median)</th><th>(p90)</th><th>New-patient recovery</th>
      <th>Escalations</th></tr>
  {% for name, m in rows %}
  <tr{% if name == "Total" %} class="total"{% endif %}><td>{{ name }}</td><td>{{ m.cases }}</td>
    <td>{{ m.open_cases }}</td><td>{{ share(m.answered_within_15min) }}</td>
    <td>{{ share(m.converted_within_24h) }}</td><td>{{ m.appointments_recovered }}</td>
    <td>{{ dur(m.time_to_first_response_s.median) }}</td><td>{{ dur(m.time_to_first_response_s.p90) }}</td>
    <td>{{ share(m.new_patient_recovery) }}</td><td>{{ m.escalations }}</td></tr>
  {% endfor %}
</table>

<h2>Cases by scenario and state</h2>
<table>
  <tr><th>Scenario</th>{% for st in states %}<th>{{ state_names.get(st, st) }}</th>{% endfor %}<th>Total</th></tr>
  {% for s, counts in total.cases_by_scenario_state.items() %}
  <tr><td>{{ scenario_names.get(s, s) }}</td>{% for st in states %}<td>{{ counts.get(st, 0) }}</td>{% endfor %}
    <td>{{ total.cases_by_scenario[s] }}</td></tr>
  {% endfor %}
  <tr class="total"><td>Total</td>{% for st in states %}<td>{{ total.cases_by_state[st] }}</td>{% endfor %}
    <td>{{ total.cases }}</td></tr>
</table>

{% if total.actions %}
<h2>Messages and tasks</h2>
<table>
  <tr><th>Action</th>{% for r in results %}<th>{{ r|lower|replace("_", " ") }}</th>{% endfor %}</tr>
  {% for kind, counts in total.actions.items() %}
  <tr><td>{{ action_names.get(kind, kind) }}</td>{% for r in results %}<td>{{ counts.get(r, 0) }}</td>{% endfor %}</tr>
  {% endfor %}
</table>
<p class="note">Latest known result of each action (for SMS: delivered/undelivered when the carrier reported it).</p>
{% endif %}
{% endif %}

<h2>How the numbers are counted</h2>
<dl>
  <dt>Period</dt><dd>Cases whose missed call falls in the period; what happened to them up to the time of the
    report counts (a booking on Monday for a call on Sunday).</dd>
  <dt>Answered within 15 min</dt><dd>Cases whose first response (patient SMS or staff task) went out at most
    15 minutes after the missed call, out of the cases that needed one (not those where the caller reached
    staff first or had already converted).</dd>
  <dt>Converting within 24 h</dt><dd>Cases that booked, rescheduled, replied or were called back at most
    24 hours after the first response, out of the cases that got a response.</dd>
  <dt>Appointments recovered</dt><dd>Cases that ended in a booking or a reschedule.</dd>
  <dt>Time to first response</dt><dd>Median and 90th percentile of missed call to first response.</dd>
  <dt>New-patient recovery</dt><dd>New-patient inquiries that converted, out of all new-patient inquiries.</dd>
  <dt>Not yet decided</dt><dd>A case still waiting for its 15 minutes or 24 hours to pass, or still open, is
    left out of a rate until it is decided.</dd>
  <dt>Manual review</dt><dd>Reference family practice with manual call-log review: 4-6 h to first response,
    about 40% of new-patient inquiries recovered, 6.2 h from call to booking on average.</dd>
</dl>
<footer>Generated by <code>ringback report</code> from {{ source }}. This report contains no patient phone numbers
  or names.</footer>
</main>
</body>
</html>
"""

ACTION_NAMES = {
    "SEND_SMS": "Patient SMS",
    "NOTIFY_STAFF": "Staff notification",
    "CREATE_TASK": "Callback task",
    "ALERT_MANAGER": "Manager alert",
}
RESULT_ORDER = ("SENT", "DELIVERED", "UNDELIVERED", "FAILED", "SUPPRESSED", "DEFERRED", "DEAD_LETTERED")


def _pct(rate: dict) -> str:
    return f"{100 * rate['share']:.0f}%" if rate["of"] else "-"


def render_html(report: dict) -> str:
    total = report["total"]
    scope = (
        f"Practice {report['practice_filter']}"
        if report["practice_filter"]
        else (
            f"Practice {next(iter(report['practices']))}"
            if len(report["practices"]) == 1
            else f"{len(report['practices'])} practices"
            if report["practices"]
            else "All practices"
        )
    )
    charts: dict[str, str | None] = {}
    notes: list[str] = []
    rows = list(report["practices"].items())
    if total["cases"]:
        charts = {
            "baseline": chart_vs_baseline(total),
            "latency": chart_latency(total),
            "outcomes": chart_outcomes(total),
            "practices": chart_practices(report),
        }
        if len(rows) != 1:
            rows.append(("Total", total))
        pending = [
            (total["answered_within_15min"]["pending"], "case", "still within the first 15 minutes"),
            (total["converted_within_24h"]["pending"], "response", "still within the 24 hours to convert"),
            (total["new_patient_recovery"]["pending"], "new-patient case", "still open"),
        ]
        if any(n for n, _, _ in pending):
            notes.append(
                "Not yet decided and left out of the rates: "
                + "; ".join(f"{plural(n, noun)} {what}" for n, noun, what in pending if n)
                + "."
            )
        if n := total["answered_within_15min"]["no_response_needed"]:
            notes.append(f"{plural(n, 'case')} needed no response (the caller reached staff first).")
    results = [r for r in RESULT_ORDER if any(r in c for c in total["actions"].values())]
    results += sorted({r for c in total["actions"].values() for r in c} - set(results))
    source = report.get("source") or {}
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(TEMPLATE).render(
        scope=scope,
        period=period_text(report)[0].upper() + period_text(report)[1:],
        as_of=human_time(parse_time(report["period"]["as_of"])),
        total=total,
        rows=rows,
        charts=charts,
        notes=notes,
        states=list(total["cases_by_state"]),
        results=results,
        state_names=STATE_NAMES,
        scenario_names=SCENARIO_NAMES,
        action_names=ACTION_NAMES,
        practice_filter=report["practice_filter"],
        records=report["records"]["records"],
        brand=BRAND,
        charted=min(MAX_PRACTICES_CHARTED, sum(1 for m in report["practices"].values() if m["cases"])),
        source=(
            f"topic {source['topic']} ({plural(source['records_read'], 'record')} read)"
            if source
            else "outcome records"
        ),
        pct=_pct,
        share=human_share,
        dur=human_duration,
        plural=plural,
    )
