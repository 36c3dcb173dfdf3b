"""The sinks' task table on its contract topic, with the production store (RocksDB):
the table restores itself from `<ns>.tasks` (Avro, raw task_id keys) after losing its
local state and after a plain restart, held updates included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ringback.domain.tasks import update_record
from ringback.kafka import topics
from tests.conftest import wait_for
from tests.support.sink_stack import NOON, SinkStack, make_action

pytestmark = pytest.mark.integration

CALLER = "+14155550161"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap):
    s = SinkStack(kafka_bootstrap, "test_tasks_topic_broker", {"RINGBACK_SINKS_STORE": "rocksdb://"})
    try:
        yield s.start()
    finally:
        s.close()


def task_state(stack: SinkStack, task_id: str, state: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (t := stack.tasks().get(task_id)) is not None and t["state"] == state and t,
        timeout,
        interval=0.3,
        message=f"task {task_id} {state} on the tasks topic",
    )


def test_the_task_table_restores_from_the_tasks_topic(stack):
    first = stack.send_action(
        make_action("CREATE_TASK", CALLER, recipient="nurse", params={"role": "nurse"}, priority="HIGH"), CALLER
    )
    opened = task_state(stack, first["action_id"], "OPEN")
    key, claim = update_record(opened, "CLAIM", actor="nina", now_ms=int(NOON * 1000) + 1000)
    stack.produce(topics.TASK_UPDATES, "task_update", key.decode(), claim)
    task_state(stack, first["action_id"], "CLAIMED")
    # An update that overtakes its task: held under the task id, on the topic as PENDING.
    second = make_action("CREATE_TASK", CALLER, recipient="nurse", params={"role": "nurse"})
    early = {**claim, "update_id": "early-1", "task_id": second["action_id"], "case_id": second["case_id"]}
    stack.produce(topics.TASK_UPDATES, "task_update", key.decode(), early)
    held = task_state(stack, second["action_id"], "PENDING")
    assert [u["update_id"] for u in held["pending_updates"]] == ["early-1"]

    # Local state lost (a new machine): RocksDB is refilled from the tasks topic.
    stack.procs.kill("sinks")
    shutil.rmtree(Path(stack.env["RINGBACK_STATE_DIR"]) / "sinks")
    stack.start_sinks()
    stack.send_action(second, CALLER)  # its held claim applies on creation
    created = task_state(stack, second["action_id"], "CLAIMED")
    assert created["claimed_by"] == "nina" and created["updates"] == ["early-1"]
    _, done = update_record(opened, "COMPLETE", actor="nina", now_ms=int(NOON * 1000) + 2000, outcome="reached")
    stack.produce(topics.TASK_UPDATES, "task_update", key.decode(), done)
    completed = task_state(stack, first["action_id"], "COMPLETED")  # applied to the restored task
    assert [h["action"] for h in completed["history"]] == ["CREATE", "CLAIM", "COMPLETE"]

    # A plain restart: RocksDB on disk, only the topic's tail is read.
    stack.procs.kill("sinks")
    stack.start_sinks()
    _, reassign = update_record(created, "REASSIGN", actor="max", now_ms=int(NOON * 1000) + 3000, new_role="admin_team")
    stack.produce(topics.TASK_UPDATES, "task_update", key.decode(), reassign)
    moved = task_state(stack, second["action_id"], "OPEN")  # an unknown task would be held (PENDING)
    assert moved["role"] == "admin_team" and moved["claimed_by"] is None
