"""The sinks' task channel: where the callback tasks are kept.

CREATE_TASK actions become tasks and staff TaskUpdates move them (the rules:
domain/tasks.py; the executor applies them). The tasks live in the sinks' Faust table
`tasks`, whose changelog is not a private `<app>-tasks-changelog` but the declared
contract topic `<namespace>.tasks` (kafka/topics.py TASKS): key the task_id as raw
UTF-8 bytes, value the Avro `task` record (schemas/task.avsc). The staff console reads
that topic, so it sees exactly what the sinks persisted, in the contract's schema.
"""

from __future__ import annotations

import faust

from ringback.config.settings import Settings
from ringback.kafka import topics


def changelog_topic(app: faust.App, env: Settings) -> faust.Topic:
    """The tasks topic as the changelog of the sinks' `tasks` table. The table must
    take its serializers too: RocksDB stores the changelog's bytes as they are."""
    topic = app.topic(
        topics.topic_name(topics.TASKS, env),
        key_type=str,
        key_serializer="raw",
        value_serializer="avro_task",
        partitions=topics.partition_count(topics.TASKS, env),
        compacting=True,
        # As Faust declares its own changelogs: created by the app, never committed
        # (read for recovery only), tombstones allowed.
        internal=True,
        acks=False,
        allow_empty=True,
    )
    assert isinstance(topic, faust.Topic)  # what app.topic makes (typed as the TopicT interface)
    return topic
