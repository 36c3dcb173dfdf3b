"""The worker's and the sinks' topologies, built as `ringback worker` / `ringback sinks`
build them but on apps with memory stores and no broker: what each reads, keeps and
sends, under which names (topics, consumer groups, tables, changelogs, agents)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ringback.clock import Clock, ManualClock
from ringback.config.settings import Settings
from ringback.kafka import admin
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sinks import app as sinks_app
from ringback.sinks.clock import FileClock, sink_clock
from ringback.worker.app import make_app
from ringback.worker.topology import Topology, build_topology

CO_PARTITIONED_INPUTS = {"x.call-events", "x.patients", "x.appointments", "x.flags", "x.task-updates"}


def settings(**values) -> Settings:
    base = {
        "ringback_namespace": "x",
        "ringback_partitions": 4,
        "ringback_store": "memory://",
        "ringback_sinks_store": None,
        "kafka_bootstrap_servers": "127.0.0.1:1",  # never contacted
        "twilio_account_sid": None,
        "twilio_auth_token": None,
        "smtp_url": None,
    }
    return Settings(_env_file=None, **{**base, **values})


def timers(app) -> set[str]:
    return {task.__name__ for task in app._app_tasks}


@pytest.fixture
def worker_topology() -> Topology:
    env = settings(ringback_fault_exit_after_sending="first_sms", ringback_tick_interval_s=0.5)
    return build_topology(make_app(env), env, PracticeDirectory(), ManualClock(0))


@pytest.fixture
def sinks():
    env = settings(ringback_sinks_persist_timeout_s=7.5, ringback_sink_retry_attempts=3, ringback_gap_guard=False)
    return sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), ManualClock(0))


# ------------------------------------------------------------------ worker
def test_the_worker_app_takes_its_settings():
    env = settings(
        ringback_processing_guarantee="exactly_once", ringback_session_timeout_s=6, ringback_worker_web_port=7001
    )
    app = make_app(env)
    assert app.conf.id == "x-streams" and str(app.conf.store) == "memory:"
    assert app.conf.processing_guarantee.value == "exactly_once"
    assert app.conf.broker_session_timeout == 6 and app.conf.web_port == 7001
    assert app.conf.table_standby_replicas == 1 and app.conf.topic_partitions == 4
    assert app.conf.datadir == Path("var") / "streams"
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
def test_the_sinks_app_takes_its_settings():
    env = settings(ringback_sinks_store="memory://", ringback_store="rocksdb://", ringback_sinks_commit_every=10)
    app = sinks_app.make_app(env)
    assert app.conf.id == "x-sinks" and str(app.conf.store) == "memory:"
    assert app.conf.broker_commit_every == 10 and app.conf.broker_session_timeout == 30
    assert app.conf.table_standby_replicas == 1 and app.conf.web_port == 9102
    assert not app.agents and not app.tables


def test_the_sinks_keep_five_tables_with_co_partitioned_changelogs(sinks):
    app = sinks.app
    assert list(app.tables) == ["sent-log", "consent", "sms-history", "deferred", "tasks"]
    for name, table in app.tables.items():
        assert isinstance(table, sinks_app.DurableTable) and table.persist_timeout_s == 7.5
        assert table.changelog_topic.get_topic_name() == f"x-sinks-{name}-changelog"
        assert table.changelog_topic.partitions == 4 and table.changelog_topic.compacting
    assert set(sinks.executor.t.__dict__.values()) == set(app.tables.values())


def test_the_sinks_read_four_inputs_and_tick_their_own_topic(sinks):
    app = sinks.app
    channels = {agent.name.rsplit(".", 1)[1]: agent.channel.get_topic_name() for agent in app.agents.values()}
    assert channels == {
        "carry_out": "x.actions",
        "watch_consent": "x.call-events",
        "track_delivery": "x.message-status",
        "track_tasks": "x.task-updates",
        "fire_deferred": "x.sinks-ticks",
    }
    assert all(agent.channel.partitions == 4 for agent in app.agents.values())
    ticks = sinks.ticks_topic
    assert ticks.internal and ticks.deleting and ticks.retention == timedelta(hours=1)
    assert sinks.internal_topics == [t.changelog_topic for t in app.tables.values()] + [ticks]
    assert timers(app) == {"send_ticks", "_refresh_highwaters"}  # the gap guard's watch is off
    assert sinks.gap_guard is not None and not sinks.gap_guard.enabled
    assert set(sinks.gap_guard.labels) == {"x.actions", "x.call-events", "x.message-status", "x.task-updates"}


def test_the_sinks_executor_takes_its_channels_and_policy_from_the_settings(sinks):
    executor = sinks.executor
    assert executor.sms is None and executor.mailer is None  # no Twilio account, no SMTP_URL
    assert executor.slack.timeout_s == 10.0 and executor.policy.attempts == 3
    env = settings(
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="t",
        ringback_twilio_timeout_s=4,
        smtp_url="smtp://mail.example.org",
        ringback_smtp_from="rb@example.org",
        ringback_sinks_web=False,
    )
    built = sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), Clock())
    assert built.executor.sms is not None and built.executor.sms.timeout_s == 4
    assert built.executor.mailer.sender == "rb@example.org" and built.executor.mailer.hostname == "mail.example.org"
    assert "_refresh_highwaters" not in timers(built.app)  # no web server, no /metrics


def test_the_sinks_clock_is_the_wall_clock_unless_a_test_names_a_file(tmp_path):
    assert type(sink_clock(settings())) is Clock
    (tmp_path / "now").write_text("1700000000")
    clock = sink_clock(settings(ringback_sinks_clock_file=tmp_path / "now"))
    assert isinstance(clock, FileClock) and clock.now() == 1_700_000_000
