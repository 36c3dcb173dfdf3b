"""The staff console without a broker: the aiohttp app with the real TaskCache (fed
tasks-topic records by hand), the real user store and sessions, and a producer stand-in
that records the TaskUpdates it would send. Every JSON answer is checked against
console/openapi.yaml."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from itsdangerous.encoding import base64_decode, base64_encode

from ringback.clock import ManualClock
from ringback.config.settings import Settings
from ringback.console import views
from ringback.console.app import Console
from ringback.console.service import ChangeNotifier, TaskService
from ringback.console.sessions import COOKIE, LoginThrottle, SessionCodec
from ringback.console.task_cache import TaskCache
from ringback.console.users import User, UserError, UserStore
from ringback.domain.tasks import apply_update, hold_update, new_task
from ringback.kafka.producer import BrokerUnavailable
from ringback.schemas import codec
from tests.support.console_api import check_openapi

REPO = Path(__file__).resolve().parents[2]
TOPIC = "t.task-updates"
NOW_MS = 1_764_000_000_000
PASSWORD = "correct horse battery"
CALLER_A = "+14155550123"
CALLER_B = "+16175550177"
MASKED_A = "•••-•••-0123"
# Argon2id with small costs: the API tests sign in often (the production parameters are tested below).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


# ------------------------------------------------------------------ helpers
def action(practice: str, case: str, step: str = "admin_task", **over) -> dict:
    a = {
        "action_id": f"{practice}:{case}:{step}",
        "case_id": f"{practice}:{case}",
        "practice_id": practice,
        "kind": "CREATE_TASK",
        "step": step,
        "scenario": "GENERAL_INQUIRY",
        "recipient": "email:x@example.org",
        "body": None,
        "reason": "general inquiry from a known patient",
        "priority": "NORMAL",
        "created_at": NOW_MS,
        "due_at": NOW_MS + 4 * 3600_000,
        "missed_at": NOW_MS - 120_000,
        "call_reported_at": None,
        "params": {
            "role": "admin_team",
            "caller": CALLER_A,
            "todo": "Call the patient back or answer by e-mail.",
            "call_time": "Tue 24 Nov 09:58 CST",
        },
    }
    a.update(over)
    return a


class Producer:
    """Stands in for AckedProducer: keeps what it would send, or fails like a down broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict]] = []
        self.down = False

    async def send(self, topic, key, value, headers=None, partition=None):
        if self.down:
            raise BrokerUnavailable("no acknowledgement within 5s")
        self.sent.append((topic, key, codec.decode("task_update", value)))
        return 0, len(self.sent)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = ManualClock(NOW_MS / 1000)
        self.notifier = ChangeNotifier()
        self.cache = TaskCache(Settings(_env_file=None), on_change=self.notifier.bump)
        self.producer = Producer()
        self.users = UserStore(tmp_path / "users.json", hasher=FAST_HASHER)
        self.service = TaskService(self.cache, self.producer, TOPIC, self.clock, self.notifier)
        self.console = Console(
            self.service,
            self.users,
            SessionCodec(b"k" * 32),
            clock=self.clock,
            throttle=LoginThrottle(delay_from=3, window_s=60),
        )

    def put(self, task: dict) -> dict:
        """A record of the tasks topic, as the sinks write it and the cache reads it."""
        self.cache.apply(task["task_id"].encode(), codec.encode("task", task))
        return task

    def task(self, practice: str, case: str, role: str = "admin_team", caller: str = CALLER_A, **over) -> dict:
        a = action(practice, case, **over)
        return self.put(new_task(a, caller, role, NOW_MS))

    def sink_applies(self, task_id: str) -> None:
        """What the sink workers do with every update the console sent."""
        for _, _, update in self.producer.sent:
            if update["task_id"] == task_id:
                task = self.cache._tasks[task_id]
                new, _ = apply_update(task, update)
                self.put(new)


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    for practice, name, roles in (
        ("maple-family", "ana", ["admin_team"]),
        ("maple-family", "nina", ["nurse"]),
        ("maple-family", "max", ["department_manager"]),
        ("maple-family", "bo", ["admin_team"]),
        ("lakeside-peds", "lee", ["admin_team"]),
    ):
        harness.users.add(practice, name, PASSWORD, roles, NOW_MS)
    server = TestServer(harness.console.app())
    harness.client = TestClient(server)
    await harness.client.start_server()
    harness.clients = [harness.client]
    yield harness
    for c in harness.clients:
        await c.close()


