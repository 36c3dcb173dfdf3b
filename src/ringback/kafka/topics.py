"""Every topic of the service, declared once: name, key, value schema, partitions.

Names start with the namespace (env `RINGBACK_NAMESPACE`, default "ringback") so
that test runs and environments never share topics. The call-event topic and the
patient/appointment/flag topics are co-partitioned: same key
(`practice_id|caller E.164`) and the same partition count, so a worker joins a
call with the patient tables by a local read. Creating them and checking their
partition counts: `kafka/admin.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringback.config.settings import Settings

# The kinds of process that connect to Kafka, each with a principal of its own on a secured
# cluster (`ringback kafka acls`): who writes and who reads each topic is declared below.
ADMIN = "admin"  # `ringback config apply`: creates the topics, writes the practices
GATEWAY = "gateway"  # `ringback ingest`: the webhooks
WORKER = "worker"  # `ringback worker`: the stream workers
SINKS = "sinks"  # `ringback sinks`
CONSOLE = "console"  # `ringback console`: the staff console
CDR = "cdr"  # `ringback cdr poll`
EHR = "ehr"  # `ringback ehr sync|export|import`
HL7 = "hl7"  # `ringback ehr hl7`
GVOICE = "gvoice"  # `ringback gvoice watch|import`
REPORT = "report"  # `ringback report`
PROCESSES = (ADMIN, GATEWAY, WORKER, SINKS, CONSOLE, CDR, EHR, HL7, GVOICE, REPORT)
SOURCES = (GATEWAY, CDR, EHR, HL7, GVOICE)
EVERYONE = PROCESSES  # the practices: every process reads them

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    key: str  # what the record key is, for readers of this file
    schema: str  # schemas/<schema>.avsc
    writers: tuple[str, ...]  # the process kinds that write it (their ACLs: `kafka/acls.py`)
    readers: tuple[str, ...]  # the process kinds that read it
    personal_data: str  # what personal data (PHI) a record holds, "" for none (docs/phi-inventory.md)
    compacted: bool = False
    co_partitioned: bool = False  # takes the call-event partition count
    partitions: int | None = None  # a fixed count, when not co-partitioned
    # Delete-policy retention: a fixed time, or None for RINGBACK_PHI_RETENTION_DAYS (the topics with
    # personal data) / RINGBACK_OUTCOME_RETENTION_DAYS (outcomes, read by BI). Unused when compacted.
    retention_ms: int | None = None


CALL_EVENTS = TopicSpec(
    "call-events",
    "practice_id|caller",
    "call_event",
    writers=SOURCES,
    # The CDR poller scans it to recover its checkpoint; the console shows the conversations.
    readers=(WORKER, SINKS, CDR, CONSOLE),
    personal_data="caller phone number, call times, SMS text, voicemail transcript and recording URL",
    co_partitioned=True,
)
PATIENTS = TopicSpec(
    "patients",
    "practice_id|phone",
    "patient",
    writers=(EHR, HL7),
    readers=(WORKER, EHR, HL7),  # the EHR sources rebuild what they published from it
    personal_data="phone number, EHR patient id, display name, deceased flag, assigned provider, language",
    compacted=True,
    co_partitioned=True,
)
# One record per appointment (or flag) and patient phone: the key carries the record id so
# compaction keeps every one, and the producer places it in partition_for(practice_id|phone),
# the partition of the caller it joins with.
APPOINTMENTS = TopicSpec(
    "appointments",
    "practice_id|phone|appointment_id",
    "appointment",
    writers=(EHR, HL7),
    readers=(WORKER, EHR, HL7),
    personal_data="phone number, EHR patient id, appointment time and status",
    compacted=True,
    co_partitioned=True,
)
FLAGS = TopicSpec(
    "flags",
    "practice_id|phone|flag_id",
    "flag",
    writers=(EHR, HL7),
    readers=(WORKER, EHR, HL7),
    personal_data="phone number, EHR patient id, clinical flag code and text (e.g. post-operative)",
    compacted=True,
    co_partitioned=True,
)
# Every process needs every practice: one partition, read whole at start.
PRACTICE_CONFIG = TopicSpec(
    "practice-config",
    "practice_id",
    "practice_config",
    writers=(ADMIN,),
    readers=EVERYONE,
    personal_data="",
    compacted=True,
    partitions=1,
)
ACTIONS = TopicSpec(
    "actions",
    "practice_id|caller",
    "action_command",
    writers=(WORKER, CONSOLE),  # the console: staff replies (SEND_SMS)
    # The worker: a worker taking a partition over reads back what was sent before a crash.
    readers=(WORKER, SINKS, CONSOLE),
    personal_data="caller phone number, SMS text (ours and, on reply tasks, the patient's), task reason",
    co_partitioned=True,
)
TASK_UPDATES = TopicSpec(
    "task-updates",
    "practice_id|caller",
    "task_update",
    writers=(CONSOLE,),
    readers=(WORKER, SINKS),
    personal_data="caller phone number (key), staff user name, call outcome",
    co_partitioned=True,
)
# Every callback task as the sinks keep it, one record per change: the changelog of the
# sinks' task table, read by the staff console. Key: the task_id (raw UTF-8); each task
# lies in the partition of its caller's key (practice_id|caller), where the sinks wrote it.
TASKS = TopicSpec(
    "tasks",
    "task_id",
    "task",
    writers=(SINKS,),
    readers=(SINKS, CONSOLE),
    personal_data="caller phone number, reason, details (patient name, urgency reason, the patient's SMS replies), "
    "staff user names",
    compacted=True,
    co_partitioned=True,
)
OUTCOMES = TopicSpec(
    "outcomes",
    "case_id",
    "outcome",
    writers=(WORKER, SINKS),
    readers=(WORKER, CONSOLE, REPORT),  # the worker: its takeover scan, as for the actions
    personal_data="",  # case ids are digests; no number, name or text
    co_partitioned=True,
)
DEAD_LETTERS = TopicSpec(
    "dead-letters",
    "source",
    "dead_letter",
    writers=(GATEWAY, WORKER, SINKS, CDR, EHR, HL7, GVOICE),
    readers=(),  # operators, with a principal of their own
    personal_data="the raw payload that could not be used: anything its source carries",
    partitions=1,
)
# Delivery receipts of the SMS we sent, for the sinks (Twilio status callbacks).
MESSAGE_STATUS = TopicSpec(
    "message-status",
    "practice_id|recipient",
    "message_status",
    writers=(GATEWAY,),
    readers=(WORKER, SINKS, CONSOLE),
    personal_data="recipient phone number, delivery status",
    co_partitioned=True,
)
# Where each CDR file poller has read up to (value: JSON, not Avro: it is private to the poller).
CDR_CHECKPOINTS = TopicSpec(
    "cdr-checkpoints",
    "poller_id|file",
    "-",
    writers=(CDR,),
    readers=(CDR,),
    personal_data="",
    compacted=True,
    partitions=1,
)
# The HL7 feed's record of the messages it answered (value: JSON {ack, at, type}, private to the
# listener): a message sent again with the same control id publishes nothing twice. Kept 7 days.
HL7_RECEIVED = TopicSpec(
    "hl7-received",
    "practice_id|sending_app|sending_facility|control_id",
    "-",
    writers=(HL7,),
    readers=(HL7,),
    personal_data="",
    partitions=1,
    retention_ms=7 * DAY_MS,
)
# Where each Google Voice mailbox watcher has read up to: UIDVALIDITY + last UID (JSON, private to it).
GVOICE_CHECKPOINTS = TopicSpec(
    "gvoice-checkpoints",
    "watcher_id|folder",
    "-",
    writers=(GVOICE,),
    readers=(GVOICE,),
    personal_data="",
    compacted=True,
    partitions=1,
)
# Private to the stream workers: the TICK each worker sends to its partitions so the agent
# that owns a partition fires its due gate timers (workflow/timers.py). Value: "-" (none).
TICKS = TopicSpec(
    "stream-ticks",
    "-",
    "-",
    writers=(WORKER,),
    readers=(WORKER,),
    personal_data="",
    co_partitioned=True,
    retention_ms=3_600_000,
)
# Console sessions signed out (value: JSON {practice_id, expires_at, revoked_at}, private to the
# console), read whole by every console replica. Each id is revoked once: kept 8 days, longer than
# the longest session (RINGBACK_CONSOLE_SESSION_S), not compacted.
CONSOLE_SESSIONS = TopicSpec(
    "console-sessions",
    "session_id",
    "-",
    writers=(CONSOLE,),
    readers=(CONSOLE,),
    personal_data="",
    partitions=1,
    retention_ms=8 * DAY_MS,
)

ALL = (
    CALL_EVENTS,
    PATIENTS,
    APPOINTMENTS,
    FLAGS,
    PRACTICE_CONFIG,
    ACTIONS,
    TASK_UPDATES,
    TASKS,
    OUTCOMES,
    DEAD_LETTERS,
    MESSAGE_STATUS,
    CDR_CHECKPOINTS,
    HL7_RECEIVED,
    GVOICE_CHECKPOINTS,
    TICKS,
    CONSOLE_SESSIONS,
)


def topic_name(spec: TopicSpec, env: Settings) -> str:
    return f"{env.ringback_namespace}.{spec.suffix}"


def retention_ms(spec: TopicSpec, env: Settings) -> int | None:
    """How long a delete-policy topic keeps its records (None: compacted, kept per key)."""
    if spec.compacted:
        return None
    if spec.retention_ms is not None:
        return spec.retention_ms
    days = env.ringback_phi_retention_days if spec.personal_data else env.ringback_outcome_retention_days
    return days * DAY_MS


def partition_count(spec: TopicSpec, env: Settings) -> int:
    return env.ringback_partitions if spec.co_partitioned else (spec.partitions or 1)


def join_key(practice_id: str, phone_e164: str) -> bytes:
    """The key that co-partitions calls with patient data."""
    return f"{practice_id}|{phone_e164}".encode()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in Java, aiokafka and
    confluent-kafka's `murmur2_random`) gives a key. Producers of records whose key
    differs from the join key (an appointment keyed by its id) pass this explicitly
    with the join key, so the record still lands with its caller's partition."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions
