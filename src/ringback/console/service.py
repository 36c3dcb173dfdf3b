"""The console's view of the task queue, and the staff updates it sends.

Reads come from `TaskCache` (console/task_cache.py: the tasks topic, every partition,
which is the changelog of the sinks' task table). Writes are TaskUpdate records on the
task-updates topic, keyed `practice_id|caller` like every co-partitioned topic, sent
with `AckedProducer`: the console answers only once the broker acknowledged the
update. The sink workers then apply it to their table (and the stream app closes the
case's gate on COMPLETE); until the cache shows it, the console lays its own sent
updates over the cache's copy (`apply_update`, the rule the sinks apply too), so the
page never shows a completed task again while the tasks topic catches up.

`ChangeNotifier` tells the page's event streams (SSE) that a practice's tasks changed:
the cache's thread and the request handlers bump a per-practice version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from ringback.clock import Clock
from ringback.console import views
from ringback.console.task_cache import TaskCache
from ringback.console.users import User
from ringback.domain.tasks import CLAIMED, COMPLETED, apply_update, is_open, update_record, urgency_key
from ringback.kafka.producer import AckedProducer
from ringback.schemas import codec

log = logging.getLogger(__name__)

PENDING_TTL_S = 600.0  # the tasks topic is the truth again after this, applied or not


class ConsoleError(Exception):
    """An answer other than success: HTTP status, error code, message (no PHI)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ChangeNotifier:
    """Per-practice change versions that coroutines can wait on; `bump` is thread-safe."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = defaultdict(int)
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def version(self, practice_id: str) -> int:
        return self._versions[practice_id]

    def bump(self, practice_id: str) -> None:
        """From any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._bump, practice_id)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _bump(self, practice_id: str) -> None:
        self._versions[practice_id] += 1
        event = self._events.pop(practice_id, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """Wake every waiter (shutting down)."""
        self.closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()

    async def wait(self, practice_id: str, seen: int, timeout: float) -> bool:
        """True once the practice's version differs from `seen`; False after `timeout`."""
        if self._versions[practice_id] != seen or self.closing:
            return self._versions[practice_id] != seen
        event = self._events.setdefault(practice_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        return self._versions[practice_id] != seen


@dataclass
class _Pending:
    updates: list[dict] = field(default_factory=list)
    expires: float = 0.0


class TaskService:
    def __init__(
        self,
        tasks: TaskCache,
        producer: AckedProducer,
        topic: str,
        clock: Clock,
        notifier: ChangeNotifier,
        monotonic=time.monotonic,
    ) -> None:
        self.tasks = tasks
        self.producer = producer
        self.topic = topic
        self.clock = clock
        self.notifier = notifier
        self.monotonic = monotonic
        self._pending: dict[str, _Pending] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # ------------------------------------------------------------------ reads
    def _overlay(self, task: dict) -> dict:
        """The cached task with this console's acknowledged updates the cache does not show yet."""
        pending = self._pending.get(task["task_id"])
        if pending is None:
            return task
        if self.monotonic() > pending.expires:
            del self._pending[task["task_id"]]
            return task
        seen = set(task.get("updates") or [])
        left = [u for u in pending.updates if u["update_id"] not in seen]
        if not left:
            del self._pending[task["task_id"]]
            return task
        pending.updates = left
        for update in left:
            task, _ = apply_update(task, update)
        return task

    def get(self, practice_id: str, task_id: str) -> dict | None:
        """The practice's task (any state), None if there is none or it is another practice's."""
        task = self.tasks.get(practice_id, task_id)
        return None if task is None else self._overlay(task)

    def open_tasks(self, practice_id: str, role: str | None = None) -> list[dict]:
        # All of the practice's tasks, then the overlay, then the open filter: a task this
        # console completed leaves the list even while the cache still shows it open.
        tasks = [self._overlay(t) for t in self.tasks.all_tasks(practice_id)]
        return sorted((t for t in tasks if is_open(t) and (role is None or t.get("role") == role)), key=urgency_key)

    # ------------------------------------------------------------------ writes
    def _check(
        self, user: User, task: dict, action: str, outcome: str | None, new_role: str | None, allowed_roles: list[str]
    ) -> None:
        state, claimed_by = task.get("state"), task.get("claimed_by")
        if state == COMPLETED:
            raise ConsoleError(409, "task_completed", "the task is already completed")
        if action in ("CLAIM", "COMPLETE") and not views.can_act(user, task):
            raise ConsoleError(403, "not_your_role", "only staff holding the task's role can claim or complete it")
        if action == "REASSIGN" and not views.can_reassign(user, task):
            raise ConsoleError(403, "not_your_role", "only the task's role or a manager can reassign it")
        if claimed_by and claimed_by != user.username and not (action == "REASSIGN" and views.is_manager(user)):
            raise ConsoleError(409, "claimed_by_other", f"the task is claimed by {claimed_by}")
        if action == "COMPLETE" and outcome not in views.OUTCOMES:
            raise ConsoleError(422, "bad_outcome", "outcome must be one of " + ", ".join(views.OUTCOMES))
        if action == "REASSIGN":
            if new_role not in allowed_roles:
                raise ConsoleError(422, "bad_role", "role must be one of " + ", ".join(allowed_roles))
            if new_role == task.get("role"):
                raise ConsoleError(422, "same_role", "the task already has this role")

    async def update(
        self,
        user: User,
        task_id: str,
        action: str,
        outcome: str | None = None,
        new_role: str | None = None,
        allowed_roles: list[str] | None = None,
    ) -> dict:
        """Check, send the TaskUpdate, wait for the broker's acknowledgement; the task as it now is.

        Raises ConsoleError (404 for a task of another practice, exactly as for none)."""
        practice_id = user.practice_id
        async with self._locks[task_id]:
            task = self.get(practice_id, task_id)
            if task is None:
                raise ConsoleError(404, "not_found", "no such task")
            if action == "CLAIM" and task.get("state") == CLAIMED and task.get("claimed_by") == user.username:
                return task  # claiming twice changes nothing
            self._check(user, task, action, outcome, new_role, allowed_roles or [])
            key, record = update_record(
                task,
                action,
                actor=user.username,
                now_ms=self.clock.now_ms(),
                outcome=outcome if action == "COMPLETE" else None,
                new_role=new_role if action == "REASSIGN" else None,
            )
            await self.producer.send(self.topic, key, codec.encode("task_update", record))
            pending = self._pending.setdefault(task_id, _Pending())
            pending.updates.append(record)
            pending.expires = self.monotonic() + PENDING_TTL_S
            new, why = apply_update(task, record)
            log.info(
                "task %s: %s by %s sent",
                task_id,
                action,
                user.username,
                extra={"practice_id": practice_id, "task_id": task_id, "update_id": record["update_id"]},
            )
            if why:  # cannot happen after the checks above; say so if it does
                log.warning("task %s: update %s would not apply: %s", task_id, record["update_id"], why)
        self.notifier.bump(practice_id)
        if len(self._locks) > 10_000:
            self._locks = defaultdict(asyncio.Lock, {k: v for k, v in self._locks.items() if v.locked()})
        return new
