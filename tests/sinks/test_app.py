"""The sinks' topology, built as `ringback sinks` builds it but on an app with memory stores
and no broker: what it reads, keeps and sends, under which names (topics, consumer groups,
tables, changelogs, agents)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ringback.clock import Clock, ManualClock
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.sinks import app as sinks_app
from ringback.sinks.clock import FileClock, sink_clock
from tests.support.offline_apps import settings, timers


@pytest.fixture
def sinks():
    env = settings(ringback_sinks_persist_timeout_s=7.5, ringback_sink_retry_attempts=3, ringback_gap_guard=False)
    return sinks_app.build_sinks(sinks_app.make_app(env), env, PracticeDirectory(), ManualClock(0))


def test_the_sinks_app_takes_its_settings():
    env = settings(ringback_sinks_store="memory://", ringback_store="rocksdb://", ringback_sinks_commit_every=10)
    app = sinks_app.make_app(env)
    assert app.conf.id == "x-sinks" and str(app.conf.store) == "memory:"
    assert app.conf.broker_commit_every == 10 and app.conf.broker_session_timeout == 10
    assert app.conf.table_standby_replicas == 1 and app.conf.web_port == 9102
    assert not app.agents and not app.tables


def test_the_sinks_keep_five_tables_with_co_partitioned_changelogs(sinks):
    app = sinks.app
    assert list(app.tables) == ["sent-log", "consent", "sms-history", "deferred", "tasks"]
    for name, table in app.tables.items():
        assert isinstance(table, sinks_app.DurableTable) and table.persist_timeout_s == 7.5
        private = f"x-sinks-{name}-changelog"
        # The tasks' changelog is the contract the console reads: declared, raw keys, Avro values.
        assert table.changelog_topic.get_topic_name() == ("x.tasks" if name == "tasks" else private)
        assert table.changelog_topic.partitions == 4 and table.changelog_topic.compacting
    tasks = app.tables["tasks"]
    assert (tasks.key_serializer, tasks.value_serializer) == ("raw", "avro_task")
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
