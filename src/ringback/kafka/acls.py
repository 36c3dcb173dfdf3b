"""The Kafka ACLs each kind of process needs, derived from the topic declarations.

On a secured cluster every kind of process (`topics.PROCESSES`: gateway, worker, sinks,
console, the sources, report, admin) connects with a principal of its own, and that
principal may do only what the process does:

* READ (+ DESCRIBE) on the topics whose `readers` name the process, WRITE (+ DESCRIBE) on
  those whose `writers` name it (`kafka/topics.py`); never a topic by hand here;
* DESCRIBE on every topic of the namespace (prefix `<ns>.`): names and partition counts
  only, no records; every process checks at start that the topics exist
  (`admin.ensure_topics`) and the worker that they are co-partitioned;
* DESCRIBE on the consumer groups of the namespace (prefix `<ns>.`): the helper readers
  (practice directory, the console's caches, the worker's takeover scan, the report) assign
  partitions themselves and never commit, but librdkafka wants a `group.id` and looks its
  coordinator up (FindCoordinator needs DESCRIBE on the group); no READ, so none of them can
  join a group or commit offsets in it;
* the Faust apps (worker `<ns>-streams`, sinks `<ns>-sinks`): their consumer group, and
  everything on their own prefix `<ns>-<role>-` (table changelogs, tick topics, Faust's
  leader topic, the worker's transactional ids under exactly-once), as Kafka Streams
  applications get on their application id;
* admin (`ringback config apply`): creates the topics of the namespace and writes the practices.

`ringback kafka acls` prints them, `--apply` creates them through the admin API.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ringback.config.settings import Settings
from ringback.kafka import topics

# The Faust application role of a process kind (`kafka/faust_app.py`: app id `<ns>-<role>`).
FAUST_ROLES = {topics.WORKER: "streams", topics.SINKS: "sinks"}
DEFAULT_PRINCIPAL = "User:{namespace}-{process}"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: `principal` may do `operation` on the resource."""

    principal: str
    resource: str  # TOPIC, GROUP, TRANSACTIONAL_ID
    pattern: str  # LITERAL or PREFIXED
    name: str
    operation: str  # READ, WRITE, CREATE, DESCRIBE, DESCRIBE_CONFIGS

    def line(self) -> str:
        return f"{self.principal}\tALLOW\t{self.operation}\t{self.resource}\t{self.pattern}\t{self.name}"


def principal_of(process: str, env: Settings, template: str = DEFAULT_PRINCIPAL) -> str:
    return template.format(namespace=env.ringback_namespace, process=process)


def acls_for(process: str, env: Settings, principal: str | None = None, internal: Iterable[str] = ()) -> list[Acl]:
    """Every ACL the process kind needs, sorted, no duplicates. `internal`: the topics its Faust
    app creates itself (`internal_topics` of the built topology), for those outside its prefix."""
    if process not in topics.PROCESSES:
        raise ValueError(f"unknown process kind {process!r}: one of {', '.join(topics.PROCESSES)}")
    who = principal or principal_of(process, env)
    ns = env.ringback_namespace
    rules: set[Acl] = {
        Acl(who, "TOPIC", "PREFIXED", f"{ns}.", "DESCRIBE"),
        Acl(who, "GROUP", "PREFIXED", f"{ns}.", "DESCRIBE"),  # the helper readers' groups: never joined
    }
    for spec in topics.ALL:
        name = topics.topic_name(spec, env)
        if process in spec.readers:
            rules.add(Acl(who, "TOPIC", "LITERAL", name, "READ"))
        if process in spec.writers:
            rules.add(Acl(who, "TOPIC", "LITERAL", name, "WRITE"))
    role = FAUST_ROLES.get(process)
    if role:
        app_id = f"{ns}-{role}"
        rules.add(Acl(who, "GROUP", "LITERAL", app_id, "READ"))
        for op in ("READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"):
            rules.add(Acl(who, "TOPIC", "PREFIXED", f"{app_id}-", op))
            rules.update(Acl(who, "TOPIC", "LITERAL", name, op) for name in internal if not name.startswith(app_id))
        for op in ("WRITE", "DESCRIBE"):
            rules.add(Acl(who, "TRANSACTIONAL_ID", "PREFIXED", f"{app_id}-", op))
    if process == topics.ADMIN:
        for op in ("CREATE", "DESCRIBE_CONFIGS"):
            rules.add(Acl(who, "TOPIC", "PREFIXED", f"{ns}.", op))
    return sorted(rules)


def all_acls(
    env: Settings,
    processes: Iterable[str] = topics.PROCESSES,
    template: str = DEFAULT_PRINCIPAL,
    internal: dict[str, list[str]] | None = None,
) -> list[Acl]:
    internal = internal or {}
    return [acl for p in processes for acl in acls_for(p, env, principal_of(p, env, template), internal.get(p, ()))]


def bindings(acls: Iterable[Acl]) -> list[Any]:
    """confluent-kafka AclBinding objects of these rules (any host)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    return [
        AclBinding(
            ResourceType[a.resource],
            a.name,
            ResourcePatternType[a.pattern],
            a.principal,
            "*",
            AclOperation[a.operation],
            AclPermissionType.ALLOW,
        )
        for a in acls
    ]


def apply(admin_client: Any, acls: list[Acl], timeout: float = 30.0) -> int:
    """Create the rules (creating one that exists changes nothing); raise on the first refusal."""
    futures = admin_client.create_acls(bindings(acls), request_timeout=timeout)
    for future in futures.values():
        future.result()
    return len(acls)
