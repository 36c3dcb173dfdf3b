"""Callback tasks: the rules the sink workers and the staff console share.

A task is made from a CREATE_TASK action (`new_task`) and moved by staff TaskUpdates
(`apply_update`). A patient's SMS reply is a CREATE_TASK too (workflow/sms.py): its text
is kept in the task's `details["replies"]` (a JSON list, for the console only), and a
reply naming an open task in `params["task_id"]` is added to that task (`add_reply`).
The sinks keep every task in their `tasks` table, whose changelog is
the contract topic `<namespace>.tasks` (kafka/topics.py TASKS, schemas/task.avsc); the
console reads that topic and sends TaskUpdates (`update_record`). Both apply the same
rules to the same log, so every copy agrees on who holds a task. A task is a plain dict
shaped like the Avro record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable

OPEN, CLAIMED, COMPLETED = "OPEN", "CLAIMED", "COMPLETED"
# Not a task yet: the updates that arrived before their task (redelivery, replay), held
# under the task's id until the CREATE_TASK action makes it (`hold_update`).
PENDING = "PENDING"
PRIORITY_RANK = {"URGENT": 0, "HIGH": 1, "NORMAL": 2, "LOW": 3}
MAX_REMEMBERED_UPDATES = 50
# CREATE_TASK params (domain/recipes.py) kept on the task for the staff console.
TASK_DETAIL_PARAMS = ("todo", "call_time", "patient_name", "urgency_reason", "appointment_time")
# details["replies"]: the patient's SMS replies, oldest first: [{"id", "at", "text"}] as JSON.
REPLIES = "replies"
MAX_REPLIES = 50  # a task keeps the latest 50 replies (the conversation keeps them all)


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
        "details": _details(action),
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


def _details(action: dict) -> dict[str, str]:
    params = action.get("params") or {}
    details = {k: v for k, v in params.items() if k in TASK_DETAIL_PARAMS}
    reply = _reply(params)
    if reply is not None:
        details[REPLIES] = json.dumps([reply], ensure_ascii=False)
    return details


def _reply(params: dict) -> dict | None:
    """The patient's reply an action carries (params reply_id, reply_at, reply_text), if any."""
    if not params.get("reply_id"):
        return None
    return {"id": params["reply_id"], "at": int(params.get("reply_at") or 0), "text": params.get("reply_text") or ""}


def replies(task: dict) -> list[dict]:
    """The SMS replies a task carries, oldest first ([] for any other task)."""
    raw = (task.get("details") or {}).get(REPLIES)
    return json.loads(raw) if raw else []


def add_reply(action: dict, lookup: Callable[[str], dict | None]) -> tuple[bool, dict | None]:
    """Whether a reply action goes to an open task it names (`params["task_id"]`, found
    with `lookup`), and that task with the reply added (None: it holds the reply already,
    a redelivered action). (False, None): the action makes its own task (`new_task`): it
    names none, or the task it names is completed or unknown."""
    params = action.get("params") or {}
    reply, target_id = _reply(params), params.get("task_id")
    if reply is None or not target_id or target_id == action["action_id"]:
        return False, None
    target = lookup(target_id)
    if not target or not is_open(target):
        return False, None
    kept = replies(target)
    if any(r["id"] == reply["id"] for r in kept):
        return True, None
    text = json.dumps((kept + [reply])[-MAX_REPLIES:], ensure_ascii=False)
    details = {**(target.get("details") or {}), REPLIES: text}
    if params.get("todo"):
        details["todo"] = params["todo"]
    at = action.get("created_at") or reply["at"]
    history = target.get("history", []) + [{"action": "REPLY", "actor": "ringback", "at": at}]
    return True, {**target, "details": details, "history": history}


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
