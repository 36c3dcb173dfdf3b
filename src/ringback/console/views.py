"""What a staff member may see of a task and do with it: pure functions, no I/O.

Minimum necessary (docs/product.md, "Rules for every workflow"):
* Every user of a practice sees the practice's whole open queue: priority, role,
  reason (written without PHI by the workflow), due time, time since the missed call.
* The caller's number, and the patient details the workflow attached for the
  callback (patient name, urgency reason, appointment time), only for the role the
  task is routed to: the role that calls back. Everyone else sees the last four
  digits of the number and no patient details.
* Claim and complete: only a user holding the task's role. Reassign: a user holding
  the task's role, or a manager (who hands out work without calling back).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import phonenumbers

from ringback.console.users import User
from ringback.domain import tasks

# Outcomes of a completed callback (TaskUpdate.outcome), in the order the page offers them.
OUTCOMES: dict[str, str] = {
    "reached_patient": "Reached patient",
    "left_message": "Left message",
    "wrong_number": "Wrong number",
}

# The roles the workflows route tasks to (domain/recipes.py), with their labels.
STANDARD_ROLES: dict[str, str] = {
    "scheduling_coordinator": "Scheduling coordinator",
    "scheduling_queue": "Scheduling queue",
    "nurse": "Nurse",
    "assigned_provider": "Assigned provider",
    "department_manager": "Department manager",
    "admin_team": "Admin team",
}
MANAGER_ROLES = frozenset({"department_manager", "manager"})

# Task details (set from the CREATE_TASK action's params) and who may see them.
DETAILS_FOR_ALL = ("todo", "call_time")
DETAILS_FOR_CALLBACK_ROLE = ("patient_name", "urgency_reason", "appointment_time")
# The patient's SMS replies a "patient replied" task carries: what the patient wrote, so
# only for the task's role, like the patient details (as a list, `replies`, not in `details`).

MASK = "•"


def role_label(role: str) -> str:
    return STANDARD_ROLES.get(role) or role.replace("_", " ").capitalize()


def mask_phone(number: str | None) -> str:
    """`•••-•••-0123`: enough to match a voicemail, not enough to call."""
    digits = "".join(ch for ch in (number or "") if ch.isdigit())
    if len(digits) < 4:
        return MASK * 4
    return f"{MASK * 3}-{MASK * 3}-{digits[-4:]}"


@lru_cache(maxsize=4096)
def display_phone(number: str) -> str:
    """A number as staff dial it: national format for the practice's own country (US/CA)."""
    try:
        parsed = phonenumbers.parse(number, "US")
    except phonenumbers.NumberParseException:
        return number
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if parsed.country_code == 1
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(parsed, fmt)


def is_manager(user: User) -> bool:
    return bool(MANAGER_ROLES.intersection(user.roles))


def holds_role(user: User, task: dict) -> bool:
    return task.get("role") in user.roles


def can_act(user: User, task: dict) -> bool:
    """Claim / complete."""
    return holds_role(user, task)


def can_reassign(user: User, task: dict) -> bool:
    return holds_role(user, task) or is_manager(user)


def reassign_roles(routing_roles: Iterable[str], user_roles: Iterable[str]) -> list[str]:
    """Roles a task may be handed to at a practice: the standard ones, the practice's
    routing roles and the roles its console users hold."""
    extra = sorted((set(routing_roles) | set(user_roles)) - set(STANDARD_ROLES))
    return [*STANDARD_ROLES, *extra]


def reply_list(task: dict) -> list[dict]:
    """The patient's replies on a task, oldest first, as `{"at", "text"}`; [] for a task
    without any or with a value that is not the list domain/tasks.py writes."""
    try:
        kept = tasks.replies(task)
    except (TypeError, ValueError):  # json.JSONDecodeError is a ValueError
        return []
    if not isinstance(kept, list):
        return []
    return [
        {"at": int(r.get("at") or 0), "text": str(r.get("text") or "")}
        for r in kept
        if isinstance(r, dict) and isinstance(r.get("at", 0), int | float)
    ]


def task_view(task: dict, user: User, conversation_id: str | None = None) -> dict:
    """The task as this user's page shows it (the API's `Task` object). `conversation_id`:
    the caller's conversation, when the console has one (a link on the task's card)."""
    own = holds_role(user, task)
    caller = task.get("caller") or ""
    details_raw = task.get("details") or {}
    keys = DETAILS_FOR_ALL + (DETAILS_FOR_CALLBACK_ROLE if own else ())
    details = {k: str(details_raw[k]) for k in keys if details_raw.get(k)}
    claimed_by = task.get("claimed_by")
    state = task.get("state")
    return {
        "task_id": task["task_id"],
        "state": state,
        "priority": task.get("priority") or "NORMAL",
        "role": task.get("role") or "",
        "role_label": role_label(task.get("role") or ""),
        "reason": task.get("reason") or "",
        "scenario": task.get("scenario"),
        "due_at": task.get("due_at"),
        "created_at": task.get("created_at"),
        # When the missed call happened; tasks created before the sinks recorded it show their creation.
        "missed_at": task.get("missed_at") or task.get("created_at"),
        "caller": (
            {"display": display_phone(caller), "dial": caller, "masked": False}
            if own and caller
            else {"display": mask_phone(caller), "dial": None, "masked": True}
        ),
        "details": details,
        "replies": reply_list(task) if own else [],
        "conversation_id": conversation_id,
        "claimed_by": claimed_by,
        "claimed_by_me": bool(claimed_by) and claimed_by == user.username,
        "completed_at": task.get("completed_at"),
        "outcome": task.get("outcome"),
        "can_claim": own and state == "OPEN",
        "can_complete": own and (state == "OPEN" or (state == "CLAIMED" and claimed_by == user.username)),
        "can_reassign": can_reassign(user, task)
        and state in ("OPEN", "CLAIMED")
        and (claimed_by in (None, user.username) or is_manager(user)),
    }