async def new_client(h) -> TestClient:
    client = TestClient(TestServer(h.console.app()))
    await client.start_server()
    h.clients.append(client)
    return client


async def call(
    client: TestClient,
    method: str,
    path: str,
    body: dict | None = None,
    *,
    csrf: str | None = None,
    headers: dict | None = None,
    validate: bool = True,
):
    hdrs = dict(headers or {})
    if csrf:
        hdrs["X-CSRF-Token"] = csrf
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    resp = await client.request(method, path, data=data, headers=hdrs)
    raw = await resp.read()
    if validate and resp.status != 204:
        check_openapi(
            method,
            path,
            resp.status,
            raw,
            request_body=data,
            query=dict(resp.url.query) if resp.url.query else None,
            content_type=resp.content_type,
        )
    elif validate:
        check_openapi(method, path, resp.status, b"", content_type="application/json")
    return resp.status, (json.loads(raw) if raw and resp.content_type == "application/json" else None), resp


async def login(client: TestClient, practice: str, username: str, password: str = PASSWORD) -> dict:
    status, body, resp = await call(
        client, "POST", "/api/login", {"practice_id": practice, "username": username, "password": password}
    )
    assert status == 200, body
    return body


def task_path(task_id: str, action: str | None = None) -> str:
    return f"/api/tasks/{quote(task_id, safe=':')}" + (f"/{action}" if action else "")


# ------------------------------------------------------------------ the task cache
def test_the_cache_keeps_tasks_of_the_contract_topic_and_shows_no_placeholder(caplog):
    changed: list[str] = []
    cache = TaskCache(Settings(_env_file=None), on_change=changed.append)
    task = new_task(action("maple-family", "c1"), CALLER_A, "admin_team", NOW_MS)
    cache.apply(task["task_id"].encode(), codec.encode("task", task))
    assert cache.get("maple-family", task["task_id"]) == task and cache.get("lakeside-peds", task["task_id"]) is None
    # Updates that overtook their task: on the topic, never on the page.
    held = hold_update(
        None,
        {
            "update_id": "u1",
            "task_id": "maple-family:c2:admin_task",
            "case_id": "maple-family:c2",
            "practice_id": "maple-family",
            "action": "CLAIM",
            "actor": "ana",
            "at": NOW_MS,
        },
    )
    cache.apply(b"maple-family:c2:admin_task", codec.encode("task", held))
    assert cache.get("maple-family", "maple-family:c2:admin_task") is None
    assert [t["task_id"] for t in cache.all_tasks("maple-family")] == [task["task_id"]]
    assert [t["task_id"] for t in cache.open_tasks("maple-family", role="admin_team")] == [task["task_id"]]
    # A record not in the contract (e.g. JSON of the old private changelog) is skipped, and said so.
    with caplog.at_level(logging.ERROR, logger="ringback.console.task_cache"):
        cache.apply(b"maple-family:c3:admin_task", json.dumps(task).encode())
    assert cache.get("maple-family", "maple-family:c3:admin_task") is None
    assert "unreadable task record skipped" in caplog.text and CALLER_A not in caplog.text
    cache.apply(task["task_id"].encode(), None)  # a tombstone
    assert cache.all_tasks("maple-family") == []
    assert changed == ["maple-family"] * 3


# ------------------------------------------------------------------ pure pieces
def test_masking_and_details_follow_the_role_that_calls_back():
    task = new_task(
        action(
            "maple-family",
            "c1",
            params={
                "role": "nurse",
                "caller": CALLER_A,
                "todo": "Call back within the urgent window.",
                "patient_name": "Jane Roe",
                "urgency_reason": "callback requested",
                "call_time": "Tue 09:58",
            },
        ),
        CALLER_A,
        "nurse",
        NOW_MS,
    )
    nurse = User("maple-family", "nina", ("nurse",), "x")
    desk = User("maple-family", "ana", ("admin_team",), "x")
    mine, theirs = views.task_view(task, nurse), views.task_view(task, desk)
    assert mine["caller"] == {"display": "(415) 555-0123", "dial": CALLER_A, "masked": False}
    assert mine["details"]["patient_name"] == "Jane Roe" and mine["details"]["urgency_reason"] == "callback requested"
    assert theirs["caller"] == {"display": MASKED_A, "dial": None, "masked": True}
    assert "patient_name" not in theirs["details"] and "urgency_reason" not in theirs["details"]
    assert theirs["details"]["todo"] == "Call back within the urgent window."
    assert CALLER_A not in json.dumps(theirs) and "0123" in theirs["caller"]["display"]
    assert mine["missed_at"] == NOW_MS - 120_000
    assert (mine["can_claim"], mine["can_complete"], theirs["can_claim"], theirs["can_reassign"]) == (
        True,
        True,
        False,
        False,
    )
    assert views.mask_phone("") == "••••" and views.mask_phone("+442071838750") == "•••-•••-8750"


