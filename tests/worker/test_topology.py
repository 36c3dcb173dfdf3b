"""The worker's topology, built as `ringback worker` builds it but on an app with a memory
store and no broker: what it reads, keeps and sends, under which names (topics, consumer
groups, tables, changelogs, agents)."""

from __future__ import annotations

import pytest

from ringback.clock import ManualClock
from ringback.kafka import admin
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.worker.app import make_app
from ringback.worker.topology import Topology, build_topology
from tests.support.offline_apps import settings, timers

CO_PARTITIONED_INPUTS = {"x.call-events", "x.patients", "x.appointments", "x.flags", "x.task-updates"}


@pytest.fixture
def worker_topology() -> Topology:
    env = settings(ringback_fault_exit_after_sending="first_sms", ringback_tick_interval_s=0.5)
    return build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))


# ------------------------------------------------------------------ worker
def test_the_worker_app_takes_its_settings(tmp_path):
    env = settings(
        ringback_processing_guarantee="exactly_once",
        ringback_session_timeout_s=6,
        ringback_worker_web_port=7001,
        ringback_state_dir=tmp_path,
    )
    app = make_app(env)
    assert app.conf.id == "x-streams" and str(app.conf.store) == "memory:"
    assert app.conf.processing_guarantee.value == "exactly_once"
    assert app.conf.broker_session_timeout == 6 and app.conf.web_port == 7001
    assert app.conf.table_standby_replicas == 1 and app.conf.topic_partitions == 4
    assert app.conf.datadir == tmp_path / "streams"
    assert not app.agents and not app.tables  # nothing declared until build_topology


def test_the_worker_reads_every_co_partitioned_input_in_one_agent(worker_topology):
    app = worker_topology.app
    (agent,) = app.agents.values()
    assert agent.name == "ringback.worker.topology.process"
    assert set(agent.channel.topics) == CO_PARTITIONED_INPUTS | {"x.message-status", "x.stream-ticks"}
    assert agent.channel is worker_topology.inputs and worker_topology.inputs.partitions == 4
    assert set(worker_topology.input_names.values()) == {
        "call_event",
        "patient",
        "appointment",
        "flag",
        "task_update",
        "message_status",
        "tick",
    }


def test_the_worker_keeps_one_state_table_with_a_co_partitioned_changelog(worker_topology):
    app = worker_topology.app
    assert list(app.tables) == ["state"]
    changelog = app.tables["state"].changelog_topic
    assert changelog.get_topic_name() == "x-streams-state-changelog"
    assert changelog.partitions == 4 and changelog.compacting
    assert worker_topology.internal_topics == [changelog]


def test_the_worker_sends_actions_outcomes_and_dead_letters(worker_topology):
    t = worker_topology
    assert (t.actions.get_topic_name(), t.actions.partitions) == ("x.actions", 4)
    assert (t.outcomes.get_topic_name(), t.outcomes.partitions) == ("x.outcomes", 4)
    assert (t.dead_letters.get_topic_name(), t.dead_letters.partitions) == ("x.dead-letters", 1)
    assert (t.ticks.get_topic_name(), t.ticks.partitions) == ("x.stream-ticks", 4)


def test_the_worker_ticks_measures_guards_and_takes_its_fault_hook(worker_topology):
    t = worker_topology
    assert timers(t.app) == {"send_ticks", "measure_overdue", "_refresh_highwaters", "watch"}
    assert t.gap_guard is not None and t.gap_guard.enabled and t.gap_guard.app_name == "streams"
    assert set(t.gap_guard.labels) == CO_PARTITIONED_INPUTS | {"x.message-status"}  # not the ticks
    assert t.gap_guard.compacted == {"x.patients", "x.appointments", "x.flags"}
    assert t.exit_after_sending == "first_sms"


def test_the_check_covers_every_co_partitioned_input_output_and_the_state_changelog(worker_topology):
    env = worker_topology.settings
    names = admin.copartitioned_topics(env, [t.get_topic_name() for t in worker_topology.internal_topics])
    for suffix in (
        "call-events",
        "patients",
        "appointments",
        "flags",
        "task-updates",
        "actions",
        "outcomes",
        "message-status",
        "stream-ticks",
    ):
        assert f"x.{suffix}" in names
    assert "x-streams-state-changelog" in names and "x.practice-config" not in names
    assert admin.mismatches({"x.flags": 2, "x.patients": 8, "other": 1}, 8, names) == ["x.flags: 2 partitions"]


def test_a_topology_can_be_built_again_in_the_same_process():
    env = settings()
    first = build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))
    second = build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))
    assert first.app is not second.app and first.state is not second.state


# ------------------------------------------------------------------ sinks
