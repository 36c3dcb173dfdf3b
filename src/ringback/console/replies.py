"""A staff reply from the console: one SEND_SMS action, whatever the clicks and restarts.

The reply goes out as every patient SMS does: a SEND_SMS action on the actions topic
(key `practice_id|caller`, co-partitioned with the caller's calls), carried out by the
sink workers with the same consent, caps, quiet hours, sender and sent-log. The console
never talks to Twilio.

One click, one SMS: the page's reply form holds a nonce the server rendered
(`new_nonce`, fresh after each reply). The action id derives from the conversation and
that nonce only, so a double click, a retry after a timeout or the same form sent to
another console replica (or after a restart) yields the same action id, and the sinks'
sent-log sends an action id at most once. Within one process the second request is
answered from memory without producing again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections import OrderedDict, defaultdict

from ringback.clock import Clock
from ringback.console.conversations import STAFF_REPLY_STEP, Conversations
from ringback.console.service import ChangeNotifier, ConsoleError
from ringback.console.users import User
from ringback.kafka.producer import AckedProducer
from ringback.schemas import codec

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600  # Twilio's limit for one message
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REMEMBERED = 10_000  # replies answered from memory on a repeat


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def reply_action_id(practice_id: str, conversation_id: str, nonce: str) -> str:
    digest = hashlib.sha256(f"{conversation_id}|{nonce}".encode()).hexdigest()[:20]
    return f"{practice_id}:{conversation_id}:{STAFF_REPLY_STEP}:{digest}"


class ReplyService:
    def __init__(
        self,
        conversations: Conversations,
        producer: AckedProducer,
        topic: str,
        clock: Clock,
        notifier: ChangeNotifier,
    ) -> None:
        self.conversations = conversations
        self.producer = producer
        self.topic = topic
        self.clock = clock
        self.notifier = notifier
        self._sent: OrderedDict[str, dict] = OrderedDict()  # action id -> the action sent
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def reply(self, user: User, conversation_id: str, body: object, nonce: object) -> dict:
        """Send the reply (broker-acknowledged); the SEND_SMS action. Raises ConsoleError."""
        practice_id = user.practice_id
        caller = self.conversations.caller(practice_id, conversation_id)
        if caller is None:
            raise ConsoleError(404, "not_found", "no such conversation")
        if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
            raise ConsoleError(422, "bad_nonce", "reload the conversation: the reply form is not valid")
        if not isinstance(body, str) or not body.strip():
            raise ConsoleError(422, "bad_body", "write a message")
        text = body.strip()
        if len(text) > MAX_BODY_CHARS:
            raise ConsoleError(422, "bad_body", f"a message has at most {MAX_BODY_CHARS} characters")
        action_id = reply_action_id(practice_id, conversation_id, nonce)
        async with self._locks[action_id]:
            done = self._sent.get(action_id)
            if done is not None:
                return done  # a double click: the first request's action, not a second one
            case_id, scenario = self.conversations.latest_case(practice_id, caller)
            action = {
                "action_id": action_id,
                # The caller's latest case, so the reply's outcome records belong to it.
                "case_id": case_id or f"{practice_id}:{conversation_id}",
                "practice_id": practice_id,
                "kind": "SEND_SMS",
                "step": STAFF_REPLY_STEP,
                "scenario": scenario or "GENERAL_INQUIRY",
                "recipient": caller,
                "body": text,
                "reason": "staff reply from the console",
                "priority": "NORMAL",
                "created_at": self.clock.now_ms(),
                "due_at": None,
                "missed_at": None,
                "call_reported_at": None,
                "params": {"sent_by": user.username},
            }
            key = f"{practice_id}|{caller}".encode()
            await self.producer.send(self.topic, key, codec.encode("action_command", action))
            self._sent[action_id] = action
            while len(self._sent) > REMEMBERED:
                self._sent.popitem(last=False)
        self._locks.pop(action_id, None)
        self.conversations.apply_action(key, action)  # shown at once; the topic's copy is the same entry
        log.info(
            "staff reply %s sent by %s",
            action_id,
            user.username,
            extra={"practice_id": practice_id, "action_id": action_id},
        )
        self.notifier.bump(practice_id)
        return action