def test_reassign_roles_are_the_standard_ones_plus_the_practice_s():
    roles = views.reassign_roles(["front_desk", "nurse"], ["billing", "admin_team"])
    assert roles[:6] == list(views.STANDARD_ROLES) and roles[6:] == ["billing", "front_desk"]


def test_user_store_hashes_with_argon2_and_ends_sessions_on_change(tmp_path):
    store = UserStore(tmp_path / "console" / "users.json")
    user = store.add("maple-family", "ana", PASSWORD, ["nurse", "nurse"], NOW_MS)
    text = (tmp_path / "console" / "users.json").read_text()
    assert PASSWORD not in text and "$argon2id$" in text and user.roles == ("nurse",)
    assert stat.S_IMODE(os.stat(tmp_path / "console" / "users.json").st_mode) == 0o600
    assert store.verify("maple-family", "ana", PASSWORD) == user
    assert store.verify("maple-family", "ana", PASSWORD + "x") is None
    assert store.verify("lakeside-peds", "ana", PASSWORD) is None
    assert store.verify("maple-family", "nobody", PASSWORD) is None
    codec_ = SessionCodec(b"s" * 32)
    cookie, issued = codec_.issue(user)
    csrf = issued.csrf
    assert codec_.read(cookie, store).user == user and codec_.read(cookie, store).csrf == csrf
    assert codec_.read(cookie[:-2] + "xx", store) is None  # tampered
    assert SessionCodec(b"t" * 32).read(cookie, store) is None  # another key
    assert SessionCodec(b"s" * 32, max_age_s=-1).read(cookie, store) is None  # expired
    with pytest.raises(UserError, match="already exists"):
        store.add("maple-family", "ana", PASSWORD, ["nurse"], NOW_MS)
    store.add("maple-family", "ana", "another long password", ["nurse"], NOW_MS, replace=True)
    assert codec_.read(cookie, store) is None  # the password changed: the old session ended
    assert store.remove("maple-family", "ana") and store.get("maple-family", "ana") is None
    for bad in (
        ("Maple", "ana", PASSWORD, ["nurse"]),
        ("maple-family", "a/b", PASSWORD, ["nurse"]),
        ("maple-family", "ana", "short", ["nurse"]),
        ("maple-family", "ana", PASSWORD, []),
        ("maple-family", "ana", PASSWORD, ["Nurse!"]),
    ):
        with pytest.raises(UserError):
            store.add(*bad, NOW_MS)


def test_login_throttle_counts_failures_per_key_in_a_window():
    now = [0.0]
    throttle = LoginThrottle(delay_from=2, window_s=60, clock=lambda: now[0])
    throttle.failed("acct", "ip")
    assert throttle.retry_after("acct", "ip") == 0
    throttle.failed("acct", "ip")
    assert throttle.retry_after("acct") > 0 and throttle.retry_after("other-acct", "ip") > 0
    now[0] = 61
    assert throttle.retry_after("acct", "ip") == 0


# ------------------------------------------------------------------ the API
async def test_sign_in_sets_a_strict_httponly_cookie_and_answers_per_openapi(h):
    status, body, resp = await call(
        h.client, "POST", "/api/login", {"practice_id": "Maple-Family ", "username": "ANA", "password": PASSWORD}
    )
    assert status == 200
    assert (body["practice_id"], body["username"], body["roles"]) == ("maple-family", "ana", ["admin_team"])
    assert [o["value"] for o in body["outcomes"]] == ["reached_patient", "left_message", "wrong_number"]
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    status, session, _ = await call(h.client, "GET", "/api/session")
    assert status == 200 and session["csrf_token"] == body["csrf_token"]
    status, _, resp = await call(h.client, "POST", "/api/logout", {}, csrf=body["csrf_token"])
    assert status == 204
    status, body, _ = await call(h.client, "GET", "/api/session")
    assert (status, body["error"]) == (401, "unauthenticated")


