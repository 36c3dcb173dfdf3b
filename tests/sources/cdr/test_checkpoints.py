"""The CDR checkpoint topic: one compacted single-partition topic, a record per poller and file."""

from __future__ import annotations

from ringback.kafka import topics
from ringback.sources.cdr import checkpoints


def test_checkpoint_key_and_topic():
    assert checkpoints.checkpoint_key("maple-family", "Master.csv") == b"maple-family|Master.csv"
    assert topics.CDR_CHECKPOINTS.compacted and topics.CDR_CHECKPOINTS.partitions == 1
