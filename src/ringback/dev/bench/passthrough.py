"""The bare Faust pass-through agent of figure (a) (docs/benchmarks.md): consume → send, no logic.

Run by the benchmark as its own process (`python -m ringback.dev.bench.passthrough`),
with the same Faust settings that matter for speed as the stream worker
(worker/app.py: at_least_once, commit every 1,000 records or 1 s, raw bytes, the
same partition count; kafka/faust_app.py: at most 500 records a poll, records handed to
the agent inline, WARNING logs), reading the same call-event topic with its own group.

Environment: KAFKA_BOOTSTRAP_SERVERS, BENCH_APP_ID, BENCH_SOURCE, BENCH_SINK, BENCH_PARTITIONS.
"""

from __future__ import annotations

import os
import tempfile

import faust

from ringback.kafka.faust_app import App

app = App(
    os.environ.get("BENCH_APP_ID", "bench-passthrough"),
    broker=f"kafka://{os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '127.0.0.1:9092')}",
    store="memory://",
    datadir=tempfile.mkdtemp(prefix="bench-passthrough-"),
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "8")),
    topic_replication_factor=1,
    processing_guarantee="at_least_once",
    web_enabled=False,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    consumer_auto_offset_reset="earliest",
    key_serializer="raw",
    inline_handover=True,  # as the worker's (kafka/faust_app.py)
)
source = app.topic(
    os.environ.get("BENCH_SOURCE", "bench-in"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
sink = app.topic(
    os.environ.get("BENCH_SINK", "bench-out"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)


@app.agent(source)
async def passthrough(stream):
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value, partition=event.message.partition)


if __name__ == "__main__":
    worker = faust.Worker(app, loglevel="WARNING")
    # As the worker (cli.py): no terminal spinner, which would lower the root logger to DEBUG.
    worker.spinner = None
    worker.execute_from_commandline()
