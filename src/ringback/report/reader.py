"""`ringback report`: read the outcome topic for the period, compute the KPIs
(`kpis.py`), print the table (`text.py`), optionally write JSON and the HTML page
(`html.py`)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ringback.kafka.connection import Connection, bootstrap_servers, client_config, librdkafka, verify
from ringback.report.kpis import ReportBuilder, ReportError, parse_time
from ringback.report.text import render_text

log = logging.getLogger(__name__)

# offsets_for_times seeks to the first record produced at or after `since` minus this:
# a record is produced after its missed call, but clocks of the phone systems and
# ours may disagree a little.
SEEK_MARGIN_MS = 3600 * 1000


# ---------------------------------------------------------------- reading the topic
@dataclass
class ReadStats:
    topic: str
    start: str
    partitions: int = 0
    records_read: int = 0
    undecodable: int = 0
    tombstones: int = 0
    missing_topic: bool = False

    def as_dict(self) -> dict:
        return {
            "topic": self.topic,
            "start": self.start,
            "partitions": self.partitions,
            "records_read": self.records_read,
            "undecodable": self.undecodable,
            "tombstones": self.tombstones,
            "missing_topic": self.missing_topic,
        }


def read_outcomes(
    bootstrap: Connection,
    topic: str,
    *,
    since_ms: int | None,
    stats: ReadStats,
    timeout_s: float = 120.0,
    group_prefix: str = "ringback",
) -> Iterator[dict]:
    """Every decodable record of `topic` from `since_ms` (minus SEEK_MARGIN_MS; the
    beginning when None) up to the end offsets seen at the start. Assigns
    partitions itself: joins no consumer group and commits nothing."""
    from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

    from ringback.schemas import codec

    consumer = Consumer(
        {
            **librdkafka(bootstrap),  # the brokers, TLS and SASL (kafka/connection.py)
            # Never used to commit (assign(), enable.auto.commit off); librdkafka wants one.
            "group.id": f"{group_prefix}.report-{uuid.uuid4().hex[:12]}",  # <ns>.: its ACLs (kafka/acls.py)
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "socket.connection.setup.timeout.ms": 5000,
            # librdkafka's own messages through our logging (JSON in containers), not raw to stderr.
            "logger": logging.getLogger("ringback.report.librdkafka"),
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(timeout_s, 15))
        except KafkaException as exc:
            raise ReportError(f"cannot reach the Kafka broker at {bootstrap_servers(bootstrap)}: {exc}") from None
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            stats.missing_topic = True
            log.warning("outcome topic %s does not exist (yet): no cases", topic)
            return
        stats.partitions = len(info.partitions)
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        if since_ms is not None and starts:
            wanted = [TopicPartition(topic, tp.partition, max(0, since_ms - SEEK_MARGIN_MS)) for tp in starts]
            found = consumer.offsets_for_times(wanted, timeout=10)
            starts = [
                TopicPartition(topic, tp.partition, tp.offset)
                for tp in found
                if tp.offset not in (OFFSET_END, -1) and tp.offset < ends[tp.partition]
            ]
        remaining = {tp.partition: ends[tp.partition] for tp in starts}
        log.info("reading %s: %d partitions, %d to read", topic, stats.partitions, len(remaining))
        if not remaining:
            return
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise ReportError(
                    f"could not read {topic} to its end within {timeout_s:.0f} s ({len(remaining)} partitions left)"
                )
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                p, offset = msg.partition(), msg.offset()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if p is not None:
                            remaining.pop(p, None)
                    elif err.fatal():
                        raise ReportError(f"reading {topic}: {err}")
                    else:
                        log.warning("reading %s: %s", topic, err)
                    continue
                if p is None or offset is None or p not in remaining or offset >= remaining[p]:
                    continue  # produced after we started: the next report has it
                if offset + 1 >= remaining[p]:
                    remaining.pop(p)
                stats.records_read += 1
                value = msg.value()
                if value is None:
                    stats.tombstones += 1
                    continue
                try:
                    record = codec.decode("outcome", value)
                except ValueError as exc:
                    stats.undecodable += 1
                    log.warning("skipping an undecodable outcome record at %s[%d]@%d: %s", topic, p, offset, exc)
                    continue
                yield record
    finally:
        consumer.close()


# ---------------------------------------------------------------- the command
def run(
    env,
    *,
    since: str | None,
    until: str | None,
    practice_id: str | None,
    html_path: Path | None,
    json_path: Path | None,
    as_of: str | None = None,
    timeout_s: float = 120.0,
    out=None,
) -> dict:
    """`ringback report`: read, compute, print; write JSON/HTML when asked. Returns the report."""
    import sys

    from ringback.clock import Clock
    from ringback.kafka import topics

    out = out or sys.stdout
    since_ms = parse_time(since) if since else None
    until_ms = parse_time(until) if until else None
    as_of_ms = parse_time(as_of) if as_of else Clock().now_ms()
    builder = ReportBuilder(since_ms=since_ms, until_ms=until_ms, as_of_ms=as_of_ms, practice_id=practice_id)
    topic = topics.topic_name(topics.OUTCOMES, env)
    stats = ReadStats(topic=topic, start="timestamp" if since_ms is not None else "beginning")
    verify(env)  # refused credentials or CA: stop here, naming the setting
    for record in read_outcomes(
        client_config(env),
        topic,
        since_ms=since_ms,
        stats=stats,
        timeout_s=timeout_s,
        group_prefix=env.ringback_namespace,
    ):
        builder.add(record)
    report = builder.result()
    report["source"] = stats.as_dict()
    log.info("report: %d records read, %d cases in the period", stats.records_read, report["total"]["cases"])
    out.write(render_text(report))
    if stats.undecodable:
        out.write(f"\n{stats.undecodable} undecodable outcome records were skipped (see the log).\n")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        out.write(f"JSON written to {json_path}\n")
    if html_path is not None:
        from ringback.report.html import render_html

        html_path.write_text(render_html(report), encoding="utf-8")
        out.write(f"HTML written to {html_path}\n")
    return report
