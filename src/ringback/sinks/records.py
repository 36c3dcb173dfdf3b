"""Records the sinks write besides the effects themselves: ACTION outcomes, dead
letters, sent-log entries, and the staff-facing message (Slack, e-mail). Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from ringback.domain.recipes import NOTICE
from ringback.domain.staff_texts import role_label
from ringback.schemas import codec

# Sent-log states (one entry per action_id). FINAL: a redelivered action is skipped.
ATTEMPTING = "ATTEMPTING"  # an API call may be under way or may have gone out: look before resending
RETRY = "RETRY"  # the last call was refused before anything was created: resend is safe
DEFERRED = "DEFERRED"  # waiting for the quiet hours to end (see the deferred table)
SENT = "SENT"  # carried out (SMS accepted by Twilio, Slack/e-mail accepted, task created)
SUPPRESSED = "SUPPRESSED"  # not carried out on purpose (opt-out, cap, blocked number, FCC profile)
FAILED = "FAILED"  # refused for good (bad input, 4xx)
DEAD_LETTERED = "DEAD_LETTERED"  # retry budget spent
FINAL = frozenset({SENT, SUPPRESSED, FAILED, DEAD_LETTERED})

_CASE_STATE = {SENT: "RESPONDED", "DELIVERED": "RESPONDED", SUPPRESSED: "SUPPRESSED"}
CHANNEL = {"SEND_SMS": "sms", "CREATE_TASK": "task"}


def entry_base(action: dict) -> dict:
    """What a sent-log entry keeps of its action: enough for later outcome records."""
    return {
        k: action.get(k)
        for k in ("action_id", "case_id", "practice_id", "kind", "step", "scenario", "created_at", "missed_at")
    }


def outcome_record(
    action: dict, result: str, at_ms: int, reason: str | None = None, channel: str | None = None
) -> dict:
    """An ACTION outcome (schemas/outcome.avsc) for one action's result."""
    missed = action.get("missed_at") or action["created_at"]
    return {
        "outcome_id": f"{action['action_id']}:{result}",
        "case_id": action["case_id"],
        "practice_id": action["practice_id"],
        "scenario": action["scenario"],
        "state": _CASE_STATE.get(result, "OPEN"),
        "final": False,
        "missed_at": missed,
        "first_response_at": None,
        "response_latency_ms": None,
        "within_window": None,
        "escalations": 0,
        "converted": False,
        "converted_at": None,
        "conversion_channel": None,
        "channel": channel or CHANNEL.get(action["kind"]),
        "reason": reason,
        "at": at_ms,
        "record_type": "ACTION",
        "action_id": action["action_id"],
        "action_kind": action["kind"],
        "action_result": result,
    }


def dead_letter_record(action: dict, reason: str, at_ms: int) -> dict:
    return {
        "source": f"sinks.{action.get('kind', 'unknown').lower()}",
        "reason": reason,
        "raw": codec.encode("action_command", action),
        "content_type": "avro/binary; schema=action_command",
        "received_at": at_ms,
        "practice_id": action.get("practice_id"),
    }


def local_time(ms: int, time_zone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(time_zone)).strftime("%a %d %b %H:%M %Z")


@dataclass(frozen=True)
class StaffMessage:
    subject: str
    text: str
    urgent: bool  # flagged in the channel: Slack @here, e-mail Importance: high


def task_link(task_id: str, console_url: str | None) -> str:
    """Where staff open the task: the console page with the task in its fragment (the
    fragment never reaches a server log); without RINGBACK_CONSOLE_URL, the task's id."""
    if not console_url:
        return f"task {task_id} in the staff console"
    return f"{console_url.rstrip('/')}/#task={quote(task_id, safe='')}"


def staff_message(action: dict, practice_name: str, time_zone: str, console_url: str | None) -> StaffMessage:
    """The Slack / e-mail text of a staff action (NOTIFY_STAFF, ALERT_MANAGER): the
    workflow's text for its branch (domain/staff_texts.py), the priority, the due time and
    the link to the task it is about. Minimum necessary: no patient name, number, reason
    for the call or message text (those stay in the console)."""
    params = action.get("params") or {}
    priority = action.get("priority") or "NORMAL"
    task_id = params.get("task_id")
    notice = (action.get("step") or "").endswith(NOTICE)
    if action["kind"] == "ALERT_MANAGER":
        label = "Escalation: task overdue"
    elif notice:
        label = f"New task for the {role_label(params.get('role') or 'staff')}"
    else:
        label = "Missed call"
    lines = [f"{practice_name}: {label}"]
    if action.get("body"):
        lines.append(action["body"])
    lines.append(f"Priority: {priority}")
    if action.get("due_at"):
        lines.append(f"Due: {local_time(action['due_at'], time_zone)}")
    if not notice:
        lines.append(f"Missed call: {local_time(action.get('missed_at') or action['created_at'], time_zone)}")
    if task_id:
        lines.append(f"Task: {task_link(task_id, console_url)}")
    elif console_url:
        lines.append(f"Staff console: {console_url}")
    urgent = priority == "URGENT"
    subject = f"[{practice_name}] {'URGENT: ' if urgent else ''}{label} ({priority})"
    return StaffMessage(subject, "\n".join(lines), urgent)
