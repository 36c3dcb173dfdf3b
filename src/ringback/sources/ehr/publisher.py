"""From EHR facts to keyed records and tombstones on the patient / appointment / flag topics.

The keys (the stream app joins on them):

* patients:      `practice_id|phone`                    partition = partition_for(`practice_id|phone`)
* appointments:  `practice_id|phone|appointment_id`     partition = partition_for(`practice_id|phone`)
* flags:         `practice_id|phone|flag_id`            partition = partition_for(`practice_id|phone`)

so every record of a phone sits in the partition of the calls from that phone.

A record's keys depend on the patient's *current* phones, so the projector keeps,
per practice, which phones each patient has and which keys each appointment and
flag was published under (`EhrState`, a JSON file in `RINGBACK_STATE_DIR/ehr/`).
With it, a phone that leaves a patient, an inactive or deleted patient, a cancelled
appointment or an inactive flag becomes tombstones for exactly the keys that were
published. A phone shared by several patients (a parent's phone on children's
records) is published for one of them: living before deceased, then the smallest
patient id; it is tombstoned only when no active patient has it any more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ringback.config.settings import Settings
from ringback.kafka import topics
from ringback.kafka.connection import client_config
from ringback.kafka.producer import AckedProducer
from ringback.observability.metrics import DEAD_LETTERS
from ringback.schemas import codec

log = logging.getLogger(__name__)

STATE_VERSION = 1
SEND_CHUNK = 1000
# The `source` of the EHR dead letters is `<origin>:<what>` (fhir:Patient, fhir-ndjson:ndjson, ...);
# the same string labels `ringback_dead_letters_total{source}`, bounded to these values.
DEAD_LETTER_ORIGINS = ("fhir", "fhir-ndjson")
DEAD_LETTER_KINDS = ("Patient", "Appointment", "Flag", "ndjson")
DEAD_LETTER_OTHER = "ehr.other"


def dead_letter_label(source: str) -> str:
    """The `source` label of a dead letter: the record's source when it is one of the
    bounded `<origin>:<kind>` values, else `ehr.other` (a label never grows with the data)."""
    origin, _, kind = source.partition(":")
    return source if origin in DEAD_LETTER_ORIGINS and kind in DEAD_LETTER_KINDS else DEAD_LETTER_OTHER


# ---------------------------------------------------------------------------------- facts
@dataclass
class PatientFacts:
    patient_id: str
    active: bool
    phones: list[str]  # E.164, in telecom order, without duplicates
    display_name: str | None = None
    deceased: bool = False
    assigned_provider: str | None = None
    updated_at: int = 0
    language: str | None = None  # preferred, lower-case BCP 47 primary tag ("es"); None: not recorded
    rejected: list[str] = field(default_factory=list)  # reasons, one per phone that did not parse


@dataclass
class AppointmentFacts:
    appointment_id: str
    patient_id: str | None
    status: str
    start: int | None
    updated_at: int
    live: bool  # False: cancelled / noshow / entered-in-error / no start → tombstones


@dataclass
class FlagFacts:
    flag_id: str
    patient_id: str | None
    status: str
    code: str
    display: str | None
    priority: str | None
    callback_requested: bool
    updated_at: int
    live: bool  # False: inactive / entered-in-error / period ended → tombstones


@dataclass(frozen=True)
class Op:
    """One record to produce: `value` None is a tombstone."""

    spec: topics.TopicSpec
    key: bytes
    phone: str  # decides the partition: partition_for(join_key(practice_id, phone))
    schema: str
    value: dict | None


# ---------------------------------------------------------------------------------- state
class StateStore:
    """The projector's memory, one JSON file per practice, replaced atomically (0600: it
    holds what the patient topic holds, names included)."""

    def __init__(self, env: Settings, practice_id: str) -> None:
        self.path = Path(env.ringback_state_dir) / "ehr" / f"{practice_id}.json"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """One EHR process per practice at a time (two would overwrite each other's state)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another `ringback ehr` process holds {self.path.with_suffix('.lock')}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def load(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        if data.get("version") != STATE_VERSION:
            raise RuntimeError(f"{self.path}: state version {data.get('version')} is not {STATE_VERSION}")
        return data

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps(state, separators=(",", ":")).encode()  # dumps: the C encoder, ~20x json.dump
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


_SPECS = {spec.suffix: spec for spec in (topics.PATIENTS, topics.APPOINTMENTS, topics.FLAGS)}


def op_to_json(op: Op) -> dict:
    return {"topic": op.spec.suffix, "key": op.key.decode(), "phone": op.phone, "schema": op.schema, "value": op.value}


def op_from_json(data: dict) -> Op:
    return Op(_SPECS[data["topic"]], data["key"].encode(), data["phone"], data["schema"], data.get("value"))


def empty_state(practice_id: str) -> dict:
    return {
        "version": STATE_VERSION,
        "practice_id": practice_id,
        "cursor": {},
        "patients": {},
        "appointments": {},
        "flags": {},
        "pending_tombstones": [],
    }


def rebuild_state(env: Settings, practice_id: str, timeout: float = 120.0) -> dict:
    """The state, read back from the compacted topics (when the state file is lost): who has
    which phone, and under which keys each appointment and flag is published. The cursor is
    unknown, so the next sync should be a full one (it also sweeps what the EHR deleted)."""
    from confluent_kafka import Consumer, TopicPartition

    state = empty_state(practice_id)
    prefix = f"{practice_id}|".encode()
    consumer = Consumer(
        {
            **client_config(env),  # the brokers, TLS and SASL
            "group.id": f"{env.ringback_namespace}.ehr-state-rebuild",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        for spec, schema in (
            (topics.PATIENTS, "patient"),
            (topics.APPOINTMENTS, "appointment"),
            (topics.FLAGS, "flag"),
        ):
            name = topics.topic_name(spec, env)
            meta = consumer.list_topics(name, timeout=30).topics.get(name)
            if meta is None or meta.error is not None:
                continue
            ends = {}
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=30)
                if high > low:
                    ends[p] = high
            latest: dict[bytes, dict | None] = {}
            if ends:
                consumer.assign([TopicPartition(name, p, 0) for p in ends])
                give_up = time.monotonic() + timeout
                while ends:
                    if time.monotonic() > give_up:
                        raise RuntimeError(f"could not read {name} to its end within {timeout:.0f}s")
                    msg = consumer.poll(1.0)
                    if msg is None or msg.error() is not None:
                        continue
                    key, raw, offset, partition = msg.key(), msg.value(), msg.offset(), msg.partition()
                    if key and key.startswith(prefix):
                        latest[key] = codec.decode(schema, raw) if raw is not None else None
                    if offset is not None and partition is not None and offset + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
                consumer.unassign()
            for value in latest.values():
                if value is None:
                    continue
                if schema == "patient":
                    entry = state["patients"].setdefault(
                        value["patient_id"], {"active": True, "phones": [], "record": _patient_base(value)}
                    )
                    entry["phones"].append(value["phone"])
                else:
                    kind, rid = ("appointments", "appointment_id") if schema == "appointment" else ("flags", "flag_id")
                    entry = state[kind].setdefault(
                        value[rid], {"patient_id": value["patient_id"], "keys": [], "record": _without_phone(value)}
                    )
                    if value.get("phone"):
                        entry["keys"].append(value["phone"])
        return state
    finally:
        consumer.close()


def _patient_base(record: dict) -> dict:
    base = {k: record[k] for k in ("patient_id", "display_name", "deceased", "assigned_provider", "updated_at")}
    return {**base, "language": record.get("language")}


def _without_phone(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("phone", "practice_id")}


# ---------------------------------------------------------------------------------- projector
class EhrProjector:
    """Pure: facts in, Ops out, state kept up to date (no I/O)."""

    def __init__(self, practice_id: str, state: dict | None = None) -> None:
        self.practice_id = practice_id
        self.state = state or empty_state(practice_id)
        if self.state.get("practice_id") != practice_id:
            raise ValueError("state belongs to another practice")
        self._by_phone: dict[str, set[str]] = {}
        for pid, entry in self.state["patients"].items():
            self._index(pid, entry)
        self._children: dict[str, dict[str, set[str]]] = {"appointments": {}, "flags": {}}
        for kind in ("appointments", "flags"):
            for rid, entry in self.state[kind].items():
                if entry.get("patient_id"):
                    self._children[kind].setdefault(entry["patient_id"], set()).add(rid)

    # -- helpers
    def _index(self, pid: str, entry: dict) -> None:
        if entry.get("active", True):
            for phone in entry["phones"]:
                self._by_phone.setdefault(phone, set()).add(pid)

    def _unindex(self, pid: str, entry: dict) -> None:
        for phone in entry["phones"]:
            holders = self._by_phone.get(phone)
            if holders is not None:
                holders.discard(pid)
                if not holders:
                    del self._by_phone[phone]

    def phones_of(self, pid: str | None) -> list[str]:
        entry = self.state["patients"].get(pid) if pid else None
        if not entry or not entry.get("active", True):
            return []
        return list(entry["phones"])

    def owner(self, phone: str) -> str | None:
        """Which patient a shared phone's record describes: living first, then smallest id."""
        holders = self._by_phone.get(phone)
        if not holders:
            return None
        return min(holders, key=lambda pid: (bool(self.state["patients"][pid]["record"].get("deceased")), pid))

    def _patient_op(self, phone: str) -> Op:
        key = topics.join_key(self.practice_id, phone)
        pid = self.owner(phone)
        if pid is None:
            return Op(topics.PATIENTS, key, phone, "patient", None)
        base = self.state["patients"][pid]["record"]
        return Op(topics.PATIENTS, key, phone, "patient", {"practice_id": self.practice_id, "phone": phone, **base})

    def _child_key(self, phone: str, rid: str) -> bytes:
        return f"{self.practice_id}|{phone}|{rid}".encode()

    def _rekey(self, kind: str, rid: str, extra_tombstones: Iterable[str] = ()) -> list[Op]:
        spec, schema = (topics.APPOINTMENTS, "appointment") if kind == "appointments" else (topics.FLAGS, "flag")
        entry = self.state[kind][rid]
        phones = self.phones_of(entry.get("patient_id"))
        record = entry.get("record")
        ops = []
        if record is not None:
            for phone in phones:
                ops.append(
                    Op(
                        spec,
                        self._child_key(phone, rid),
                        phone,
                        schema,
                        {"practice_id": self.practice_id, "phone": phone, **record},
                    )
                )
            desired = phones
        else:
            desired = []
        gone = [p for p in dict.fromkeys([*entry.get("keys", []), *extra_tombstones]) if p not in desired]
        ops += [Op(spec, self._child_key(p, rid), p, schema, None) for p in gone]
        entry["keys"] = desired
        return ops

    # -- patients
    def patient(self, facts: PatientFacts) -> list[Op]:
        pid = facts.patient_id
        old = self.state["patients"].get(pid)
        old_phones = self.phones_of(pid)
        if old is not None:
            self._unindex(pid, old)
        entry = {
            "active": facts.active,
            "phones": list(facts.phones),
            "record": {
                "patient_id": pid,
                "display_name": facts.display_name,
                "deceased": facts.deceased,
                "assigned_provider": facts.assigned_provider,
                "updated_at": facts.updated_at,
                "language": facts.language,
            },
        }
        self.state["patients"][pid] = entry
        self._index(pid, entry)
        new_phones = self.phones_of(pid)
        # Inactive: tombstones for every phone it lists too, in case they were published before
        # this state existed (a lost state file).
        affected = dict.fromkeys([*old_phones, *new_phones, *([] if facts.active else facts.phones)])
        ops = [self._patient_op(phone) for phone in affected]
        if new_phones != old_phones or old is None:  # the keys of its appointments and flags change
            for kind in ("appointments", "flags"):
                for rid in sorted(self._children[kind].get(pid, ())):
                    ops += self._rekey(kind, rid)
        return ops

    def patient_deleted(self, pid: str) -> list[Op]:
        entry = self.state["patients"].get(pid)
        if entry is None:
            return []
        ops = self.patient(
            PatientFacts(
                pid, active=False, phones=list(entry["phones"]), updated_at=entry["record"].get("updated_at", 0)
            )
        )
        self._unindex(pid, self.state["patients"].pop(pid))
        return ops

    def known_patient(self, pid: str | None) -> bool:
        return bool(pid) and pid in self.state["patients"]

    # -- appointments and flags
    def _child(self, kind: str, rid: str, pid: str | None, record: dict | None) -> list[Op]:
        old = self.state[kind].get(rid)
        extra: list[str] = []
        if old is not None and old.get("patient_id") != pid and old.get("patient_id"):
            self._children[kind].get(old["patient_id"], set()).discard(rid)
        if record is None:
            # Cancelled / inactive: also the keys its patient's phones would give, in case they
            # were published before this state existed.
            extra = self.phones_of(pid)
        entry = {"patient_id": pid, "keys": list(old.get("keys", [])) if old else [], "record": record}
        self.state[kind][rid] = entry
        if pid:
            self._children[kind].setdefault(pid, set()).add(rid)
        return self._rekey(kind, rid, extra)

    def appointment(self, facts: AppointmentFacts) -> list[Op]:
        record = None
        if facts.live and facts.start is not None:
            record = {
                "appointment_id": facts.appointment_id,
                "patient_id": facts.patient_id or "",
                "start": facts.start,
                "status": facts.status,
                "updated_at": facts.updated_at,
            }
        return self._child("appointments", facts.appointment_id, facts.patient_id, record)

    def flag(self, facts: FlagFacts) -> list[Op]:
        record = None
        if facts.live:
            record = {
                "flag_id": facts.flag_id,
                "patient_id": facts.patient_id or "",
                "code": facts.code,
                "display": facts.display,
                "priority": facts.priority,
                "status": facts.status,
                "callback_requested": facts.callback_requested,
                "updated_at": facts.updated_at,
            }
        return self._child("flags", facts.flag_id, facts.patient_id, record)

    def _child_deleted(self, kind: str, rid: str) -> list[Op]:
        entry = self.state[kind].get(rid)
        if entry is None:
            return []
        ops = self._child(kind, rid, entry.get("patient_id"), None)
        self.state[kind].pop(rid)
        if entry.get("patient_id"):
            self._children[kind].get(entry["patient_id"], set()).discard(rid)
        return ops

    def appointment_deleted(self, rid: str) -> list[Op]:
        return self._child_deleted("appointments", rid)

    def flag_deleted(self, rid: str) -> list[Op]:
        return self._child_deleted("flags", rid)

    def deleted(self, resource_type: str, rid: str) -> list[Op]:
        return {"Patient": self.patient_deleted, "Appointment": self.appointment_deleted, "Flag": self.flag_deleted}[
            resource_type
        ](rid)

    def ids(self, resource_type: str) -> set[str]:
        kind = {"Patient": "patients", "Appointment": "appointments", "Flag": "flags"}[resource_type]
        return set(self.state[kind])

    def waiting_for_patient(self, kind: str, rid: str) -> bool:
        entry = self.state[kind].get(rid)
        return bool(entry and entry.get("record") is not None and not entry["keys"])


# ---------------------------------------------------------------------------------- publisher
class EhrPublisher:
    """Produces Ops through the acknowledged producer, each in its caller's partition."""

    def __init__(self, env: Settings, producer: AckedProducer, practice_id: str) -> None:
        self.env = env
        self.producer = producer
        self.practice_id = practice_id
        self.dead_topic = topics.topic_name(topics.DEAD_LETTERS, env)

    def partition(self, op: Op) -> int:
        return topics.partition_for(
            topics.join_key(self.practice_id, op.phone), topics.partition_count(op.spec, self.env)
        )

    async def publish(self, ops: list[Op]) -> dict[str, int]:
        """Send every op (the last one per key), wait for all acknowledgements; counts by kind."""
        last: dict[tuple[str, bytes], Op] = {}
        for op in ops:
            last.pop((op.spec.suffix, op.key), None)  # keep the later op, at the later place
            last[(op.spec.suffix, op.key)] = op
        todo = list(last.values())
        counts: dict[str, int] = {}
        for i in range(0, len(todo), SEND_CHUNK):
            chunk = todo[i : i + SEND_CHUNK]
            await asyncio.gather(
                *(
                    self.producer.send(
                        topics.topic_name(op.spec, self.env),
                        op.key,
                        codec.encode(op.schema, op.value) if op.value is not None else None,
                        partition=self.partition(op),
                    )
                    for op in chunk
                )
            )
            for op in chunk:
                kind = f"{op.schema}_{'records' if op.value is not None else 'tombstones'}"
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    async def dead_letter(
        self, source: str, reason: str, raw: bytes, received_at: int, content_type: str = "application/fhir+json"
    ) -> None:
        record = {
            "source": source,
            "reason": reason,
            "raw": raw[: 256 * 1024],
            "content_type": content_type,
            "received_at": received_at,
            "practice_id": self.practice_id,
        }
        await self.producer.send(self.dead_topic, source.encode(), codec.encode("dead_letter", record))
        DEAD_LETTERS.labels(dead_letter_label(source)).inc()  # once acknowledged, as every process
