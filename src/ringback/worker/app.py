"""The stream worker's Faust application: `make_app(settings)`, nothing else.

Names come from the settings (`RINGBACK_NAMESPACE`) so that test runs and environments
never share topics or consumer groups. What the app reads, keeps and sends is declared
by `worker/topology.py: build_topology`; the rules are in `workflow/`.
"""

from __future__ import annotations

import faust

from ringback.config.settings import Settings
from ringback.kafka.faust_app import faust_app
from ringback.schemas.faust_codec import register_faust_codecs


def make_app(settings: Settings) -> faust.App:
    """The worker's app (consumer group `<namespace>-streams`), no topic or agent yet."""
    register_faust_codecs()
    return faust_app(
        settings,
        "streams",  # shared settings (names, broker, partitions, replication): kafka/faust_app.py
        # RocksDB (rocksdict) in production; tests and the demo may use memory://.
        store=settings.ringback_store,
        # at_least_once + idempotent, deduplicated effects: decided by test, see docs/stream-app.md.
        processing_guarantee=settings.ringback_processing_guarantee,
        # How fast a dead worker's partitions move to a survivor (its pending gates fire there).
        broker_session_timeout=settings.ringback_session_timeout_s,
        broker_heartbeat_interval=settings.ringback_heartbeat_interval_s,
        # A standby copy of every table partition on another worker: takeover without a full replay.
        table_standby_replicas=1,
        web_enabled=settings.ringback_worker_web,
        web_port=settings.ringback_worker_web_port,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_linger=0.01,
        # Cheaper per record, for throughput (docs/stream-app.md). Not in the sinks: there it
        # raised the webhook -> SMS latency under load and saves nothing (BENCHMARKS.md).
        inline_handover=True,
    )
