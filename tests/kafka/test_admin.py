"""Topic administration on a real broker: the declared topics, the Faust apps' internal
topics created before the apps start, and the partition-count checks."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.kafka import admin, topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sinks import app as sinks_app
from ringback.worker.app import make_app
from ringback.worker.topology import build_topology
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def env(kafka_bootstrap, namespace) -> Settings:
    return Settings(
        _env_file=None,
        kafka_bootstrap_servers=kafka_bootstrap,
        ringback_namespace=namespace,
        ringback_partitions=4,
        ringback_store="memory://",
        ringback_sinks_store=None,
    )


def listed(bootstrap: str, names: list[str]) -> dict:
    """The metadata of `names`, once the broker lists them all (a new topic takes a moment)."""
    client = AdminClient({"bootstrap.servers": bootstrap})

    def all_there():
        metadata = client.list_topics(timeout=10).topics
        return {n: metadata[n] for n in names} if all(n in metadata for n in names) else None

    return wait_for(all_there, 30, message=f"the broker listing {names}")  # type: ignore[return-value]  # wait_for returns what the probe returned, typed as object


def described(bootstrap: str, names: list[str]) -> dict[str, tuple[int, str, str, str]]:
    """{name: (partitions, cleanup.policy, retention.ms, max.compaction.lag.ms)}"""
    metadata = listed(bootstrap, names)
    client = AdminClient({"bootstrap.servers": bootstrap})  # alive until the answers are in
    configs = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names])
    out = {}
    for resource, fut in configs.items():
        config = fut.result(30)
        out[resource.name] = (
            len(metadata[resource.name].partitions),
            config["cleanup.policy"].value,
            config["retention.ms"].value,
            config["max.compaction.lag.ms"].value,
        )
    return out


def test_every_declared_topic_is_created_once_with_its_count_and_policy(env, kafka_bootstrap):
    admin.ensure_topics(env)
    admin.ensure_topics(env)  # idempotent
    got = described(kafka_bootstrap, [topics.topic_name(spec, env) for spec in topics.ALL])
    for spec in topics.ALL:
        partitions, policy, _, max_lag = got[topics.topic_name(spec, env)]
        assert partitions == topics.partition_count(spec, env)
        assert policy == ("compact" if spec.compacted else "delete")
        if not spec.compacted:  # retention always explicit, never the broker's default
            assert got[topics.topic_name(spec, env)][2] == str(topics.retention_ms(spec, env))
        else:  # a deleted key (a patient gone from the EHR) is compacted away within the PHI retention
            assert max_lag == str(env.ringback_phi_retention_days * 86_400_000)
    assert got[topics.topic_name(topics.TICKS, env)][2] == "3600000"
    assert got[topics.topic_name(topics.CALL_EVENTS, env)][2] == str(env.ringback_phi_retention_days * 86_400_000)
    assert got[topics.topic_name(topics.OUTCOMES, env)][2] == str(env.ringback_outcome_retention_days * 86_400_000)


def test_the_apps_internal_topics_are_created_as_faust_would_declare_them(env, kafka_bootstrap):
    worker = build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))
    sinks = sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), ManualClock(0))
    internal = worker.internal_topics + sinks.internal_topics
    admin.ensure_internal_topics(env, internal)
    admin.ensure_internal_topics(env, internal)  # idempotent
    ns = env.ringback_namespace
    got = described(kafka_bootstrap, [t.get_topic_name() for t in internal])
    assert {name: (p, policy) for name, (p, policy, _, _) in got.items()} == {
        f"{ns}-streams-state-changelog": (4, "compact"),
        f"{ns}-sinks-sent-log-changelog": (4, "compact"),
        f"{ns}-sinks-consent-changelog": (4, "compact"),
        f"{ns}-sinks-sms-history-changelog": (4, "compact"),
        f"{ns}-sinks-deferred-changelog": (4, "compact"),
        f"{ns}.tasks": (4, "compact"),  # the tasks table's changelog is the contract topic
        f"{ns}.sinks-ticks": (4, "delete"),
    }
    assert got[f"{ns}.sinks-ticks"][2] == "3600000"
    assert got[f"{ns}-sinks-consent-changelog"][3] == str(env.ringback_phi_retention_days * 86_400_000)


def test_a_co_partitioned_topic_with_another_count_is_refused(env, kafka_bootstrap):
    flags = topics.topic_name(topics.FLAGS, env)
    changelog = f"{env.ringback_namespace}-streams-state-changelog"
    client = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for name, count in ((flags, 2), (changelog, 3)):
        client.create_topics([NewTopic(name, num_partitions=count, replication_factor=1)])[name].result(30)
    listed(kafka_bootstrap, [flags, changelog])
    with pytest.raises(admin.CopartitioningError) as err:
        admin.check_copartitioning(env, [changelog])
    assert f"{flags}: 2 partitions" in str(err.value) and f"{changelog}: 3 partitions" in str(err.value)
    with pytest.raises(admin.CopartitioningError, match=f"topic {flags} has 2 partitions"):
        admin.ensure_topics(env)
