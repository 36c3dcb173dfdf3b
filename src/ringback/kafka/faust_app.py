"""The settings every ringback Faust application shares (the stream workers, the sinks).

    app = faust_app(env, "streams", store=..., processing_guarantee=..., ...)

gives the app `<namespace>-<role>` (its consumer group and topic prefix), state under
`<RINGBACK_STATE_DIR>/<role>`, topics declared with `RINGBACK_PARTITIONS` partitions and
`RINGBACK_REPLICATION_FACTOR` replicas (default 1: a single broker; 3 on a cluster of
three or more), the web server on every interface, raw keys, and new consumer groups
reading from the earliest offset, and table recovery that wipes and restores a local
store partition out of step with its changelog (kafka/state_healing.py). The caller adds
what differs (store, guarantee, timeouts, ports, commit cadence, standbys).
"""

from __future__ import annotations

from typing import Any

import faust

from ringback.config.settings import Settings
from ringback.kafka.connection import faust_broker
from ringback.kafka.state_healing import HealingTableManager


def faust_app(env: Settings, role: str, **settings: Any) -> faust.App:
    return faust.App(
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
        **settings,
    )
