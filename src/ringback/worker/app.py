"""The Faust application and its settings, nothing else.

Names come from the environment (`RINGBACK_NAMESPACE`) so that test runs and
environments never share topics or consumer groups. The topology lives in
`streams/topology.py`; the business rules in `streams/rules/`.
"""

from __future__ import annotations

import os

from ringback.clock import Clock
from ringback.config.settings import Settings
from ringback.kafka.faust_app import faust_app
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas.faust_codec import register_faust_codecs

env = Settings()
register_faust_codecs()

app = faust_app(
    env,
    "streams",  # shared settings (names, broker, partitions, replication): ringback/faust_app.py
    # RocksDB (rocksdict) in production; tests and the demo may use memory://.
    store=os.environ.get("RINGBACK_STORE", "rocksdb://"),
    # at_least_once + idempotent, deduplicated effects: decided by test, see docs/stream-app.md.
    processing_guarantee=os.environ.get("RINGBACK_PROCESSING_GUARANTEE", "at_least_once"),
    # How fast a dead worker's partitions move to a survivor (its pending gates fire there).
    broker_session_timeout=float(os.environ.get("RINGBACK_SESSION_TIMEOUT_S", "10")),
    broker_heartbeat_interval=float(os.environ.get("RINGBACK_HEARTBEAT_INTERVAL_S", "2")),
    # A standby copy of every table partition on another worker: takeover without a full replay.
    table_standby_replicas=1,
    web_enabled=os.environ.get("RINGBACK_WORKER_WEB", "1") == "1",
    web_port=int(os.environ.get("RINGBACK_WORKER_WEB_PORT", "6066")),
    broker_commit_every=1000,
    broker_commit_interval=1.0,
)

# Every practice's settings, read from the config topic (see ringback/practice_directory.py).
directory = PracticeDirectory()

# The clock the agents read; tests replace it.
clock = Clock()
