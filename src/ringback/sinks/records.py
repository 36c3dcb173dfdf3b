"""Records the sinks write besides the effects themselves: ACTION outcomes, dead
letters, sent-log entries, and the staff-facing message text. Pure functions."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

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


def mask_number(number: str) -> str:
    """+14155550123 -> +1•••••••0123 (enough to recognise, not to dial)."""
    if len(number) <= 6:
        return "•" * len(number)
    return number[:2] + "•" * (len(number) - 6) + number[-4:]


def local_time(ms: int, time_zone: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(time_zone)).strftime("%a %d %b %H:%M %Z")


def staff_message(action: dict, practice_name: str, time_zone: str, caller: str | None) -> tuple[str, str]:
    """(subject, text) of a staff notification: what happened, what to do, and no more
    patient data than the role needs (the coordinator gets the number to call back,
    a manager's escalation only a masked one)."""
    kind = action["kind"]
    alert = kind == "ALERT_MANAGER"
    label = "Escalation: callback overdue" if alert else "Missed call: action needed"
    todo = (action.get("params") or {}).get("todo") or (
        "Make sure someone calls this patient back now, or reassign the task in the staff console."
        if alert
        else "Call the patient back, or pick up the callback task in the staff console."
    )
    missed = action.get("missed_at") or action["created_at"]
    lines = [f"{practice_name}: {label}"]
    if action.get("body"):
        lines.append(action["body"])
    lines += [
        f"Why: {action.get('reason') or '-'}",
        f"Missed call: {local_time(missed, time_zone)}",
        f"Priority: {action.get('priority') or 'NORMAL'}",
    ]
    if caller:
        lines.append(f"Caller: {mask_number(caller) if alert else caller}")
    if action.get("due_at"):
        lines.append(f"Due: {local_time(action['due_at'], time_zone)}")
    lines += [f"To do: {todo}", f"Reference: {action['action_id']}"]
    subject = f"[{practice_name}] {label} ({action.get('priority') or 'NORMAL'})"
    return subject, "\n".join(lines)