async def test_wrong_passwords_are_refused_then_throttled(h):
    for _ in range(3):
        status, body, _ = await call(
            h.client,
            "POST",
            "/api/login",
            {"practice_id": "maple-family", "username": "ana", "password": "wrong-password!"},
        )
        assert (status, body["error"]) == (401, "invalid_credentials")
    status, body, resp = await call(
        h.client, "POST", "/api/login", {"practice_id": "maple-family", "username": "ana", "password": PASSWORD}
    )
    assert (status, body["error"]) == (429, "too_many_attempts") and int(resp.headers["Retry-After"]) > 0
    # Another account from the same address (a shared front-desk tablet) may still sign in.
    status, body, _ = await call(
        h.client, "POST", "/api/login", {"practice_id": "maple-family", "username": "bo", "password": PASSWORD}
    )
    assert status == 200
    # The same name and password at another practice is another account, and does not exist there.
    status, body, _ = await call(
        h.client, "POST", "/api/login", {"practice_id": "lakeside-peds", "username": "ana", "password": PASSWORD}
    )
    assert (status, body["error"]) == (401, "invalid_credentials")


async def test_every_api_route_needs_a_session(h):
    t = h.task("maple-family", "c1")
    for method, path in (
        ("GET", "/api/session"),
        ("GET", "/api/tasks"),
        ("GET", task_path(t["task_id"])),
        ("GET", "/api/events"),
        ("POST", task_path(t["task_id"], "claim")),
        ("POST", task_path(t["task_id"], "complete")),
        ("POST", "/api/logout"),
    ):
        status, body, _ = await call(h.client, method, path, {} if method == "POST" else None)
        assert (status, body["error"]) == (401, "unauthenticated"), path
    forged = {COOKIE: SessionCodec(b"attacker-key" * 3).issue(h.users.get("maple-family", "ana"))[0]}
    h.client.session.cookie_jar.update_cookies(forged)
    status, _, _ = await call(h.client, "GET", "/api/tasks")
    assert status == 401
    assert h.producer.sent == []


async def test_open_tasks_most_urgent_first_with_masking_per_role(h):
    late = h.task("maple-family", "c1", due_at=NOW_MS + 3600_000, priority="URGENT")
    early = h.task("maple-family", "c2", due_at=NOW_MS + 600_000, priority="LOW")
    clinical = h.task(
        "maple-family",
        "c3",
        role="nurse",
        step="clinical_task",
        due_at=NOW_MS + 600_000,
        priority="URGENT",
        scenario="URGENT_EXISTING",
        params={"role": "nurse", "patient_name": "Jane Roe", "urgency_reason": "callback requested"},
    )
    h.task("lakeside-peds", "c4", due_at=NOW_MS + 1)
    await login(h.client, "maple-family", "ana")
    status, body, _ = await call(h.client, "GET", "/api/tasks")
    assert status == 200 and body["practice_id"] == "maple-family"
    assert [t["task_id"] for t in body["tasks"]] == [clinical["task_id"], early["task_id"], late["task_id"]]
    by_id = {t["task_id"]: t for t in body["tasks"]}
    assert by_id[early["task_id"]]["caller"]["dial"] == CALLER_A  # ana is admin team: her task
    assert by_id[clinical["task_id"]]["caller"]["display"] == MASKED_A  # a nurse's task: masked for her
    assert "patient_name" not in by_id[clinical["task_id"]]["details"]
    assert "Jane Roe" not in json.dumps(body)
    status, only, _ = await call(h.client, "GET", "/api/tasks?role=nurse")
    assert [t["task_id"] for t in only["tasks"]] == [clinical["task_id"]]
    nurse = await new_client(h)
    await login(nurse, "maple-family", "nina")
    _, body, _ = await call(nurse, "GET", task_path(clinical["task_id"]))
    assert body["caller"]["dial"] == CALLER_A and body["details"]["patient_name"] == "Jane Roe"


