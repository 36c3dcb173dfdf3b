"""A conversation per caller and practice: what the caller and the practice said and did, in order.

Built from the topics, as `TaskCache` builds the tasks (every partition, from the start,
followed in a background thread; no consumer group, no table):

    call-events     a missed call (MISSED / VOICEMAIL), a voicemail transcript, an inbound SMS
    actions         an SMS the practice sent (the workflow's or a staff reply, `params.sent_by`),
                    and the case's staff steps (task created, staff notified, manager alerted)
    outcomes        what became of each SMS (ACTION: SENT, DEFERRED, SUPPRESSED ...) and the
                    case's states (CASE: responded, escalated, converted ...)
    message-status  Twilio's delivery receipts (delivered, undelivered, failed)

Records of different topics arrive in any order (a status before its SMS, a case state
before the action that names the caller), so they are joined when a conversation is read:
statuses by action id, case states by the case id the actions carry.

A conversation is addressed by an opaque id, an HMAC of `practice_id|caller` under the
console's session key (the same on every replica): URLs carry no phone number, and an id
cannot be computed from a number without the key. `conversation(practice, id)` answers
None for another practice's id, exactly as for none.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ringback.config.settings import Settings
from ringback.console.views import mask_phone, role_label
from ringback.kafka import topics
from ringback.kafka.topic_cache import FollowedTopic, TopicCacheReader
from ringback.schemas import codec

log = logging.getLogger(__name__)

_INTERNAL = ("seq", "signal", "action_id")  # kept for joins, not shown
MAX_ENTRIES = 300  # per conversation: the newest are kept (a page, not an archive)
STAFF_REPLY_STEP = "staff_reply"

# Delivery results, weakest first: a later receipt never moves an SMS back.
_RANK = {"DEFERRED": 1, "SENT": 2, "DELIVERED": 3, "UNDELIVERED": 3, "FAILED": 3, "SUPPRESSED": 3, "DEAD_LETTERED": 3}
_TWILIO_STATUS = {"delivered": "DELIVERED", "undelivered": "UNDELIVERED", "failed": "FAILED"}
_STEP_TEXT = {"NOTIFY_STAFF": "Staff notified", "ALERT_MANAGER": "Manager alerted"}
_CASE_TEXT = {
    "OPEN": "Case opened",
    "RESPONDED": "Case responded",
    "ESCALATED": "Case escalated",
    "CONVERTED": "Case converted",
    "ESCALATED_AND_CLOSED": "Case escalated and closed",
    "EXPIRED": "Case expired",
    "SUPPRESSED": "Case suppressed",
}


@dataclass
class _Conversation:
    practice_id: str
    caller: str
    entries: dict[str, dict] = field(default_factory=dict)  # entry id -> entry
    cases: dict[str, int] = field(default_factory=dict)  # case id -> when its latest action was made
    scenario: str | None = None  # of the latest case


class Conversations(FollowedTopic):
    """Every caller's conversation, kept current from four topics."""

    group = "conversations"

    def __init__(self, env: Settings, key: bytes, on_change: Callable[[str], None] = lambda practice_id: None) -> None:
        self.env = env
        self._key = key
        self.on_change = on_change
        self._lock = threading.Lock()
        self._seq = 0
        self._convs: dict[tuple[str, str], _Conversation] = {}  # (practice, caller)
        self._by_id: dict[tuple[str, str], str] = {}  # (practice, conversation id) -> caller
        self._by_practice: dict[str, set[str]] = defaultdict(set)
        self._status: dict[str, dict] = {}  # action id -> {"result", "reason", "at"}
        self._sms_practice: dict[str, str] = {}  # SMS action id -> practice (whom a status concerns)
        self._case_owner: dict[str, tuple[str, str]] = {}  # case id -> (practice, caller)
        self._case_steps: dict[str, dict[str, dict]] = defaultdict(dict)  # case id -> outcome id -> entry
        name = lambda spec: topics.topic_name(spec, env)  # noqa: E731 (four lines below read better)
        self._handlers: dict[str, tuple[str, Callable[[bytes | None, dict], None]]] = {
            name(topics.CALL_EVENTS): ("call_event", lambda k, r: self.apply_call_event(r)),
            name(topics.ACTIONS): ("action_command", self.apply_action),
            name(topics.OUTCOMES): ("outcome", lambda k, r: self.apply_outcome(r)),
            name(topics.MESSAGE_STATUS): ("message_status", lambda k, r: self.apply_message_status(r)),
        }
        self._reader = TopicCacheReader("conversations", "the conversation topics", self._read, "conversations")

    # ------------------------------------------------------------------ ids
    def conversation_id(self, practice_id: str, caller: str) -> str:
        return hmac.new(self._key, f"conversation|{practice_id}|{caller}".encode(), hashlib.sha256).hexdigest()[:24]

    def caller(self, practice_id: str, conversation_id: str) -> str | None:
        with self._lock:
            return self._by_id.get((practice_id, conversation_id))

    # ------------------------------------------------------------------ reads
    def summaries(self, practice_id: str) -> list[dict]:
        """The practice's conversations, the latest activity first (no message text)."""
        out = []
        with self._lock:
            for caller in self._by_practice.get(practice_id, ()):
                entries = self._entries_locked(practice_id, caller)
                if not entries:
                    continue
                messages = [e for e in entries if e["kind"] in ("sms_in", "sms_out")]
                last = entries[-1]
                out.append(
                    {
                        "conversation_id": self.conversation_id(practice_id, caller),
                        "caller": {"display": mask_phone(caller), "dial": None, "masked": True},
                        "last_at": last["at"],
                        "last_label": last["label"],
                        "entries": len(entries),
                        "awaiting_reply": bool(messages) and messages[-1]["kind"] == "sms_in",
                    }
                )
        return sorted(out, key=lambda c: -c["last_at"])

    def conversation(self, practice_id: str, conversation_id: str) -> dict | None:
        """One conversation of the practice, its entries in order; None for an unknown
        or another practice's id."""
        with self._lock:
            caller = self._by_id.get((practice_id, conversation_id))
            if caller is None:
                return None
            entries = self._entries_locked(practice_id, caller)
        return {
            "conversation_id": conversation_id,
            "caller": {"display": mask_phone(caller), "dial": None, "masked": True},
            "entries": [{k: v for k, v in e.items() if k not in _INTERNAL} for e in entries],
        }

    def latest_case(self, practice_id: str, caller: str) -> tuple[str | None, str | None]:
        """(case id, scenario) of the caller's latest case, if an action named one."""
        with self._lock:
            conv = self._convs.get((practice_id, caller))
            if conv is None or not conv.cases:
                return None, None
            return max(conv.cases, key=lambda c: conv.cases[c]), conv.scenario

    def _entries_locked(self, practice_id: str, caller: str) -> list[dict]:
        conv = self._convs.get((practice_id, caller))
        if conv is None:
            return []
        entries = []
        for entry in conv.entries.values():
            if entry["kind"] == "sms_out":
                status = self._status.get(entry["action_id"]) or {}
                entry = {**entry, "status": status.get("result") or "QUEUED", "status_reason": status.get("reason")}
            entries.append(entry)
        for case_id in conv.cases:
            entries.extend(self._case_steps.get(case_id, {}).values())
        entries.sort(key=lambda e: (e["at"], e["seq"]))
        return entries[-MAX_ENTRIES:]

    # ------------------------------------------------------------------ applying records
    def _conv(self, practice_id: str, caller: str) -> _Conversation:
        conv = self._convs.get((practice_id, caller))
        if conv is None:
            conv = self._convs[(practice_id, caller)] = _Conversation(practice_id, caller)
            self._by_id[(practice_id, self.conversation_id(practice_id, caller))] = caller
            self._by_practice[practice_id].add(caller)
        return conv

    def _put(self, conv: _Conversation, entry: dict) -> None:
        old = conv.entries.get(entry["entry_id"])
        self._seq += 1
        entry["seq"] = old["seq"] if old else self._seq
        conv.entries[entry["entry_id"]] = entry
        if len(conv.entries) > MAX_ENTRIES:
            oldest = min(conv.entries.values(), key=lambda e: (e["at"], e["seq"]))
            del conv.entries[oldest["entry_id"]]

    def apply_call_event(self, event: dict) -> None:
        kind, practice, caller = event["event_type"], event["practice_id"], event["caller"]
        if event.get("direction") != "INBOUND":
            return
        at = event["occurred_at"]
        if kind == "CALL":
            if event.get("outcome") not in ("MISSED", "VOICEMAIL"):
                return  # answered calls are not part of a conversation about a missed call
            # One entry per call, whichever of its signals came last (a leg's verdict over the parent's).
            entry_id = f"call:{event['provider_call_id']}"
            voicemail = event["outcome"] == "VOICEMAIL"
            label = "Missed call, voicemail left" if voicemail else "Missed call"
            entry = {"entry_id": entry_id, "kind": "missed_call", "at": at, "label": label, "text": None}
        elif kind == "TRANSCRIPTION":
            if not event.get("transcript"):
                return
            entry_id = f"voicemail:{event['event_id']}"
            entry = {"entry_id": entry_id, "kind": "voicemail", "at": at, "label": "Voicemail transcript"}
            entry["text"] = event["transcript"]
        elif kind == "SMS":
            entry_id = f"sms:{event['event_id']}"
            entry = {"entry_id": entry_id, "kind": "sms_in", "at": at, "label": "SMS from the caller"}
            entry["text"] = event.get("sms_body") or ""
        else:
            return
        with self._lock:
            conv = self._conv(practice, caller)
            old = conv.entries.get(entry_id)
            if old and kind == "CALL" and event.get("signal") == "parent" and old.get("signal") != "parent":
                return
            entry["signal"] = event.get("signal")
            self._put(conv, entry)
        self.on_change(practice)

    def apply_action(self, key: bytes | str | None, action: dict) -> None:
        practice, kind = action["practice_id"], action["kind"]
        caller = _caller_of(key, action)
        if not caller:
            return
        params = action.get("params") or {}
        at = action["created_at"]
        entry: dict = {"entry_id": f"action:{action['action_id']}", "at": at, "text": None}
        if kind == "SEND_SMS":
            sent_by = params.get("sent_by") or None
            entry.update(
                kind="sms_out",
                action_id=action["action_id"],
                label=f"SMS sent by {sent_by}" if sent_by else "Automatic SMS",
                text=action.get("body") or "",
                sent_by=sent_by,
            )
        elif kind == "CREATE_TASK":
            role = params.get("role") or action["recipient"]
            label = f"Task for {role_label(role)} ({action['priority']})"
            entry.update(kind="step", label=label, text=action["reason"])
        else:
            entry.update(kind="step", label=_STEP_TEXT.get(kind, kind), text=action["reason"])
        with self._lock:
            conv = self._conv(practice, caller)
            self._put(conv, entry)
            if kind == "SEND_SMS":
                self._sms_practice[action["action_id"]] = practice
            if action["step"] != STAFF_REPLY_STEP:  # a staff reply names the case it answers; it opens none
                if at >= max(conv.cases.values(), default=0):
                    conv.scenario = action["scenario"]
                conv.cases[action["case_id"]] = max(at, conv.cases.get(action["case_id"], 0))
            self._case_owner[action["case_id"]] = (practice, caller)
        self.on_change(practice)

    def apply_outcome(self, outcome: dict) -> None:
        if outcome.get("record_type") == "ACTION":
            if outcome.get("action_kind") == "SEND_SMS" and outcome.get("action_id") and outcome.get("action_result"):
                self._set_status(outcome["action_id"], outcome["action_result"], outcome.get("reason"), outcome["at"])
            return
        state = outcome["state"]
        detail = outcome.get("conversion_channel") if state == "CONVERTED" else outcome.get("reason")
        entry = {
            "entry_id": f"case:{outcome['outcome_id']}",
            "kind": "step",
            "at": outcome["at"],
            "label": _CASE_TEXT.get(state, state),
            "text": detail,
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            steps = self._case_steps[outcome["case_id"]]
            if entry["entry_id"] in steps:
                return
            steps[entry["entry_id"]] = entry
            owner = self._case_owner.get(outcome["case_id"])
        if owner:
            self.on_change(owner[0])

    def apply_message_status(self, status: dict) -> None:
        result = _TWILIO_STATUS.get(status["status"])
        if status.get("action_id") and result:
            reason = f"Twilio error {status['error_code']}" if status.get("error_code") else None
            self._set_status(status["action_id"], result, reason, status["received_at"])

    def _set_status(self, action_id: str, result: str, reason: str | None, at: int) -> None:
        with self._lock:
            old = self._status.get(action_id)
            if old and _RANK.get(old["result"], 0) > _RANK.get(result, 0):
                return
            self._status[action_id] = {"result": result, "reason": reason, "at": at}
            owner = self._sms_practice.get(action_id)
        if owner:
            self.on_change(owner)

    # ------------------------------------------------------------------ following the topics
    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """One record of one of the four topics (by its name in this namespace)."""
        handler = self._handlers.get(topic)
        if handler is None or value is None:
            return
        schema, apply = handler
        try:
            record = codec.decode(schema, value)
        except ValueError as exc:  # one bad record must not stop the console (a registry outage does: re-read)
            log.error("conversations: unreadable %s record skipped: %s", schema, exc)
            return
        apply(key, record)

    def _read(self, consumer: Consumer) -> None:
        """Read the four topics from the start (applying the records again is idempotent)."""
        names = list(self._handlers)
        ready, stop = self._reader.ready, self._reader.stop
        try:
            parts: list[TopicPartition] = []
            while not stop.is_set():
                listed = consumer.list_topics(timeout=5).topics
                found = [listed.get(n) for n in names]
                if all(md is not None and md.error is None and md.partitions for md in found):
                    parts = [TopicPartition(md.topic, p, 0) for md in found if md for p in md.partitions]
                    break
                ready.set()  # the topics are not there yet: nothing to show
                stop.wait(1.0)
            if stop.is_set():
                return
            ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            pending = {tp for tp, end in ends.items() if end > 0}
            consumer.assign(parts)
            if not pending:
                ready.set()
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error, offset = msg.error(), msg.offset()
                where = (msg.topic() or "", msg.partition() or 0)
                if error is not None or offset is None:
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where)
                        if not pending:
                            ready.set()
                    continue
                self.apply(where[0], msg.key(), msg.value())
                if offset + 1 >= ends.get(where, 0):
                    pending.discard(where)
                    if not pending:
                        ready.set()
        except KafkaException as exc:
            log.warning("conversations: topics not readable yet (%s); retrying", exc.args[0].name())


def _caller_of(key: bytes | str | None, action: dict) -> str | None:
    """The caller, from the record key `practice_id|caller`, else from the action itself."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    if key and "|" in key:
        return key.split("|", 1)[1]
    if action.get("kind") == "SEND_SMS":
        return action["recipient"]
    return (action.get("params") or {}).get("caller")
