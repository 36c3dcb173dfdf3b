"""The settings every ringback Faust application shares (the stream workers, the sinks).

    app = faust_app(env, "streams", store=..., processing_guarantee=..., ...)

gives the app `<namespace>-<role>` (its consumer group and topic prefix), state under
`<RINGBACK_STATE_DIR>/<role>`, topics declared with `RINGBACK_PARTITIONS` partitions and
`RINGBACK_REPLICATION_FACTOR` replicas (default 1: a single broker; 3 on a cluster of
three or more), the web server on every interface, raw keys, and new consumer groups
reading from the earliest offset, and table recovery that wipes and restores a local
store partition out of step with its changelog (kafka/state_healing.py). The caller adds
what differs (store, guarantee, timeouts, ports, commit cadence, standbys).

With `RINGBACK_INSTANCE_ID` set the process is a static member of its group (Kafka's
`group.instance.id`, which aiokafka sends in JoinGroup): restarted under the same name after
a kill -9, it gets its partitions back at once, where a dynamic member waits until the
broker expires the dead member's session (at least the broker's
group.min.session.timeout.ms, 6 s by default). A static member sends no LeaveGroup on
SIGTERM either (aiokafka skips it), so a rolling restart moves no partition; a process
stopped for good hands its partitions on after the session timeout (docs/configuration.md).
"""

from __future__ import annotations

from typing import Any

import faust

from ringback.config.settings import Settings
from ringback.kafka.connection import faust_broker
from ringback.kafka.inline_handover import install as install_inline_handover
from ringback.kafka.state_healing import HealingTableManager

# At most this many records per fetch are handed to the stream buffers (4,096 each) by an app
# with the inline hand-over: a partition's fetching pauses at 80 % of a buffer, so a poll
# never overfills one and the hand-over stays inline (kafka/inline_handover.py). Faust's
# default (no limit) hands over a whole fetch, up to 1 MiB per partition, and every record
# past a full buffer waits in tasks.
MAX_POLL_RECORDS = 500


class App(faust.App):
    """A Faust app whose consumer, with `inline_handover=True`, hands fetched records over
    inline and polls at most MAX_POLL_RECORDS at a time (kafka/inline_handover.py)."""

    def __init__(self, *args: Any, inline_handover: bool = False, **options: Any) -> None:
        self.inline_handover = inline_handover
        if inline_handover:
            options.setdefault("broker_max_poll_records", MAX_POLL_RECORDS)
        super().__init__(*args, **options)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        if self.inline_handover:
            install_inline_handover(consumer)
        return consumer


def faust_app(env: Settings, role: str, *, inline_handover: bool = False, **settings: Any) -> faust.App:
    instance = env.ringback_instance_id
    if instance:
        # Faust's assignor checks the URL in the assignment the broker hands back against its
        # own canonical URL (by default host:web port). A static member restarted on another
        # port gets its old assignment back and fails that check at every restart: name the
        # member by its instance id (unique in the group, stable across restarts) instead.
        settings.setdefault("canonical_url", f"http://{instance}")
    return App(
        f"{env.ringback_namespace}-{role}",
        **faust_broker(env),  # the brokers, TLS and SASL (kafka/connection.py)
        datadir=str(env.ringback_state_dir / role),
        topic_partitions=env.ringback_partitions,
        topic_replication_factor=env.ringback_replication_factor,
        topic_allow_declare=True,
        web_bind="0.0.0.0",
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        # A store ahead of a changelog created anew is wiped and restored, not a crash loop.
        TableManager=HealingTableManager,
        consumer_group_instance_id=instance,
        inline_handover=inline_handover,
        **settings,
    )
