"""A stream worker refuses to start when co-partitioned topics disagree on partition counts."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


def create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)


@pytest.mark.parametrize("topic, partitions", [("{ns}.flags", 2), ("{ns}-streams-state-changelog", 3)])
def test_worker_refuses_mis_partitioned_topics(processes, service_env, kafka_bootstrap, topic, partitions):
    name = topic.format(ns=service_env["RINGBACK_NAMESPACE"])
    create(kafka_bootstrap, name, partitions)
    result = processes.run("worker", timeout=120)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and f"{name}: {partitions} partitions" in result.stderr
    assert "RINGBACK_PARTITIONS=4" in result.stderr
