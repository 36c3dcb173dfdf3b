"""Checks a stream worker runs before it starts: refuse to run on mis-partitioned topics.

Joins are local reads only if the call-event topic, the patient/appointment/flag
topics, the other inputs and the state table's changelog all have the same partition
count (RINGBACK_PARTITIONS). `topics.ensure_topics` refuses a mismatch when it creates
topics; this check runs at every worker start, also over topics made by others
(an operator, an older deployment with another RINGBACK_PARTITIONS, Faust's changelog).
"""

from __future__ import annotations

from collections.abc import Mapping

from ringback.config.settings import Settings
from ringback.kafka import topics

TABLES = ("state",)


class CopartitioningError(RuntimeError):
    """Co-partitioned topics disagree on their partition count."""


def app_id(env: Settings) -> str:
    return f"{env.ringback_namespace}-streams"


def changelog_topics(env: Settings) -> list[str]:
    return [f"{app_id(env)}-{table}-changelog" for table in TABLES]


def copartitioned_topics(env: Settings) -> list[str]:
    return [topics.topic_name(s, env) for s in topics.ALL if s.co_partitioned] + changelog_topics(env)


def mismatches(counts: Mapping[str, int], wanted: int, names: list[str]) -> list[str]:
    """One line per existing topic of `names` whose partition count is not `wanted`."""
    return [f"{name}: {counts[name]} partitions" for name in names if name in counts and counts[name] != wanted]


def check_partitions(env: Settings, timeout: float = 30.0) -> None:
    """Raise CopartitioningError naming every co-partitioned topic with another count."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": env.kafka_bootstrap_servers})
    metadata = admin.list_topics(timeout=timeout).topics
    counts = {name: len(md.partitions) for name, md in metadata.items() if md.error is None}
    bad = mismatches(counts, env.ringback_partitions, copartitioned_topics(env))
    if bad:
        raise CopartitioningError(
            f"refusing to start: co-partitioned topics must all have RINGBACK_PARTITIONS="
            f"{env.ringback_partitions} partitions (a caller's call events, patient data, task updates and "
            f"state must share a partition), but "
            + "; ".join(bad)
            + ". Recreate them with the same count, or set RINGBACK_PARTITIONS to match."
        )
