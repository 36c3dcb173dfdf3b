"""The sink executor without Kafka or HTTP: tables as dicts, fake effects and channels that
record what they were asked, a manual clock, and action commands as the stream worker
makes them. Used by the executor's tests and by the tests that read its metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from ringback.clock import ManualClock
from ringback.config.practices_file import load_practices
from ringback.config.settings import Settings
from ringback.kafka.practice_directory import PracticeDirectory
from ringback.schemas import codec
from ringback.sinks import records as rec
from ringback.sinks.executor import ActionExecutor, Tables
from ringback.sinks.retry import RetryPolicy, Transient
from tests.conftest import REPO

CHICAGO = ZoneInfo("America/Chicago")
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=CHICAGO).timestamp()
CALLER = "+14155550123"


class FakeEffects:
    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.log: list[tuple] = []  # every durable write, outcome and dead letter, in order
        self.outcomes: list[dict] = []
        self.dead: list[dict] = []

    async def persist(self, table, key, value):
        t = getattr(self.tables, table)
        if value is None:
            t.pop(key, None)
        elif table == "tasks":  # the contract topic's codec, as the sinks' store writes and reads it back
            t[key] = codec.decode("task", codec.encode("task", value))
        else:
            t[key] = value
        self.log.append(("persist", table, key, (value or {}).get("state") if isinstance(value, dict) else None))

    async def persist_all(self, writes):
        for table, key, value in writes:
            await self.persist(table, key, value)

    async def outcome(self, key, record):
        self.outcomes.append(record)
        self.log.append(("outcome", record["action_result"]))

    async def dead_letter(self, key, record):
        self.dead.append(record)
        self.log.append(("dead_letter", record["reason"]))


class FakeSms:
    timeout_s = 1.0

    def __init__(self, effects: FakeEffects, script=()) -> None:
        self.effects = effects
        self.script = list(script)  # exceptions to raise, in order; then success
        self.sent: list[dict] = []
        self.created: list[dict] = []  # what the "real" Twilio holds
        self.lookups = 0

    async def send(self, practice, to, body, status_callback=None):
        # The sent-log must say ATTEMPTING before the request leaves.
        assert self.effects.log[-1][:2] == ("persist", "sent_log") and self.effects.log[-1][3] == rec.ATTEMPTING
        self.sent.append({"to": to, "body": body, "callback": status_callback})
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Transient) and step.ambiguous and getattr(step, "created", False):
            self.created.append({"to": to, "body": body, "sid": f"SM{len(self.created)}"})
        if step is not None:
            raise step
        sid = f"SM{len(self.created)}"
        self.created.append({"to": to, "body": body, "sid": sid})
        return sid

    async def find_sent(self, practice, to, body, since_ms):
        self.lookups += 1
        for m in self.created:
            if m["to"] == to and m["body"] == body:
                return m["sid"]
        return None


class FakeHook:
    def __init__(self, script=()) -> None:
        self.script = list(script)
        self.calls: list = []

    async def post(self, url, text, urgent=False):
        self.calls.append((url, text))
        if self.script:
            raise self.script.pop(0)

    async def send(self, action_id, to, subject, text, urgent=False):
        self.calls.append((to, subject, text))
        if self.script:
            raise self.script.pop(0)


def created_but_timed_out() -> Transient:
    exc = Transient("no answer within 1s", ambiguous=True)
    exc.created = True
    return exc


def example_practices():
    return load_practices(REPO / "examples" / "practices.yaml").practices


def make(practices, sms_script=(), slack_script=(), mail_script=(), now=NOON, attempts=4, **practice_over):
    maple = practices[0].model_copy(update=practice_over) if practice_over else practices[0]
    directory = PracticeDirectory([maple, *practices[1:]])
    tables = Tables({}, {}, {}, {}, {})
    fx = FakeEffects(tables)
    sleeps: list[float] = []

    async def sleep(s):
        sleeps.append(s)

    env = Settings(ringback_public_url="https://rb.example.org", _env_file=None)
    ex = ActionExecutor(
        env,
        tables,
        fx,
        directory,
        ManualClock(now),
        RetryPolicy(attempts=attempts, base_s=0.5, max_s=4, jitter_s=0.0),
        sms=FakeSms(fx, sms_script),
        slack=FakeHook(slack_script),
        mailer=FakeHook(mail_script),
        sleep=sleep,
        wall=lambda: 1_000.0,
    )
    ex.sleeps = sleeps
    return ex


def action(
    kind="SEND_SMS", caller=CALLER, body="Hi, this is Maple Family Practice. Reply STOP to opt out.", now=NOON, **over
):
    case = f"maple-family:{uuid.uuid4().hex[:12]}"
    step = {
        "SEND_SMS": "first_sms",
        "CREATE_TASK": "callback_task",
        "NOTIFY_STAFF": "notify",
        "ALERT_MANAGER": "alert",
    }[kind]
    a = {
        "action_id": f"{case}:{step}",
        "case_id": case,
        "practice_id": "maple-family",
        "kind": kind,
        "step": step,
        "scenario": "NEW_PATIENT",
        "recipient": caller,
        "body": body if kind == "SEND_SMS" else None,
        "reason": "missed call from an unknown number",
        "priority": "NORMAL",
        "created_at": int(now * 1000),
        "due_at": None,
        "missed_at": None,
        "call_reported_at": None,
        "params": {},
    }
    a.update(over)
    return a


def key(caller=CALLER):
    return f"maple-family|{caller}".encode()
