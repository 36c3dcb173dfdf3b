"""The console's copy of every task: the tasks topic, read whole and followed.

The sink workers keep the tasks; the changelog of their task table is the contract
topic `<namespace>.tasks` (kafka/topics.py TASKS, Avro schemas/task.avsc, key the
task_id). The cache reads it from the start, every partition (whichever sink worker
owns a partition), in a background thread (kafka/topic_cache.py), and calls
`on_change(practice_id)` for each record so the page's event streams hear of it.

    cache = TaskCache(env, on_change=notifier.bump).follow()
    cache.wait_ready(30)                      # read up to the end offsets seen at start
    cache.open_tasks("maple-family")          # OPEN and CLAIMED, most urgent first
    cache.get("maple-family", task_id)        # None for another practice's task
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ringback.config.settings import Settings
from ringback.domain.tasks import PENDING, open_tasks, urgency_key
from ringback.kafka import topics
from ringback.kafka.topic_cache import FollowedTopic, TopicCacheReader
from ringback.schemas import codec

log = logging.getLogger(__name__)


class TaskCache(FollowedTopic):
    """Every task by id, kept current from the tasks topic."""

    group = "task-cache"

    def __init__(self, env: Settings, on_change: Callable[[str], None] = lambda practice_id: None) -> None:
        self.env = env
        self.on_change = on_change
        self._tasks: dict[str, dict] = {}  # PENDING placeholders included: the topic's content
        self._lock = threading.Lock()
        # Reads the topic from the start, and again after an error.
        self._reader = TopicCacheReader("task cache", "the tasks topic", self._read, thread_name="task-cache")

    # -- reads
    def get(self, practice_id: str, task_id: str) -> dict | None:
        """The practice's task (any state); None if there is none or it is another practice's."""
        with self._lock:
            task = self._tasks.get(task_id)
        if not task or task.get("state") == PENDING:  # updates that overtook their task
            return None
        return task if task.get("practice_id") == practice_id else None

    def all_tasks(self, practice_id: str) -> list[dict]:
        """The practice's tasks in every state, most urgent first."""
        with self._lock:
            tasks = list(self._tasks.values())
        return sorted(
            (t for t in tasks if t.get("practice_id") == practice_id and t.get("state") != PENDING), key=urgency_key
        )

    def open_tasks(self, practice_id: str, role: str | None = None) -> list[dict]:
        with self._lock:
            tasks = list(self._tasks.values())
        return open_tasks(tasks, practice_id, role)

    # -- following the topic
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the tasks topic: the task's latest state, or a tombstone."""
        if key is None:
            return
        task_id = key.decode(errors="replace")
        if value is None:
            with self._lock:
                gone = self._tasks.pop(task_id, None)
            practice = (gone or {}).get("practice_id")
        else:
            try:
                task = codec.decode("task", value)
            except ValueError as exc:  # one bad record must not stop the console
                log.error("task cache: unreadable task record skipped: %s", exc)
                return
            with self._lock:
                self._tasks[task_id] = task
            practice = task["practice_id"]
        if practice:
            self.on_change(practice)

    def _read(self, consumer: Consumer) -> None:
        """Read the topic from the start (applying the records again is idempotent)."""
        topic = topics.topic_name(topics.TASKS, self.env)
        ready, stop = self._reader.ready, self._reader.stop
        try:
            md = None
            while not stop.is_set():
                md = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if md is not None and md.error is None and md.partitions:
                    break
                ready.set()  # no tasks topic yet: nothing to show
                stop.wait(1.0)
            if md is None or stop.is_set():
                return
            parts = [TopicPartition(topic, p, 0) for p in md.partitions]
            ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            pending = {p for p, end in ends.items() if end > 0}
            consumer.assign(parts)
            if not pending:
                ready.set()
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error, partition, offset = msg.error(), msg.partition(), msg.offset()
                if error is not None or offset is None:  # an event, not a record
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        if not pending:
                            ready.set()
                    continue
                self.apply(msg.key(), msg.value())
                if offset + 1 >= ends.get(partition or 0, 0):
                    pending.discard(partition)
                    if not pending:
                        ready.set()
        except KafkaException as exc:  # e.g. a topic whose partition leaders are not elected yet
            log.warning("task cache: tasks topic not readable yet (%s); retrying", exc.args[0].name())
