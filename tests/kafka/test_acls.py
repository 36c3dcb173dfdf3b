"""The ACLs of each kind of process, derived from the topic declarations (no broker)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from ringback.cli import main
from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.kafka import acls, topics
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sinks import app as sinks_app
from ringback.worker.app import make_app
from ringback.worker.topology import build_topology


@pytest.fixture
def env(tmp_path) -> Settings:
    return Settings(
        _env_file=None,
        ringback_namespace="hs1",
        ringback_partitions=4,
        ringback_state_dir=tmp_path,
        ringback_store="memory://",
    )


def allowed(rules: list[acls.Acl], operation: str, resource: str, name: str) -> bool:
    """What the broker's authorizer would decide for these ALLOW rules (no DENY rules exist)."""
    return any(
        r.operation == operation
        and r.resource == resource
        and (r.name == name if r.pattern == "LITERAL" else name.startswith(r.name))
        for r in rules
    )


def test_the_gateway_writes_call_events_and_cannot_read_the_patients(env):
    rules = acls.acls_for("gateway", env)
    assert allowed(rules, "WRITE", "TOPIC", "hs1.call-events")
    assert allowed(rules, "WRITE", "TOPIC", "hs1.message-status")
    assert not allowed(rules, "READ", "TOPIC", "hs1.patients")
    assert not allowed(rules, "READ", "TOPIC", "hs1.call-events")
    assert not allowed(rules, "WRITE", "TOPIC", "hs1.actions")
    assert not any(r.resource == "GROUP" and r.operation != "DESCRIBE" for r in rules)  # it joins no group
    assert {r.principal for r in rules} == {"User:hs1-gateway"}


@pytest.mark.parametrize("process", topics.PROCESSES)
def test_each_process_reads_and_writes_exactly_the_topics_declared_for_it(env, process):
    rules = acls.acls_for(process, env)
    for spec in topics.ALL:
        name = topics.topic_name(spec, env)
        assert allowed(rules, "READ", "TOPIC", name) == (process in spec.readers), (process, name)
        assert allowed(rules, "WRITE", "TOPIC", name) == (process in spec.writers), (process, name)
        assert allowed(rules, "DESCRIBE", "TOPIC", name)  # start-up checks see every topic's metadata
        assert allowed(rules, "CREATE", "TOPIC", name) == (process == topics.ADMIN), (process, name)


def test_only_the_faust_apps_join_consumer_groups_and_only_their_own(env):
    for process in topics.PROCESSES:
        groups = {r.name for r in acls.acls_for(process, env) if r.resource == "GROUP" and r.operation != "DESCRIBE"}
        assert groups == ({f"hs1-{acls.FAUST_ROLES[process]}"} if process in acls.FAUST_ROLES else set())
    worker = acls.acls_for("worker", env)
    assert allowed(worker, "WRITE", "TRANSACTIONAL_ID", "hs1-streams-hs1-streams-0-3")  # exactly-once producers
    assert not allowed(acls.acls_for("sinks", env), "READ", "GROUP", "hs1-streams")


def test_the_helper_readers_may_look_their_groups_up_but_never_join_or_commit(env):
    """The practice directory, the console's caches, the worker's takeover scan and the report assign
    partitions themselves under a `<ns>.` group id, which librdkafka looks up (FindCoordinator)."""
    for process in topics.PROCESSES:
        rules = acls.acls_for(process, env)
        assert allowed(rules, "DESCRIBE", "GROUP", "hs1.practice-directory")
        assert not allowed(rules, "READ", "GROUP", "hs1.practice-directory")
        assert not allowed(rules, "DESCRIBE", "GROUP", "hs2.practice-directory")


def test_the_worker_reads_back_its_actions_and_outcomes_after_a_takeover(env):
    worker = acls.acls_for("worker", env)
    assert allowed(worker, "READ", "TOPIC", "hs1.actions") and allowed(worker, "READ", "TOPIC", "hs1.outcomes")


def test_the_internal_topics_of_the_built_apps_are_their_apps_alone(env):
    worker = build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))
    sinks = sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), ManualClock(0))
    internal = {
        "worker": [t.get_topic_name() for t in worker.internal_topics],
        "sinks": [t.get_topic_name() for t in sinks.internal_topics],
    }
    assert "hs1.sinks-ticks" in internal["sinks"]  # outside the app's prefix: named literally
    rules = acls.all_acls(env, internal=internal)
    for process, names in internal.items():
        principal = f"User:hs1-{process}"
        mine = [r for r in rules if r.principal == principal]
        others = [r for r in rules if r.principal != principal]
        for name in names + [f"hs1-{acls.FAUST_ROLES[process]}-__assignor-__leader"]:
            for op in ("READ", "WRITE", "CREATE"):
                assert allowed(mine, op, "TOPIC", name), (process, op, name)
            if name != topics.topic_name(topics.TASKS, env):  # the console reads the tasks changelog
                assert not allowed(others, "READ", "TOPIC", name), name


def test_a_principal_format_names_each_kind(env):
    rules = acls.all_acls(env, ["report", "console"], "User:CN={process}.{namespace}.example.org")
    assert {r.principal for r in rules} == {"User:CN=report.hs1.example.org", "User:CN=console.hs1.example.org"}


def test_an_unknown_process_kind_is_refused_by_name(env):
    with pytest.raises(ValueError, match="'billing'"):
        acls.acls_for("billing", env)
    result = CliRunner().invoke(main, ["kafka", "acls", "--process", "billing"], env={"RINGBACK_NAMESPACE": "hs1"})
    assert result.exit_code == 2 and "billing: not one of admin, gateway" in result.output


def test_the_bindings_are_confluent_kafka_acls_for_any_host(env):
    rules = acls.acls_for("report", env)
    bound = acls.bindings(rules)
    assert len(bound) == len(rules)
    read = next(b for b in bound if b.operation == AclOperation.READ)
    assert (read.restype, read.name, read.resource_pattern_type, read.host) == (
        ResourceType.TOPIC,
        "hs1.outcomes",
        ResourcePatternType.LITERAL,
        "*",
    )


def test_the_cli_prints_one_line_per_acl(env):
    result = CliRunner().invoke(main, ["kafka", "acls", "--process", "report"], env={"RINGBACK_NAMESPACE": "hs1"})
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert ["User:hs1-report", "ALLOW", "READ", "TOPIC", "LITERAL", "hs1.outcomes"] in lines
    assert all(line[0] == "User:hs1-report" for line in lines)
