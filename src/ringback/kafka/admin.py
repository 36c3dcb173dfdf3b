"""Topic administration, in one place: create the topics, check their partition counts.

* `ensure_topics(settings, process)`: every topic of `kafka/topics.py`, with its partition count
  and cleanup policy (idempotent); every process that writes or reads runs it at start, and
  with its kind checks that its principal may read and write what it does (`check_access`).
* `ensure_internal_topics(settings, faust_topics)`: topics a Faust app declares itself
  (table changelogs, tick topics), created before the app starts. Faust would create
  them, but on a first start its consumer can subscribe before they exist: the assignor
  then skips them and the first table write fails with PartitionsMismatch until a
  metadata refresh, minutes later.
* `check_copartitioning(settings, changelogs)`: joins are local reads only if the
  call-event topic, the patient/appointment/flag topics, the other co-partitioned inputs
  and outputs and the state table's changelog all have RINGBACK_PARTITIONS partitions.
  `ensure_topics` refuses a mismatch when it creates topics; this check runs at every
  worker start, also over topics made by others (an operator, an older deployment with
  another RINGBACK_PARTITIONS, Faust's changelog).

Replicas: 1 on a cluster of fewer than 3 brokers, else 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ringback.config.settings import Settings
from ringback.kafka import connection, topics


class CopartitioningError(RuntimeError):
    """Co-partitioned topics disagree on their partition count."""


class TopicCreationRefused(connection.KafkaAccessError):
    """A topic is missing and this process's principal may not create it (least-privilege ACLs)."""


class TopicAccessRefused(connection.KafkaAccessError):
    """This process's principal may not read or write a topic its kind of process does (its ACLs)."""


def admin_client(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    connection.verify(settings)  # refused credentials or CA: stop here, naming the setting
    return AdminClient(connection.client_config(settings))


def _replication(metadata: Any) -> int:
    return 1 if len(metadata.brokers) < 3 else 3


def _create(admin: Any, wanted: list, timeout: float) -> None:
    """Create `wanted` (NewTopic), a topic someone else created meanwhile included."""
    from confluent_kafka import KafkaException

    if not wanted:
        return
    for name, fut in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() in ("TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"):
                raise TopicCreationRefused(
                    # Without DESCRIBE a principal cannot tell a topic that exists from a missing one.
                    f"topic {name} is missing (or this process's Kafka principal may not DESCRIBE it) and the "
                    "principal may not create it: run `ringback config apply` as the admin principal first, and "
                    "grant each kind of process its ACLs: `ringback kafka acls --apply` (docs/kafka-deployments.md)"
                ) from None
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise


def ensure_topics(settings: Settings, process: str | None = None, timeout: float = 30.0) -> None:
    """Create every topic with its partition count and cleanup policy (idempotent),
    and refuse to go on if an existing co-partitioned topic has another count. With the
    process kind (`topics.PROCESSES`), then check that its principal may read and write
    what the kind does (`check_access`)."""
    from confluent_kafka.admin import NewTopic

    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout)
    wanted = []
    for spec in topics.ALL:
        name = topics.topic_name(spec, settings)
        count = topics.partition_count(spec, settings)
        if name in metadata.topics:
            have = len(metadata.topics[name].partitions)
            if spec.co_partitioned and have != count:
                raise CopartitioningError(
                    f"topic {name} has {have} partitions but the co-partitioned topics need "
                    f"{count} (RINGBACK_PARTITIONS): joins would read the wrong partition"
                )
            continue
        wanted.append(
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=_replication(metadata),
                config=topic_config(spec, settings),
            )
        )
    _create(admin, wanted, timeout)
    if process is not None:
        check_access(settings, process, admin, timeout)


