"""The KPI report as a terminal table, and the human forms of times and shares
shared with the HTML page."""

from __future__ import annotations

from datetime import UTC, datetime

from ringback.report.kpis import BASELINE, parse_time


def human_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def human_duration(seconds: float | None) -> str:
    """90 -> '1 min 30 s'; 38700 -> '10.8 h'; None -> '-'."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min {r} s" if r else f"{m} min"
    if s < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def human_share(rate: dict) -> str:
    if not rate["of"]:
        return "-"
    return f"{100 * rate['share']:.1f}% ({rate['count']}/{rate['of']})"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------- terminal table
SCENARIO_NAMES = {
    "NEW_PATIENT": "New patient",
    "URGENT_EXISTING": "Urgent (existing patient)",
    "RESCHEDULE": "Reschedule",
    "GENERAL_INQUIRY": "General inquiry",
}
STATE_NAMES = {
    "OPEN": "Open",
    "RESPONDED": "Responded",
    "ESCALATED": "Escalated",
    "CONVERTED": "Converted",
    "ESCALATED_AND_CLOSED": "Escalated & closed",
    "EXPIRED": "Expired",
    "SUPPRESSED": "Suppressed",
}


def period_text(report: dict) -> str:
    p = report["period"]
    since = human_time(parse_time(p["since"])) if p["since"] else "the beginning"
    until = human_time(parse_time(p["until"])) if p["until"] else "now"
    return f"missed calls from {since} to {until}"


def render_text(report: dict) -> str:
    from tabulate import tabulate

    total = report["total"]
    scope = f"practice {report['practice_filter']}" if report["practice_filter"] else "all practices"
    lines = [
        f"Ringback KPI report - {scope} - {period_text(report)}",
        f"(data as of {human_time(parse_time(report['period']['as_of']))})",
        "",
    ]
    if not total["cases"]:
        lines.append(
            "No cases in this period."
            + (
                f" ({report['records']['records']} outcome records read, none for this period"
                f"{' and practice' if report['practice_filter'] else ''}.)"
                if report["records"]["records"]
                else ""
            )
        )
        return "\n".join(lines) + "\n"

    headers = [
        "Practice",
        "Cases\n(open)",
        "Answered\n<=15 min",
        "Responses\nconverted <=24 h",
        "Appointments\nrecovered",
        "First response\nmedian",
        "First response\np90",
        "New-patient\nrecovery",
        "Escalations",
    ]
    rows = []
    items = list(report["practices"].items())
    if len(items) != 1 or report["practice_filter"] is None:
        items.append(("TOTAL", total))
    for name, m in items:
        rows.append(
            [
                name,
                f"{m['cases']} ({m['open_cases']})",
                human_share(m["answered_within_15min"]),
                human_share(m["converted_within_24h"]),
                m["appointments_recovered"],
                human_duration(m["time_to_first_response_s"]["median"]),
                human_duration(m["time_to_first_response_s"]["p90"]),
                human_share(m["new_patient_recovery"]),
                m["escalations"],
            ]
        )
    lines.append(
        tabulate(
            rows,
            headers=headers,
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left", *["right"] * (len(headers) - 1)),
        )
    )

    lines += ["", "Cases by scenario and state (total):"]
    states = list(total["cases_by_state"])
    grid = [
        [
            SCENARIO_NAMES.get(s, s),
            *[total["cases_by_scenario_state"][s].get(st, 0) for st in states],
            total["cases_by_scenario"][s],
        ]
        for s in total["cases_by_scenario_state"]
    ]
    grid.append(["Total", *[total["cases_by_state"][st] for st in states], total["cases"]])
    lines.append(
        tabulate(grid, headers=["Scenario", *[STATE_NAMES.get(s, s) for s in states], "Total"], tablefmt="simple")
    )

    manual = BASELINE["manual"]
    rec = total["new_patient_recovery"]
    lines += [
        "",
        "Against manual call-log review (a reference family practice):",
        f"  new-patient recovery      {human_share(rec):>22}   manual ~40% (35-45%)",
        f"  median first response     {human_duration(total['time_to_first_response_s']['median']):>22}   manual 4-6 h",
        f"  mean call-to-booking      {human_duration(total['call_to_booking_s']['mean']):>22}"
        f"   manual {manual['call_to_booking_mean_s'] / 3600:.1f} h",
    ]
    lines += [
        "",
        f"Callers who responded (an SMS reply, or a call that reached staff): {human_share(total['caller_responded'])}"
        " of the cases with a first response; a response is not a conversion (an appointment booked, moved or"
        " confirmed, or a callback that reached the patient).",
    ]
    if n := total["older_conversions_read_as_responses"]:
        lines.append(
            f"{plural(n, 'case')} written by an older version as converted by a reply, an answered call or a"
            " cancellation: read as not converted."
        )
    pending = [
        (total["answered_within_15min"]["pending"], "case", "awaiting a first response (under 15 min)"),
        (total["converted_within_24h"]["pending"], "case", "responded, still within the 24 h to convert"),
        (total["new_patient_recovery"]["pending"], "new-patient case", "still open"),
    ]
    if any(n for n, _, _ in pending):
        lines += [
            "",
            "Not yet decided, left out of the rates above: "
            + "; ".join(f"{plural(n, noun)} {what}" for n, noun, what in pending if n)
            + ".",
        ]
    if n := total["answered_within_15min"]["no_response_needed"]:
        lines.append(
            f"{plural(n, 'case')} needed no response (suppressed: the caller reached staff first, or "
            "converted before it): left out of 'answered <=15 min'."
        )
    if total["actions"]:
        lines += [
            "",
            "Actions by kind and latest result: "
            + "; ".join(
                f"{kind} " + ", ".join(f"{res} {n}" for res, n in results.items())
                for kind, results in total["actions"].items()
            ),
        ]
    return "\n".join(lines) + "\n"