async def test_claim_then_complete_sends_acknowledged_task_updates_and_the_task_leaves(h):
    t = h.task("maple-family", "c1")
    session = await login(h.client, "maple-family", "ana")
    status, body, _ = await call(h.client, "POST", task_path(t["task_id"], "claim"), {}, csrf=session["csrf_token"])
    assert status == 200 and body["task"]["state"] == "CLAIMED" and body["task"]["claimed_by_me"]
    # The sink has not applied it yet: the console shows its own update meanwhile.
    _, listed, _ = await call(h.client, "GET", "/api/tasks")
    assert listed["tasks"][0]["state"] == "CLAIMED"
    # Claiming your own claim again sends nothing.
    await call(h.client, "POST", task_path(t["task_id"], "claim"), {}, csrf=session["csrf_token"])
    assert len(h.producer.sent) == 1
    status, body, _ = await call(
        h.client, "POST", task_path(t["task_id"], "complete"), {"outcome": "left_message"}, csrf=session["csrf_token"]
    )
    assert status == 200 and body["task"]["state"] == "COMPLETED" and body["task"]["outcome"] == "left_message"
    _, listed, _ = await call(h.client, "GET", "/api/tasks")
    assert listed["tasks"] == []
    topics_, keys, updates = zip(*h.producer.sent, strict=True)
    assert set(topics_) == {TOPIC} and set(keys) == {f"maple-family|{CALLER_A}".encode()}
    assert [(u["action"], u["actor"], u["outcome"], u["task_id"], u["case_id"], u["at"]) for u in updates] == [
        ("CLAIM", "ana", None, t["task_id"], t["case_id"], NOW_MS),
        ("COMPLETE", "ana", "left_message", t["task_id"], t["case_id"], NOW_MS),
    ]
    # Once the sinks applied both, the cache says the same, and it stays out of the list.
    h.sink_applies(t["task_id"])
    assert h.cache.get("maple-family", t["task_id"])["state"] == "COMPLETED"
    _, listed, _ = await call(h.client, "GET", "/api/tasks")
    assert listed["tasks"] == []
    assert h.service._pending == {}  # the cache shows both updates: nothing left to lay over it
    status, body, _ = await call(
        h.client, "POST", task_path(t["task_id"], "complete"), {"outcome": "left_message"}, csrf=session["csrf_token"]
    )
    assert (status, body["error"]) == (409, "task_completed")
    assert len(h.producer.sent) == 2


async def test_reassign_hands_the_task_to_another_role_and_managers_may_too(h):
    t = h.task("maple-family", "c1")
    u = h.task("maple-family", "c2")
    session = await login(h.client, "maple-family", "ana")
    csrf = session["csrf_token"]
    status, body, _ = await call(h.client, "POST", task_path(t["task_id"], "reassign"), {"role": "nurse"}, csrf=csrf)
    assert status == 200 and body["task"]["role"] == "nurse" and body["task"]["caller"]["masked"]
    assert h.producer.sent[-1][2]["new_role"] == "nurse"
    for role, error in (("admin_team", "not_your_role"),):  # no longer hers
        status, body, _ = await call(h.client, "POST", task_path(t["task_id"], "reassign"), {"role": role}, csrf=csrf)
        assert (status, body["error"]) == (403, error)
    status, body, _ = await call(
        h.client, "POST", task_path(u["task_id"], "reassign"), {"role": "no_such_role"}, csrf=csrf
    )
    assert (status, body["error"]) == (422, "bad_role")
    status, body, _ = await call(
        h.client, "POST", task_path(u["task_id"], "reassign"), {"role": "admin_team"}, csrf=csrf
    )
    assert (status, body["error"]) == (422, "same_role")
    manager = await new_client(h)
    m = await login(manager, "maple-family", "max")
    assert m["manager"] is True
    status, body, _ = await call(manager, "POST", task_path(t["task_id"], "claim"), {}, csrf=m["csrf_token"])
    assert (status, body["error"]) == (403, "not_your_role")
    status, body, _ = await call(
        manager, "POST", task_path(t["task_id"], "reassign"), {"role": "admin_team"}, csrf=m["csrf_token"]
    )
    assert status == 200 and body["task"]["role"] == "admin_team" and body["task"]["state"] == "OPEN"


