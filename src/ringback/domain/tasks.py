"""Callback tasks: the rules the sink workers and the staff console share.

A task is made from a CREATE_TASK action (`new_task`) and moved by staff TaskUpdates
(`apply_update`). The sinks keep every task in their `tasks` table, whose changelog is
the contract topic `<namespace>.tasks` (kafka/topics.py TASKS, schemas/task.avsc); the
console reads that topic and sends TaskUpdates (`update_record`). Both apply the same
rules to the same log, so every copy agrees on who holds a task. A task is a plain dict
shaped like the Avro record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

OPEN, CLAIMED, COMPLETED = "OPEN", "CLAIMED", "COMPLETED"
# Not a task yet: the updates that arrived before their task (redelivery, replay), held
# under the task's id until the CREATE_TASK action makes it (`hold_update`).
PENDING = "PENDING"
PRIORITY_RANK = {"URGENT": 0, "HIGH": 1, "NORMAL": 2, "LOW": 3}
MAX_REMEMBERED_UPDATES = 50
# CREATE_TASK params (domain/recipes.py) kept on the task for the staff console.
TASK_DETAIL_PARAMS = ("todo", "call_time", "patient_name", "urgency_reason", "appointment_time")


def new_task(action: dict, caller: str, role: str, now_ms: int, reason: str | None = None) -> dict:
    return {
        "task_id": action["action_id"],
        "case_id": action["case_id"],
        "practice_id": action["practice_id"],
        "caller": caller,  # staff of this practice call this number back
        "role": role,
        "reason": reason or action.get("reason") or "",
        "priority": action.get("priority") or "NORMAL",
        "due_at": action.get("due_at") or now_ms,
        "created_at": now_ms,
        "scenario": action.get("scenario"),
        "step": action.get("step"),
        # For the staff console (console/views.py decides who sees which detail):
        "missed_at": action.get("missed_at"),
        "details": {k: v for k, v in (action.get("params") or {}).items() if k in TASK_DETAIL_PARAMS},
        "state": OPEN,
        "claimed_by": None,
        "claimed_at": None,
        "completed_at": None,
        "completed_by": None,
        "outcome": None,
        "history": [{"action": "CREATE", "actor": "ringback", "at": now_ms}],
        "updates": [],
        "pending_updates": [],  # PENDING placeholders only
    }


def hold_update(holder: dict | None, update: dict) -> dict | None:
    """The PENDING placeholder of a task that does not exist yet, now also holding
    `update`; None when it holds that update already."""
    if holder is None:
        holder = {
            "task_id": update["task_id"],
            "case_id": update["case_id"],
            "practice_id": update["practice_id"],
            "state": PENDING,
            "pending_updates": [],
        }
    if any(u["update_id"] == update["update_id"] for u in holder["pending_updates"]):
        return None
    return {**holder, "pending_updates": [*holder["pending_updates"], update]}


def apply_update(task: dict, update: dict) -> tuple[dict, str | None]:
    """(the task after a staff update, or the same task with a reason it was not applied)."""
    if update["update_id"] in task.get("updates", []):
        return task, "duplicate update"
    if update["practice_id"] != task["practice_id"]:
        return task, "update from another practice"
    action, at, actor = update["action"], update["at"], update["actor"]
    new = {
        **task,
        "updates": (task.get("updates", []) + [update["update_id"]])[-MAX_REMEMBERED_UPDATES:],
        "history": task.get("history", []) + [{"action": action, "actor": actor, "at": at}],
    }
    if task["state"] == COMPLETED:
        return task, "task already completed"
    if action == "CLAIM":
        if task["state"] == CLAIMED and task.get("claimed_by") not in (None, actor):
            # Two console replicas may each accept a claim at the same instant: the first
            # in the log holds the task, on every copy of the table alike.
            return task, "already claimed by someone else"
        new.update(state=CLAIMED, claimed_by=actor, claimed_at=at)
    elif action == "COMPLETE":
        new.update(state=COMPLETED, completed_by=actor, completed_at=at, outcome=update.get("outcome"))
    elif action == "REASSIGN":
        if not update.get("new_role"):
            return task, "reassign without a new role"
        new.update(state=OPEN, role=update["new_role"], claimed_by=None, claimed_at=None)
    else:
        return task, f"unknown task action {action}"
    return new, None


def is_open(task: dict) -> bool:
    return task.get("state") in (OPEN, CLAIMED)


def urgency_key(task: dict) -> tuple:
    return (task.get("due_at") or 0, PRIORITY_RANK.get(task.get("priority") or "", 9), task["task_id"])


def open_tasks(tasks: Iterable[dict], practice_id: str, role: str | None = None) -> list[dict]:
    """The practice's open (OPEN or CLAIMED) tasks, due first, then by priority."""
    return sorted(
        (
            t
            for t in tasks
            if isinstance(t, dict)
            and t.get("practice_id") == practice_id
            and is_open(t)
            and (role is None or t.get("role") == role)
        ),
        key=urgency_key,
    )


def update_record(
    task: dict, action: str, actor: str, now_ms: int, outcome: str | None = None, new_role: str | None = None
) -> tuple[bytes, dict]:
    """(key, TaskUpdate record) for the task-updates topic, as the console sends it."""
    record = {
        "update_id": uuid.uuid4().hex,
        "task_id": task["task_id"],
        "case_id": task["case_id"],
        "practice_id": task["practice_id"],
        "action": action,
        "actor": actor,
        "outcome": outcome,
        "new_role": new_role,
        "at": now_ms,
    }
    return f"{task['practice_id']}|{task['caller']}".encode(), record
