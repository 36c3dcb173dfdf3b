"""The CDR checkpoint topic, and the recovery scan that makes the poller exactly-once.

The compacted checkpoint topic holds, per poller and file (`checkpoint_key`), how far the
file has been read (`checkpoint_record`). Before a batch is produced an *intent* checkpoint
(`pending`) records the byte range being produced; every produced record carries a header
(`HEADER`: `poller|file|inode|offset`) naming its line; after every record is acknowledged
the checkpoint moves past the batch. A poller that restarts with an intent pending reads
back the few seconds of the call-event and dead-letter topics in which that batch can have
landed (`scan_produced`) and skips the lines it finds there.
"""

from __future__ import annotations

import json
import logging
import time

from confluent_kafka import Consumer, Message, TopicPartition

from ringback.config.settings import Settings
from ringback.kafka import latest_record, topics
from ringback.kafka.connection import client_config
from ringback.sources.cdr.files import Position

log = logging.getLogger(__name__)

HEADER = "ringback-cdr-line"
# How far around a pending batch's start the recovery scan reads the topics.
SCAN_BEFORE_MS = 5_000
SCAN_AFTER_MARGIN_MS = 10_000


def checkpoint_key(poller_id: str, file_name: str) -> bytes:
    return f"{poller_id}|{file_name}".encode()


def checkpoint_record(poller_id: str, file_name: str, pos: Position, pending: dict | None, now_ms: int) -> bytes:
    """The checkpoint value: where the poller is, and the batch being produced (`pending`:
    start, end, inode, started_at, attempt_at), if any."""
    value = {
        "poller_id": poller_id,
        "file": file_name,
        "inode": pos.inode,
        "offset": pos.offset,
        "head_len": pos.head_len,
        "head": pos.head,
        "pending": pending,
        "updated_at": now_ms,
    }
    return json.dumps(value).encode()


def position_of(checkpoint: dict) -> Position:
    return Position(
        int(checkpoint["inode"]),
        int(checkpoint["offset"]),
        int(checkpoint.get("head_len", 0)),
        checkpoint.get("head") or Position.head,
    )


def line_header(poller_id: str, file_name: str, inode: int, offset: int) -> dict[str, bytes]:
    """The header every record produced from a line carries, for the recovery scan."""
    return {HEADER: f"{poller_id}|{file_name}|{inode}|{offset}".encode()}


def load_checkpoint(env: Settings, poller_id: str, file_name: str, timeout: float = 30.0) -> dict | None:
    """The latest checkpoint of this poller and file: the compacted topic read to its end."""
    value = latest_record.read_latest(env, topics.CDR_CHECKPOINTS, checkpoint_key(poller_id, file_name), timeout)
    return json.loads(value) if value is not None else None


def scan_produced(
    env: Settings, poller_id: str, file_name: str, started_at_ms: int, until_ms: int, timeout: float = 60.0
) -> set[tuple[int, int]]:
    """(inode, offset) of every line of this poller and file that reached the call-event or
    dead-letter topic between `started_at - 5 s` and `until` (record timestamps): the lines of
    a batch that was being produced when the previous run died."""
    prefix = f"{poller_id}|{file_name}|"
    consumer = Consumer(
        {
            **client_config(env),  # the brokers, TLS and SASL
            "group.id": f"{env.ringback_namespace}.cdr-recovery-scan",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    found: set[tuple[int, int]] = set()
    try:
        parts = []
        for spec in (topics.CALL_EVENTS, topics.DEAD_LETTERS):
            name = topics.topic_name(spec, env)
            meta = consumer.list_topics(name, timeout=timeout).topics.get(name)
            if meta is None or meta.error is not None:
                continue
            parts += [TopicPartition(name, p, started_at_ms - SCAN_BEFORE_MS) for p in meta.partitions]
        if not parts:
            return found
        starts = consumer.offsets_for_times(parts, timeout=timeout)
        ends = {}
        assign = []
        for tp in starts:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
            if tp.offset < 0 or tp.offset >= high:
                continue  # nothing written at or after the batch start
            ends[(tp.topic, tp.partition)] = high
            assign.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        if not assign:
            return found
        consumer.assign(assign)
        stop_at = until_ms
        give_up = time.monotonic() + timeout
        while ends:
            if time.monotonic() > give_up:
                log.error(
                    "cdr recovery scan stopped after %.0fs with %d partitions unread: lines of the "
                    "interrupted batch not found may be produced a second time (same event ids)",
                    timeout,
                    len(ends),
                )
                break
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            where, offset = (msg.topic(), msg.partition()), msg.offset()
            if where not in ends or offset is None:
                continue
            line = _line_of(msg, prefix)
            if line is not None:
                found.add(line)
            if offset + 1 >= ends[where] or msg.timestamp()[1] > stop_at:
                del ends[where]  # later records of this partition are ignored
        return found
    finally:
        consumer.close()


def _line_of(msg: Message, prefix: str) -> tuple[int, int] | None:
    """(inode, offset) of the line a record was produced from, when this poller and file produced it."""
    headers = msg.headers() or []
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name == HEADER and isinstance(value, bytes):
            text = value.decode(errors="replace")
            if text.startswith(prefix):
                inode, offset = text[len(prefix) :].split("|")
                return int(inode), int(offset)
    return None