async def test_roles_and_claims_limit_who_may_act(h):
    t = h.task("maple-family", "c1")
    nurse = await new_client(h)
    n = await login(nurse, "maple-family", "nina")
    status, body, _ = await call(nurse, "POST", task_path(t["task_id"], "claim"), {}, csrf=n["csrf_token"])
    assert (status, body["error"]) == (403, "not_your_role")
    a = await login(h.client, "maple-family", "ana")
    assert (await call(h.client, "POST", task_path(t["task_id"], "claim"), {}, csrf=a["csrf_token"]))[0] == 200
    colleague = await new_client(h)
    b = await login(colleague, "maple-family", "bo")
    for path, payload in (
        (task_path(t["task_id"], "claim"), {}),
        (task_path(t["task_id"], "complete"), {"outcome": "reached_patient"}),
    ):
        status, body, _ = await call(colleague, "POST", path, payload, csrf=b["csrf_token"])
        assert (status, body["error"]) == (409, "claimed_by_other")
    status, body, _ = await call(
        h.client, "POST", task_path(t["task_id"], "complete"), {"outcome": "booked"}, csrf=a["csrf_token"]
    )
    assert (status, body["error"]) == (422, "bad_outcome")
    status, body, _ = await call(
        h.client, "POST", task_path(t["task_id"], "complete"), {}, csrf=a["csrf_token"], validate=False
    )
    assert (status, body["error"]) == (422, "bad_outcome")
    assert len(h.producer.sent) == 1


