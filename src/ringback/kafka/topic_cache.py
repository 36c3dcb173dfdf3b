"""A topic cached in memory: the reader that fills the cache, in a background thread.

The task board (sinks/channels/tasks.py) and the practice directory
(kafka/practice_directory.py) each keep a topic's content in memory (the cache) and
give a `read(consumer)` that applies the topic's records to it. The reader runs it
from the start of the topic; a read stops on an error (for instance a topic just
created, whose partition leaders are not elected yet), and the reader then waits a
moment and reads the topic again from the start with a new consumer. Applying the
records again must be idempotent; the owner keeps serving what it has meanwhile.

    reader = TopicCacheReader("task board", "the task changelog", read, thread_name="task-board")
    reader.start(lambda: from_start_consumer(bootstrap, group_id))
    reader.wait_ready(30)   # `read` sets reader.ready once it has caught up
    reader.close()

`read(consumer)` reads until `reader.stop` is set or it raises (or returns early);
the reader closes the consumer.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Self

from confluent_kafka import Consumer

from ringback.config.settings import Settings
from ringback.kafka.connection import Connection, client_config, librdkafka
from ringback.observability import logs

log = logging.getLogger(__name__)


def from_start_consumer(bootstrap_servers: Connection, group_id: str) -> Consumer:
    """A consumer for reading partitions from the start: never commits, reports each
    partition's end (`_PARTITION_EOF`)."""
    config: dict[str, Any] = {
        **librdkafka(bootstrap_servers),  # the brokers, TLS and SASL (kafka/connection.py)
        "group.id": group_id,
        "logger": logs.librdkafka_logger(),  # quiet during a broker outage (observability/client_errors.py)
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    return Consumer(config)


class TopicCacheReader:
    """Runs `read(consumer)` in a daemon thread, again from the start after each stop."""

    def __init__(
        self, name: str, what: str, read: Callable[[Consumer], None], thread_name: str, retry_s: float = 1.0
    ) -> None:
        self.name = name  # for the logs: "task board"
        self.what = what  # for the logs: "the task changelog"
        self.read = read
        self.thread_name = thread_name
        self.retry_s = retry_s
        self.ready = threading.Event()  # set by `read` once it has caught up
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, new_consumer: Callable[[], Consumer]) -> None:
        self._thread = threading.Thread(target=self._run, args=(new_consumer,), name=self.thread_name, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self.ready.wait(timeout)

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, new_consumer: Callable[[], Consumer]) -> None:
        while not self.stop.is_set():
            self._read_once(new_consumer())
            if self.stop.wait(self.retry_s):
                return
            log.warning("%s: reading %s again", self.name, self.what)

    def _read_once(self, consumer: Consumer) -> None:
        try:
            self.read(consumer)
        except Exception:
            log.exception("%s stopped following %s", self.name, self.what)
        finally:
            consumer.close()


class FollowedTopic:
    """A cache kept by a TopicCacheReader (`self._reader`), each read with a new consumer
    that never commits, in a group of its own named `<ns>.<group>.<random>`: the console's
    task cache, conversations and session revocations."""

    _reader: TopicCacheReader
    env: Settings
    group: str  # e.g. "task-cache"

    def _new_consumer(self) -> Consumer:
        group_id = f"{self.env.ringback_namespace}.{self.group}.{uuid.uuid4().hex[:8]}"
        return from_start_consumer(client_config(self.env), group_id)

    def follow(self) -> Self:
        self._reader.start(self._new_consumer)
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self._reader.wait_ready(timeout)

    def ready(self) -> bool:
        return self._reader.ready.is_set()

    def close(self) -> None:
        self._reader.close()
