"""A broker of the test's own (not the session's), for tests that stop it or re-create it.

    from tests.kafka.own_broker import own_broker, own_kafka_bootstrap  # noqa: F401 - fixtures

gives the test a fixture `broker` (the LocalKafka) and
a `kafka_bootstrap` that is this broker's address, so `service_env` and `processes` point at it.
"""

from __future__ import annotations

import shutil

import pytest

from ringback.dev.local_kafka import LocalKafka
from tests.conftest import free_port


@pytest.fixture(name="broker")
def own_broker(tmp_path):
    own = LocalKafka(port=free_port(), home=tmp_path / "broker").start()
    yield own
    own.stop()


@pytest.fixture(name="kafka_bootstrap")
def own_kafka_bootstrap(broker) -> str:
    return broker.bootstrap


def recreate(broker: LocalKafka) -> None:
    """The same address, a new cluster: every topic, record and committed offset gone."""
    broker.stop()
    shutil.rmtree(broker.data_dir)
    broker.start()