async def test_state_changes_need_the_csrf_token_json_and_the_same_origin(h):
    t = h.task("maple-family", "c1")
    session = await login(h.client, "maple-family", "ana")
    path = task_path(t["task_id"], "complete")
    payload = {"outcome": "reached_patient"}
    status, body, _ = await call(h.client, "POST", path, payload)
    assert (status, body["error"]) == (403, "csrf")
    token = session["csrf_token"]
    tampered = ("y" if token[0] == "x" else "x") + token[1:]  # one character changed, never the same token
    status, body, _ = await call(h.client, "POST", path, payload, csrf=tampered)
    assert (status, body["error"]) == (403, "csrf")
    status, body, _ = await call(
        h.client, "POST", path, payload, csrf=session["csrf_token"], headers={"Origin": "https://evil.example"}
    )
    assert (status, body["error"]) == (403, "cross_origin")
    # A cross-site form post: not JSON (the only bodies a form can send without a preflight).
    resp = await h.client.post(
        path,
        data="outcome=reached_patient",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": session["csrf_token"]},
    )
    assert resp.status == 415
    # Another user's token is no good with this session.
    other = await new_client(h)
    stolen = (await login(other, "maple-family", "bo"))["csrf_token"]
    status, body, _ = await call(h.client, "POST", path, payload, csrf=stolen)
    assert (status, body["error"]) == (403, "csrf")
    # Login from another site is refused too (login CSRF).
    status, body, _ = await call(
        other,
        "POST",
        "/api/login",
        {"practice_id": "maple-family", "username": "ana", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert (status, body["error"]) == (403, "cross_origin")
    assert h.producer.sent == []
    status, _, _ = await call(
        h.client,
        "POST",
        path,
        payload,
        csrf=session["csrf_token"],
        headers={"Origin": str(h.client.make_url("/")).rstrip("/")},
    )
    assert status == 200


async def test_practice_a_cannot_read_claim_complete_or_reassign_practice_b_tasks_whatever_the_id(h):
    mine = h.task("maple-family", "c1")
    theirs = h.task("lakeside-peds", "c9", caller=CALLER_B)
    session = await login(h.client, "maple-family", "ana")
    csrf = session["csrf_token"]
    _, listed, _ = await call(h.client, "GET", "/api/tasks")
    assert [t["task_id"] for t in listed["tasks"]] == [mine["task_id"]]
    _, listed, _ = await call(h.client, "GET", "/api/tasks?role=admin_team")
    assert theirs["task_id"] not in json.dumps(listed)
    case_hash = theirs["task_id"].split(":")[1]
    guesses = [
        theirs["task_id"],  # the real id of practice B's task
        f"maple-family:{case_hash}:admin_task",  # B's case under A's practice id
        f"lakeside-peds:{mine['task_id'].split(':')[1]}:admin_task",  # A's case under B's id
        "lakeside-peds:c9",  # a prefix
        theirs["task_id"].upper(),
        theirs["task_id"] + " ",
        "../lakeside-peds:c9:admin_task",
        "lakeside-peds%3Ac9%3Aadmin_task",
        "x" * 300,
    ]
    for guess in guesses:
        path = task_path(guess)
        status, body, _ = await call(h.client, "GET", path, validate=len(guess) <= 200)
        assert status == 404 and body["error"] == "not_found", guess
        for action_, payload in (
            ("claim", {}),
            ("complete", {"outcome": "reached_patient"}),
            ("reassign", {"role": "nurse"}),
        ):
            status, body, _ = await call(
                h.client, "POST", task_path(guess, action_), payload, csrf=csrf, validate=len(guess) <= 200
            )
            assert status == 404 and body["error"] == "not_found", (guess, action_)
            assert CALLER_B not in json.dumps(body)
    # The answer for B's real task is the answer for a task that never existed.
    real = await call(h.client, "GET", task_path(theirs["task_id"]))
    never = await call(h.client, "GET", task_path("lakeside-peds:0000:admin_task"))
    assert real[:2] == never[:2]
    assert h.producer.sent == []
    assert h.cache.get("lakeside-peds", theirs["task_id"])["state"] == "OPEN"
    # Practice B's own user does see and can claim it.
    b = await new_client(h)
    lee = await login(b, "lakeside-peds", "lee")
    status, body, _ = await call(b, "POST", task_path(theirs["task_id"], "claim"), {}, csrf=lee["csrf_token"])
    assert status == 200 and body["task"]["caller"]["dial"] == CALLER_B
    assert [u["practice_id"] for _, _, u in h.producer.sent] == ["lakeside-peds"]
    # A's session cookie with B's practice written into it is no session: the signature no longer fits.
    cookie = h.client.session.cookie_jar.filter_cookies(h.client.make_url("/"))[COOKIE].value
    payload, stamp, signature = cookie.rsplit(".", 2)
    data = json.loads(base64_decode(payload))
    assert data["p"] == "maple-family"
    data["p"], data["u"] = "lakeside-peds", "lee"
    forged = ".".join([base64_encode(json.dumps(data, separators=(",", ":")).encode()).decode(), stamp, signature])
    h.client.session.cookie_jar.clear()
    h.client.session.cookie_jar.update_cookies({COOKIE: forged})
    status, body, _ = await call(h.client, "GET", "/api/tasks")
    assert (status, body["error"]) == (401, "unauthenticated")
    h.client.session.cookie_jar.clear()
    h.client.session.cookie_jar.update_cookies({COOKIE: cookie})  # the genuine one still works
    assert (await call(h.client, "GET", "/api/tasks"))[0] == 200


async def test_broker_down_answers_503_and_changes_nothing(h):
    t = h.task("maple-family", "c1")
    session = await login(h.client, "maple-family", "ana")
    h.producer.down = True
    status, body, resp = await call(
        h.client,
        "POST",
        task_path(t["task_id"], "complete"),
        {"outcome": "reached_patient"},
        csrf=session["csrf_token"],
    )
    assert (status, body["error"]) == (503, "unavailable") and resp.headers["Retry-After"] == "5"
    _, listed, _ = await call(h.client, "GET", "/api/tasks")
    assert [x["state"] for x in listed["tasks"]] == ["OPEN"]
    h.producer.down = False
    status, _, _ = await call(
        h.client,
        "POST",
        task_path(t["task_id"], "complete"),
        {"outcome": "reached_patient"},
        csrf=session["csrf_token"],
    )
    assert status == 200


async def test_a_removed_account_loses_its_session_at_once(h):
    h.task("maple-family", "c1")
    await login(h.client, "maple-family", "bo")
    assert (await call(h.client, "GET", "/api/tasks"))[0] == 200
    h.users.remove("maple-family", "bo")
    assert (await call(h.client, "GET", "/api/tasks"))[0] == 401


async def test_events_stream_announces_changes_of_the_own_practice_only(h):
    session = await login(h.client, "maple-family", "ana")
    resp = await h.client.get("/api/events")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")

    async def next_event() -> dict:
        lines = []
        while True:
            line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
            if line == "" and lines:
                break
            if line and not line.startswith((":", "retry:")):
                lines.append(line)
        assert lines[0] == "event: tasks"
        return json.loads(lines[1].removeprefix("data: "))

    first = await next_event()
    h.task("lakeside-peds", "c9")  # another practice: no event for maple
    t = h.task("maple-family", "c1")  # the cache thread's path: bump from "another thread"
    second = await next_event()
    assert second["version"] > first["version"]
    await call(h.client, "POST", task_path(t["task_id"], "claim"), {}, csrf=session["csrf_token"])
    third = await next_event()
    assert third["version"] > second["version"]
    resp.close()


async def test_page_and_static_files_carry_a_strict_content_security_policy(h):
    resp = await h.client.get("/")
    html = await resp.text()
    assert resp.status == 200 and "console.js" in html and "<script>" not in html
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Referrer-Policy"] == "no-referrer"
    js = await (await h.client.get("/static/console.js")).text()
    assert ".innerHTML" not in js and "X-CSRF-Token" in js
    api = await h.client.get("/api/tasks")
    assert api.headers["Cache-Control"] == "no-store"
    status, body, _ = await call(h.client, "GET", "/api/nothing-here", validate=False)
    assert (status, body["error"]) == (404, "not_found")


async def test_no_phone_number_or_patient_name_in_the_logs(h, caplog):
    caplog.set_level(logging.DEBUG)
    t = h.task(
        "maple-family",
        "c1",
        role="nurse",
        step="clinical_task",
        params={"role": "nurse", "patient_name": "Jane Roe", "urgency_reason": "chest pain"},
    )
    nurse = await login(h.client, "maple-family", "nina")
    await call(h.client, "GET", "/api/tasks")
    await call(h.client, "POST", task_path(t["task_id"], "claim"), {}, csrf=nurse["csrf_token"])
    await call(
        h.client, "POST", task_path(t["task_id"], "complete"), {"outcome": "reached_patient"}, csrf=nurse["csrf_token"]
    )
    await call(
        h.client,
        "POST",
        "/api/login",
        {"practice_id": "maple-family", "username": "nina", "password": "not the password"},
    )
    text = "\n".join(r.getMessage() + " " + json.dumps({k: str(v) for k, v in vars(r).items()}) for r in caplog.records)
    assert "task" in text  # the flow did log
    for secret in (CALLER_A, CALLER_A[2:], "Jane Roe", "chest pain", PASSWORD, "not the password"):
        assert secret not in text


def test_the_openapi_description_is_valid_and_every_route_is_in_it():
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    spec, _ = read_from_filename(str(REPO / "src" / "ringback" / "console" / "openapi.yaml"))
    validate(spec)
    notifier = ChangeNotifier()
    service = TaskService(
        TaskCache(Settings(_env_file=None), notifier.bump), Producer(), TOPIC, ManualClock(), notifier
    )
    console = Console(service, UserStore("/nonexistent/users.json"), SessionCodec(b"k" * 32))
    app = console.app()
    api_routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method != "HEAD"
        and r.resource.canonical != "/api/openapi.yaml"
    }
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m != "parameters"}
    assert api_routes == described


