"""Co-partitioning rests on every producer hashing keys alike: the gateway's
confluent-kafka producer, Faust's aiokafka producer and `topics.partition_for`."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import AdminClient, NewTopic

from ringback.kafka.producer import AckedProducer
from ringback.kafka.topics import join_key, partition_for

pytestmark = pytest.mark.integration

KEYS = [join_key("maple-family", f"+1415555{n:04d}") for n in range(0, 400, 7)]


def test_gateway_faust_and_partition_for_agree(kafka_bootstrap, namespace):
    topic = f"{namespace}.partitioning"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=1)])[topic].result()

    async def run() -> tuple[list[int], list[int]]:
        gateway = AckedProducer(kafka_bootstrap)
        confluent = [(await gateway.send(topic, k, b"x"))[0] for k in KEYS]
        gateway.close()
        faust_like = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await faust_like.start()
        try:
            aio = [(await faust_like.send_and_wait(topic, b"x", key=k)).partition for k in KEYS]
        finally:
            await faust_like.stop()
        return confluent, aio

    confluent, aio = asyncio.run(run())
    expected = [partition_for(k, 8) for k in KEYS]
    assert confluent == expected
    assert aio == expected
    assert len(set(expected)) > 4  # the keys really spread over the partitions