def check_access(settings: Settings, process: str, admin: Any = None, timeout: float = 30.0) -> None:
    """Raise TopicAccessRefused naming every topic the process kind reads or writes
    (`readers`/`writers` in kafka/topics.py) that its principal may not: a reader without READ
    would otherwise retry for ever, and a producer time out on each record. One DescribeTopics
    request with the authorized operations (KIP-430); a broker without an authorizer grants
    everything, one that does not say (None) is not checked."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AclOperation

    admin = admin or admin_client(settings)
    needed: dict[str, list[str]] = {}
    for spec in topics.ALL:
        ops = [op for op, who in (("READ", spec.readers), ("WRITE", spec.writers)) if process in who]
        if ops:
            needed[topics.topic_name(spec, settings)] = ops
    described = admin.describe_topics(
        TopicCollection(list(needed)), include_authorized_operations=True, request_timeout=timeout
    )
    missing = []
    for name, future in described.items():
        try:
            allowed = future.result().authorized_operations
        except KafkaException as exc:  # not even DESCRIBE: nothing allowed; other errors are no answer
            allowed = [] if exc.args[0].name() == "TOPIC_AUTHORIZATION_FAILED" else None
        if allowed is None or AclOperation.ALL in allowed:
            continue
        missing += [f"{op} {name}" for op in needed[name] if AclOperation[op] not in allowed]
    if missing:
        raise TopicAccessRefused(
            f"this {process} process's Kafka principal may not {', '.join(missing)}: grant the ACLs of its kind "
            f"(`ringback kafka acls --process {process} --apply` as an admin principal, docs/kafka-deployments.md)"
        )


def topic_config(spec: topics.TopicSpec, settings: Settings) -> dict[str, str]:
    """The cleanup policy and retention a topic is created with, always explicit (docs/phi-inventory.md).
    A compacted topic drops a tombstoned key (a patient deleted in the EHR) within
    RINGBACK_PHI_RETENTION_DAYS and the tombstone itself a day later."""
    retention = topics.retention_ms(spec, settings)
    if retention is not None:
        return {"cleanup.policy": "delete", "retention.ms": str(retention)}
    return {
        "cleanup.policy": "compact",
        "max.compaction.lag.ms": str(settings.ringback_phi_retention_days * topics.DAY_MS),
        "delete.retention.ms": str(topics.DAY_MS),
    }


def ensure_internal_topics(settings: Settings, faust_topics: Iterable[Any], timeout: float = 30.0) -> None:
    """Create the topics of these Faust topic objects (a table's `changelog_topic`, a
    topic declared with `internal=True`) as Faust would declare them: their partitions,
    compact/delete policy and retention. Existing ones are left alone (their partition
    counts: `check_copartitioning`)."""
    from confluent_kafka.admin import NewTopic
    from mode.utils.times import want_seconds

    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout)
    wanted = []
    for topic in faust_topics:
        name = topic.get_topic_name()
        if name in metadata.topics:
            continue
        policy = ",".join(p for p, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on)
        config = {str(k): str(v) for k, v in (topic.config or {}).items()}
        if policy:
            config["cleanup.policy"] = policy
        if topic.retention:
            config["retention.ms"] = str(int(want_seconds(topic.retention) * 1000))
        if topic.compacting and not topic.deleting:  # a deleted key goes as in the declared topics
            config.setdefault("max.compaction.lag.ms", str(settings.ringback_phi_retention_days * topics.DAY_MS))
            config.setdefault("delete.retention.ms", str(topics.DAY_MS))
        partitions = topic.partitions or settings.ringback_partitions
        wanted.append(
            NewTopic(name, num_partitions=partitions, replication_factor=_replication(metadata), config=config)
        )
    _create(admin, wanted, timeout)


def copartitioned_topics(settings: Settings, changelogs: Iterable[str]) -> list[str]:
    """The co-partitioned topics of `topics.py` and the given changelog topics."""
    return [topics.topic_name(s, settings) for s in topics.ALL if s.co_partitioned] + list(changelogs)


def mismatches(counts: Mapping[str, int], wanted: int, names: list[str]) -> list[str]:
    """One line per existing topic of `names` whose partition count is not `wanted`."""
    return [f"{name}: {counts[name]} partitions" for name in names if name in counts and counts[name] != wanted]


def check_copartitioning(settings: Settings, changelogs: Iterable[str], timeout: float = 30.0) -> None:
    """Raise CopartitioningError naming every co-partitioned topic (those of `topics.py`
    and the given changelogs) with another partition count than RINGBACK_PARTITIONS."""
    metadata = admin_client(settings).list_topics(timeout=timeout).topics
    counts = {name: len(md.partitions) for name, md in metadata.items() if md.error is None}
    bad = mismatches(counts, settings.ringback_partitions, copartitioned_topics(settings, changelogs))
    if bad:
        raise CopartitioningError(
            f"refusing to start: co-partitioned topics must all have RINGBACK_PARTITIONS="
            f"{settings.ringback_partitions} partitions (a caller's call events, patient data, task updates and "
            f"state must share a partition), but "
            + "; ".join(bad)
            + ". Recreate them with the same count, or set RINGBACK_PARTITIONS to match."
        )