async def test_own_updates_overlay_the_cache_until_applied_or_expired(h):
    t = h.task("maple-family", "c1")
    user = h.users.get("maple-family", "ana")
    now = [0.0]
    h.service.monotonic = lambda: now[0]
    await h.service.update(user, t["task_id"], "COMPLETE", outcome="wrong_number")
    assert h.service.open_tasks("maple-family") == []  # the cache still says OPEN; the overlay wins
    assert h.cache.get("maple-family", t["task_id"])["state"] == "OPEN"
    now[0] = 601.0  # never applied by the sinks (e.g. down for 10 min): the tasks topic is the truth again
    assert [x["task_id"] for x in h.service.open_tasks("maple-family")] == [t["task_id"]]
    # A deleted task (a tombstone in the tasks topic) disappears and tells its practice's streams.
    await asyncio.sleep(0)  # the bumps queued so far (from "the cache thread") have run
    before = h.notifier.version("maple-family")
    h.cache.apply(t["task_id"].encode(), None)
    await asyncio.sleep(0)
    assert h.service.get("maple-family", t["task_id"]) is None
    assert h.notifier.version("maple-family") == before + 1


async def test_a_body_whose_content_encoding_does_not_decode_is_a_400_not_a_500(h):
    resp = await h.client.post(
        "/api/login",
        data=b"\x1f\x8b not gzip at all",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 400 and (await resp.json())["error"] == "bad_encoding"
