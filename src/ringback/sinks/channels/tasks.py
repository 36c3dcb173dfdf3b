"""The callback task queue: CREATE_TASK actions become tasks, staff updates move them.

Tasks live in the sinks' changelog-backed Faust table `tasks` (key: task_id, which
is the action_id of the CREATE_TASK command; value: the task as JSON). The sink
workers write it; everything else only reads.

Read API for the staff console (another process):

    board = TaskBoard(env).follow()        # reads the table's changelog topic
    board.wait_ready(30)
    board.open_tasks("maple-family")       # OPEN and CLAIMED tasks, most urgent first
    board.open_tasks("maple-family", role="nurse")
    board.get("maple-family", task_id)     # None for another practice's task
    key, record = update_record(task, "CLAIM", actor="u-17", now_ms=...)
    # produce `record` (schemas/task_update.avsc) with `key` to the task-updates topic

The board reads the changelog (compacted, one record per task change), so it sees
every task whichever sink worker owns its partition. Within a sinks process the
same functions work on the table itself: `open_tasks(tasks_table.values(), ...)`.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ringback.config.settings import Settings
from ringback.kafka.topic_cache import TopicCacheReader, from_start_consumer

log = logging.getLogger(__name__)

OPEN, CLAIMED, COMPLETED = "OPEN", "CLAIMED", "COMPLETED"
PENDING = "PENDING"  # placeholder: updates that arrived before their task (not a task yet)
PRIORITY_RANK = {"URGENT": 0, "HIGH": 1, "NORMAL": 2, "LOW": 3}
TABLE_NAME = "tasks"
MAX_REMEMBERED_UPDATES = 50
# CREATE_TASK params (streams/rules/recipes.py) kept on the task for the staff console.
TASK_DETAIL_PARAMS = ("todo", "call_time", "patient_name", "urgency_reason", "appointment_time")


def changelog_topic(env: Settings) -> str:
    """The Faust changelog topic of the sinks' task table."""
    return f"{env.ringback_namespace}-sinks-{TABLE_NAME}-changelog"


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
        # For the staff console (connectors/console/views.py decides who sees which detail):
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
    }


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
    return (task.get("due_at") or 0, PRIORITY_RANK.get(task.get("priority"), 9), task["task_id"])


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


class TaskBoard:
    """Every task, kept current from the task table's changelog topic (a thread)."""

    def __init__(self, env: Settings) -> None:
        self.env = env
        self._tasks: dict[str, dict] = {}
        self._lock = threading.Lock()
        # Reads the changelog from the start, and again after an error (kafka/topic_cache.py).
        self._reader = TopicCacheReader("task board", "the task changelog", self._read_once, thread_name="task-board")
        self._ready, self._stop = self._reader.ready, self._reader.stop  # (LiveTaskBoard reads _ready)

    # -- reads
    def open_tasks(self, practice_id: str, role: str | None = None) -> list[dict]:
        with self._lock:
            tasks = list(self._tasks.values())
        return open_tasks(tasks, practice_id, role)

    def get(self, practice_id: str, task_id: str) -> dict | None:
        with self._lock:
            task = self._tasks.get(task_id)
        if not task or task.get("state") == PENDING:  # an update that overtook its task
            return None
        return task if task.get("practice_id") == practice_id else None

    def all_tasks(self, practice_id: str) -> list[dict]:
        with self._lock:
            return sorted(
                (t for t in self._tasks.values() if t.get("practice_id") == practice_id and t.get("state") != PENDING),
                key=urgency_key,
            )

    # -- following the changelog
    def follow(self) -> TaskBoard:
        self._reader.start(self._new_consumer)
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self._reader.wait_ready(timeout)

    def close(self) -> None:
        self._reader.close()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        try:
            task_id = json.loads(key)
        except ValueError:
            task_id = key.decode(errors="replace")
        with self._lock:
            if value is None:
                self._tasks.pop(task_id, None)
                return
            try:
                self._tasks[task_id] = json.loads(value)
            except ValueError:
                log.error("unreadable task record skipped")

    def _new_consumer(self) -> Consumer:
        return from_start_consumer(
            self.env.kafka_bootstrap_servers, f"{self.env.ringback_namespace}.task-board.{uuid.uuid4().hex[:8]}"
        )

    def _read_once(self, consumer: Consumer) -> None:
        """Read the changelog from the start (applying the records again is idempotent)."""
        topic = changelog_topic(self.env)
        try:
            md = None
            while not self._stop.is_set():
                md = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if md is not None and md.error is None and md.partitions:
                    break
                self._ready.set()  # no task table yet: nothing to show
                self._stop.wait(1.0)
            if md is None or self._stop.is_set():
                return
            parts = [TopicPartition(topic, p, 0) for p in md.partitions]
            ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            pending = {p for p, end in ends.items() if end > 0}
            consumer.assign(parts)
            if not pending:
                self._ready.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        if not pending:
                            self._ready.set()
                    continue
                self.apply(msg.key(), msg.value())
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    pending.discard(msg.partition())
                    if not pending:
                        self._ready.set()
        except KafkaException as exc:  # e.g. a changelog topic whose leaders are not elected yet
            log.warning("task board: changelog not readable yet (%s); retrying", exc.args[0].name())
