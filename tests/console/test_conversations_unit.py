"""Conversations and staff replies without a broker: `Conversations` fed Avro records of
the four topics by hand (in the order a reader may meet them), the aiohttp app with the
real accounts and sessions, and a producer stand-in that keeps the SEND_SMS actions it
would send. Every JSON answer is checked against console/openapi.yaml."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.console.app import Console
from ringback.console.conversations import Conversations
from ringback.console.replies import ReplyService, reply_action_id
from ringback.console.service import ChangeNotifier, TaskService
from ringback.console.sessions import SessionCodec
from ringback.console.task_cache import TaskCache
from ringback.console.users import UserStore
from ringback.kafka import topics
from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from tests.console.test_console_unit import FAST_HASHER, NOW_MS, PASSWORD, call, login

ENV = Settings(_env_file=None, ringback_namespace="t")
CALLER = "+14155550181"
OTHER = "+16175550177"
TEXT = "Yes please — can I come Tuesday after 3?"
REPLY = "Tuesday 3:30 pm works. Maple Family Practice"
NONCE = "n0nce-" + "a" * 20


def call_event(kind: str, caller: str = CALLER, practice: str = "maple-family", at: int = NOW_MS, **over) -> dict:
    event = {
        "event_id": f"twilio:{kind}:{at}",
        "provider": "twilio",
        "event_type": kind,
        "outcome": "MISSED" if kind == "CALL" else None,
        "provider_status": "no-answer",
        "practice_id": practice,
        "caller": caller,
        "called": "+13125550100",
        "direction": "INBOUND",
        "provider_call_id": f"CA{at}",
        "occurred_at": at,
        "received_at": at,
        "duration_s": None,
        "recording_url": None,
        "transcript": None,
        "sms_body": None,
        "sms_id": None,
        "leg_id": None,
        "signal": None,
    }
    event.update(over)
    return event


def sms_action(caller: str = CALLER, at: int = NOW_MS + 1000, step: str = "first_sms", **over) -> dict:
    action = {
        "action_id": f"maple-family:case1:{step}",
        "case_id": "maple-family:case1",
        "practice_id": "maple-family",
        "kind": "SEND_SMS",
        "step": step,
        "scenario": "NEW_PATIENT",
        "recipient": caller,
        "body": "Hi, this is Maple Family Practice. Reply to book. Reply STOP to opt out.",
        "reason": "new patient: first SMS",
        "priority": "NORMAL",
        "created_at": at,
        "due_at": None,
        "missed_at": NOW_MS,
        "call_reported_at": None,
        "params": {},
    }
    action.update(over)
    return action


def outcome(action_id: str | None, result: str | None, at: int, record_type: str = "ACTION", **over) -> dict:
    record = {
        "outcome_id": f"{action_id}:{result}" if action_id else f"maple-family:case1:{over.get('state')}",
        "case_id": "maple-family:case1",
        "practice_id": "maple-family",
        "scenario": "NEW_PATIENT",
        "state": "RESPONDED",
        "final": False,
        "missed_at": NOW_MS,
        "first_response_at": None,
        "response_latency_ms": None,
        "within_window": None,
        "escalations": 0,
        "converted": False,
        "converted_at": None,
        "conversion_channel": None,
        "channel": "sms",
        "reason": None,
        "at": at,
        "record_type": record_type,
        "action_id": action_id,
        "action_kind": "SEND_SMS" if action_id else None,
        "action_result": result,
    }
    record.update(over)
    return record


def feed(conv: Conversations, spec: topics.TopicSpec, record: dict, key: str = f"maple-family|{CALLER}") -> None:
    conv.apply(topics.topic_name(spec, ENV), key.encode(), codec.encode(spec.schema, record))


def kinds(conv: Conversations, practice: str = "maple-family", caller: str = CALLER) -> list[tuple]:
    found = conv.conversation(practice, conv.conversation_id(practice, caller))
    assert found is not None
    return [(e["kind"], e["label"], e["text"], e.get("status"), e.get("sent_by")) for e in found["entries"]]


# ------------------------------------------------------------------ building conversations
def test_a_conversation_joins_the_four_topics_in_order_whatever_order_they_arrive(caplog):
    changed: list[str] = []
    conv = Conversations(ENV, b"k" * 32, on_change=changed.append)
    # The delivery receipt and the SENT outcome arrive before the SMS they are about.
    feed(
        conv,
        topics.MESSAGE_STATUS,
        {
            "message_sid": "SM1",
            "status": "delivered",
            "error_code": None,
            "practice_id": "maple-family",
            "recipient": CALLER,
            "action_id": "maple-family:case1:first_sms",
            "received_at": NOW_MS + 3000,
        },
    )
    feed(
        conv, topics.OUTCOMES, outcome("maple-family:case1:first_sms", "SENT", NOW_MS + 2000), key="maple-family:case1"
    )
    feed(conv, topics.CALL_EVENTS, call_event("CALL", signal="parent"))
    feed(conv, topics.CALL_EVENTS, call_event("CALL", outcome="VOICEMAIL", signal="leg"))
    feed(conv, topics.CALL_EVENTS, call_event("CALL", signal="parent"))  # the parent never overrides the leg
    feed(conv, topics.CALL_EVENTS, call_event("CALL", outcome="ANSWERED", provider_call_id="CA2", at=NOW_MS + 50))
    feed(conv, topics.CALL_EVENTS, call_event("TRANSCRIPTION", at=NOW_MS + 500, transcript="It's about my knee"))
    feed(conv, topics.ACTIONS, sms_action())
    feed(conv, topics.ACTIONS, sms_action())  # read again after a reader restart: no second entry
    feed(
        conv,
        topics.OUTCOMES,
        outcome(None, None, NOW_MS + 1500, record_type="CASE", state="RESPONDED"),
        key="maple-family:case1",
    )
    feed(conv, topics.CALL_EVENTS, call_event("SMS", at=NOW_MS + 60_000, sms_body=TEXT))
    conv.apply(topics.topic_name(topics.ACTIONS, ENV), b"k", b"not avro")  # skipped, logged
    feed(conv, topics.CALL_EVENTS, call_event("SMS", caller=OTHER, practice="lakeside-peds", sms_body="other"))

    assert kinds(conv) == [
        ("missed_call", "Missed call, voicemail left", None, None, None),
        ("voicemail", "Voicemail transcript", "It's about my knee", None, None),
        ("sms_out", "Automatic SMS", sms_action()["body"], "DELIVERED", None),
        ("step", "Case responded", None, None, None),
        ("sms_in", "SMS from the caller", TEXT, None, None),
    ]
    # A SENT outcome read after the receipt does not move the SMS back.
    feed(
        conv, topics.OUTCOMES, outcome("maple-family:case1:first_sms", "SENT", NOW_MS + 4000), key="maple-family:case1"
    )
    assert kinds(conv)[2][3] == "DELIVERED"
    assert "unreadable action_command record skipped" in caplog.text

    summaries = conv.summaries("maple-family")
    assert [(s["caller"]["display"], s["awaiting_reply"]) for s in summaries] == [("•••-•••-0181", True)]
    cid = summaries[0]["conversation_id"]
    assert "0181" not in cid and cid == conv.conversation_id("maple-family", CALLER)
    assert conv.conversation("lakeside-peds", cid) is None  # another practice: as if there were none
    assert conv.caller("lakeside-peds", cid) is None
    assert [s["caller"]["display"] for s in conv.summaries("lakeside-peds")] == ["•••-•••-0177"]
    assert set(changed) == {"maple-family", "lakeside-peds"}
    assert conv.latest_case("maple-family", CALLER) == ("maple-family:case1", "NEW_PATIENT")


def test_another_key_gives_other_ids_and_a_staff_reply_opens_no_case():
    a, b = Conversations(ENV, b"a" * 32), Conversations(ENV, b"b" * 32)
    assert a.conversation_id("maple-family", CALLER) != b.conversation_id("maple-family", CALLER)
    reply = sms_action(step="staff_reply", case_id="maple-family:x", params={"sent_by": "ana"})
    feed(a, topics.ACTIONS, reply)
    assert kinds(a)[0][1:] == ("SMS sent by ana", reply["body"], "QUEUED", "ana")
    assert a.latest_case("maple-family", CALLER) == (None, None)


# ------------------------------------------------------------------ the API
class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict]] = []
        self.down = False

    async def send(self, topic, key, value, headers=None, partition=None):
        if self.down:
            raise BrokerUnavailable("no acknowledgement within 5s")
        self.sent.append((topic, key, codec.decode("action_command", value)))
        return 0, len(self.sent)


class Harness:
    def __init__(self, tmp_path) -> None:
        self.clock = ManualClock(NOW_MS / 1000 + 120)  # after the caller's SMS
        self.notifier = ChangeNotifier()
        self.conversations = Conversations(ENV, b"k" * 32, on_change=self.notifier.bump)
        self.producer = Producer()
        self.users = UserStore(tmp_path / "users.json", hasher=FAST_HASHER)
        for practice, name in (("maple-family", "ana"), ("maple-family", "bo"), ("lakeside-peds", "lee")):
            self.users.add(practice, name, PASSWORD, ["admin_team"], NOW_MS)
        tasks = TaskService(TaskCache(ENV), self.producer, "t.task-updates", self.clock, self.notifier)  # type: ignore[arg-type]  # the stand-in
        self.console = self.new_console()
        self.tasks = tasks

    def new_console(self) -> Console:
        """A console process: its own reply service (a replica, or this one after a restart)."""
        replies = ReplyService(self.conversations, self.producer, "t.actions", self.clock, self.notifier)  # type: ignore[arg-type]  # the stand-in
        tasks = TaskService(TaskCache(ENV), self.producer, "t.task-updates", self.clock, self.notifier)  # type: ignore[arg-type]  # the stand-in
        return Console(tasks, self.users, SessionCodec(b"s" * 32), clock=self.clock, replies=replies)


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    feed(harness.conversations, topics.CALL_EVENTS, call_event("CALL"))
    feed(harness.conversations, topics.ACTIONS, sms_action())
    feed(harness.conversations, topics.CALL_EVENTS, call_event("SMS", at=NOW_MS + 60_000, sms_body=TEXT))
    harness.clients = []
    yield harness
    for client in harness.clients:
        await client.close()


async def client_of(h, console: Console | None = None) -> TestClient:
    client = TestClient(TestServer((console or h.console).app()))
    await client.start_server()
    h.clients.append(client)
    return client


async def test_staff_read_and_answer_once_per_form_even_on_repeats_and_restarts(h, caplog):
    caplog.set_level(logging.DEBUG)
    ana = await client_of(h)
    session = await login(ana, "maple-family", "ana")
    status, listed, _ = await call(ana, "GET", "/api/conversations")
    assert status == 200 and len(listed["conversations"]) == 1
    cid = listed["conversations"][0]["conversation_id"]
    status, conv, _ = await call(ana, "GET", f"/api/conversations/{cid}")
    assert [e["kind"] for e in conv["entries"]] == ["missed_call", "sms_out", "sms_in"]
    nonce = conv["reply_nonce"]

    path = f"/api/conversations/{cid}/reply"
    status, first, _ = await call(
        ana, "POST", path, {"body": f"  {REPLY} ", "nonce": nonce}, csrf=session["csrf_token"]
    )
    assert status == 200, first
    assert first["reply_id"] == reply_action_id("maple-family", cid, nonce) and first["reply_nonce"] != nonce
    assert first["conversation"]["entries"][-1] | {"entry_id": None, "at": None} == {
        "entry_id": None,
        "kind": "sms_out",
        "at": None,
        "label": "SMS sent by ana",
        "text": REPLY,
        "sent_by": "ana",
        "status": "QUEUED",
        "status_reason": None,
    }
    [(topic, key, action)] = h.producer.sent
    assert (topic, key) == ("t.actions", f"maple-family|{CALLER}".encode())
    assert action | {"created_at": 0} == {
        "action_id": first["reply_id"],
        "case_id": "maple-family:case1",  # the caller's case
        "practice_id": "maple-family",
        "kind": "SEND_SMS",
        "step": "staff_reply",
        "scenario": "NEW_PATIENT",
        "recipient": CALLER,
        "body": REPLY,
        "reason": "staff reply from the console",
        "priority": "NORMAL",
        "created_at": 0,
        "due_at": None,
        "missed_at": None,
        "call_reported_at": None,
        "params": {"sent_by": "ana"},
    }

    # A double click: answered from memory, nothing produced again.
    status, again, _ = await call(ana, "POST", path, {"body": REPLY, "nonce": nonce}, csrf=session["csrf_token"])
    assert status == 200 and again["reply_id"] == first["reply_id"] and len(h.producer.sent) == 1
    # The same form sent to another replica (or after a restart): the same action id (the sinks' sent-log dedupes).
    replica = await client_of(h, h.new_console())
    s2 = await login(replica, "maple-family", "bo")
    status, other, _ = await call(replica, "POST", path, {"body": REPLY, "nonce": nonce}, csrf=s2["csrf_token"])
    assert status == 200 and other["reply_id"] == first["reply_id"]
    assert {a["action_id"] for _, _, a in h.producer.sent} == {first["reply_id"]}
    # A new form is a new message.
    status, nxt, _ = await call(
        ana, "POST", path, {"body": "And bring your card.", "nonce": first["reply_nonce"]}, csrf=session["csrf_token"]
    )
    assert status == 200 and nxt["reply_id"] != first["reply_id"]
    # No phone number, message text in the logs.
    for secret in (CALLER, "0181", REPLY, TEXT):
        assert secret not in caplog.text


async def test_bad_replies_are_refused_and_a_broker_outage_changes_nothing(h):
    ana = await client_of(h)
    session = await login(ana, "maple-family", "ana")
    cid = h.conversations.conversation_id("maple-family", CALLER)
    path, csrf = f"/api/conversations/{cid}/reply", session["csrf_token"]
    for body, code in (
        ({"body": "", "nonce": NONCE}, "bad_body"),
        ({"body": "x" * 1601, "nonce": NONCE}, "bad_body"),
        ({"body": REPLY, "nonce": "short"}, "bad_nonce"),
        ({"body": REPLY}, "bad_nonce"),
        ({"body": 5, "nonce": NONCE}, "bad_body"),
    ):
        status, answer, _ = await call(ana, "POST", path, body, csrf=csrf)
        assert (status, answer["error"]) == (422, code)
    status, answer, _ = await call(ana, "POST", path, {"body": REPLY, "nonce": NONCE})
    assert (status, answer["error"]) == (403, "csrf")
    h.producer.down = True
    status, answer, resp = await call(ana, "POST", path, {"body": REPLY, "nonce": NONCE}, csrf=csrf)
    assert (status, answer["error"], resp.headers["Retry-After"]) == (503, "unavailable", "5")
    h.producer.down = False
    status, answer, _ = await call(ana, "POST", path, {"body": REPLY, "nonce": NONCE}, csrf=csrf)
    assert status == 200 and answer["reply_id"] == reply_action_id("maple-family", cid, NONCE)
    assert len(h.producer.sent) == 1


async def test_another_practice_sees_no_conversation_and_cannot_answer_one(h):
    lee = await client_of(h)
    session = await login(lee, "lakeside-peds", "lee")
    cid = h.conversations.conversation_id("maple-family", CALLER)
    status, listed, _ = await call(lee, "GET", "/api/conversations")
    assert (status, listed["conversations"]) == (200, [])
    for method, path, body in (
        ("GET", f"/api/conversations/{cid}", None),
        ("POST", f"/api/conversations/{cid}/reply", {"body": REPLY, "nonce": NONCE}),
        ("GET", "/api/conversations/" + "0" * 24, None),
        ("GET", "/api/conversations/" + "x" * 64, None),
    ):
        status, answer, _ = await call(lee, method, path, body, csrf=session["csrf_token"])
        assert (status, answer["error"]) == (404, "not_found")
    anonymous = await client_of(h)
    status, answer, _ = await call(anonymous, "GET", "/api/conversations")
    assert (status, answer["error"]) == (401, "unauthenticated")
    assert h.producer.sent == []
