"""The staff console on the real broker, through its JSON API: tasks made by missed calls
(gateway → stream worker → sinks → task table), worked in `ringback console`, and the
TaskUpdates flowing back to close the case's gate. Every answer is checked against
src/ringback/console/openapi.yaml. One stack of processes serves the module."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest

from ringback.kafka import topics
from tests.conftest import wait_for
from tests.support import kafka_tools
from tests.support.console_api import check_httpx
from tests.support.console_stack import LAKESIDE_DID, PASSWORD, ConsoleStack

pytestmark = pytest.mark.integration

ESCALATION_S = 30
GENERAL = "+14155550181"
URGENT_DONE = "+14155550182"
URGENT_LEFT = "+14155550183"
LAKESIDE_CALLER = "+16175550184"
MAPLE_OTHER = "+14155550185"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    s = ConsoleStack(kafka_bootstrap, "test_console", ESCALATION_S, tmp_path_factory.mktemp("console"))
    try:
        s.start(
            users=[
                ("maple-family", "desk", ["admin_team"]),
                ("maple-family", "nina", ["nurse"]),
                ("lakeside-peds", "lee", ["admin_team", "nurse"]),
            ]
        )
        s.known_patient("maple-family", GENERAL, "Gene Ral")
        s.known_patient("maple-family", URGENT_DONE, "Ursula Done", urgent="callback requested: results question")
        s.known_patient("maple-family", URGENT_LEFT, "Uri Left", urgent="callback requested: refill")
        s.known_patient("lakeside-peds", LAKESIDE_CALLER, "Lake Side")
        s.known_patient("maple-family", MAPLE_OTHER, "Mae Other")
        s.ehr_loaded()
        yield s
    finally:
        s.close()


class Staff:
    """One signed-in browser-less user: an httpx client with the session cookie and CSRF token."""

    def __init__(self, stack: ConsoleStack, practice: str, username: str) -> None:
        self.http = httpx.Client(base_url=stack.console, timeout=15)
        response = self.http.post(
            "/api/login", json={"practice_id": practice, "username": username, "password": PASSWORD}
        )
        check_httpx(response)
        assert response.status_code == 200, response.text
        self.session = response.json()

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        check_httpx(response)
        return response

    def post(self, path: str, body: dict) -> httpx.Response:
        response = self.http.post(path, json=body, headers={"X-CSRF-Token": self.session["csrf_token"]})
        check_httpx(response)
        return response

    def open_ids(self) -> list[str]:
        return [t["task_id"] for t in self.get("/api/tasks").json()["tasks"]]


def tpath(task_id: str, action: str | None = None) -> str:
    return f"/api/tasks/{quote(task_id, safe=':')}" + (f"/{action}" if action else "")


def updates_for(stack: ConsoleStack, task_id: str) -> list[dict]:
    return [u for _, u in stack.task_updates() if u["task_id"] == task_id]


def test_general_inquiry_task_from_a_missed_call_is_claimed_and_completed(stack):
    stack.missed_call(GENERAL)
    action = wait_for(
        lambda: stack.task_action("maple-family", "GENERAL_INQUIRY", "admin_task"),
        90,
        message="the admin task of the general inquiry",
    )
    task_id = action["action_id"]
    desk = Staff(stack, "maple-family", "desk")
    wait_for(lambda: task_id in desk.open_ids(), 30, message="the task in the console")
    task = desk.get(tpath(task_id)).json()
    assert (task["role"], task["state"], task["scenario"], task["caller"]["dial"]) == (
        "admin_team",
        "OPEN",
        "GENERAL_INQUIRY",
        GENERAL,
    )
    assert task["missed_at"] == action["missed_at"] and task["due_at"] == action["due_at"]
    nurse = Staff(stack, "maple-family", "nina")
    assert nurse.get(tpath(task_id)).json()["caller"] == {"display": "•••-•••-0181", "dial": None, "masked": True}

    claimed = desk.post(tpath(task_id, "claim"), {})
    assert claimed.status_code == 200 and claimed.json()["task"]["state"] == "CLAIMED"
    done = desk.post(tpath(task_id, "complete"), {"outcome": "reached_patient"})
    assert done.status_code == 200 and done.json()["task"]["state"] == "COMPLETED"
    # Acknowledged before the answer: both updates are on the topic now, keyed like the case's calls.
    records = stack.task_updates()
    mine = [(k, u) for k, u in records if u["task_id"] == task_id]
    assert [(u["action"], u["actor"], u["outcome"]) for _, u in mine] == [
        ("CLAIM", "desk", None),
        ("COMPLETE", "desk", "reached_patient"),
    ]
    assert {k for k, _ in mine} == {f"maple-family|{GENERAL}".encode()}
    assert task_id not in desk.open_ids()
    # The sinks applied them: the task table says COMPLETED; the stream app converted the case.
    wait_for(
        lambda: (stack.tasks().get(task_id) or {}).get("state") == "COMPLETED",
        60,
        message="the task COMPLETED in the task table",
    )
    row = stack.tasks()[task_id]
    assert (row["completed_by"], row["outcome"]) == ("desk", "reached_patient")
    converted = wait_for(
        lambda: [o for o in stack.outcomes(action["case_id"]) if o["record_type"] == "CASE" and o["converted"]],
        60,
        message="the case converted by the callback",
    )
    assert converted[0]["conversion_channel"] == "callback"
    assert task_id not in desk.open_ids()


def test_completing_the_urgent_task_closes_the_manager_gate_and_leaving_it_does_not(stack):
    stack.missed_call(URGENT_DONE)
    stack.missed_call(URGENT_LEFT)
    nurse = Staff(stack, "maple-family", "nina")

    def clinical(caller: str):
        return next(
            (
                a
                for a in stack.actions()
                if a["kind"] == "CREATE_TASK" and a["step"] == "clinical_task" and a["params"].get("caller") == caller
            ),
            None,
        )

    done_action = wait_for(lambda: clinical(URGENT_DONE), 90, message="the clinical task of the first call")
    left_action = wait_for(lambda: clinical(URGENT_LEFT), 90, message="the clinical task of the second call")
    wait_for(lambda: done_action["action_id"] in nurse.open_ids(), 30, message="the clinical task in the console")
    task = nurse.get(tpath(done_action["action_id"])).json()
    assert (task["priority"], task["role"], task["details"]["patient_name"]) == ("URGENT", "nurse", "Ursula Done")
    assert nurse.post(tpath(done_action["action_id"], "complete"), {"outcome": "left_message"}).status_code == 200

    # The other case's gate fires: the manager alert exists for a task nobody completed ...
    alert = wait_for(
        lambda: [a for a in stack.actions() if a["kind"] == "ALERT_MANAGER" and a["case_id"] == left_action["case_id"]],
        ESCALATION_S + 60,
        interval=0.5,
        message="the manager alert of the uncompleted urgent task",
    )
    assert alert[0]["params"]["task_id"] == left_action["action_id"]
    # ... and none follows for the completed one, well after its own gate was due.
    due_s = (done_action["missed_at"] or done_action["created_at"]) / 1000 + ESCALATION_S
    wait_for(lambda: time.time() > due_s + 5, ESCALATION_S + 30, interval=0.5, message="past the gate's due time")
    assert not [a for a in stack.actions() if a["kind"] == "ALERT_MANAGER" and a["case_id"] == done_action["case_id"]]
    assert stack.tasks()[done_action["action_id"]]["state"] == "COMPLETED"
    assert left_action["action_id"] in nurse.open_ids()


def test_a_user_of_another_practice_cannot_touch_the_tasks_whatever_id_they_use(stack):
    stack.missed_call(LAKESIDE_CALLER, did=LAKESIDE_DID)
    stack.missed_call(MAPLE_OTHER)
    theirs = wait_for(
        lambda: stack.task_action("lakeside-peds", "GENERAL_INQUIRY", "admin_task"),
        90,
        message="the lakeside admin task",
    )
    mine = wait_for(
        lambda: [a for a in stack.actions() if a["kind"] == "CREATE_TASK" and a["params"].get("caller") == MAPLE_OTHER],
        90,
        message="a maple task",
    )[0]
    desk = Staff(stack, "maple-family", "desk")
    wait_for(lambda: desk.get(tpath(mine["action_id"])).status_code == 200, 30, message="maple's task in its console")
    maple_ids = [
        a["action_id"] for a in stack.actions() if a["kind"] == "CREATE_TASK" and a["practice_id"] == "maple-family"
    ]
    lee = Staff(stack, "lakeside-peds", "lee")
    wait_for(lambda: theirs["action_id"] in lee.open_ids(), 30, message="lee's own task")
    assert not set(lee.open_ids()) & set(maple_ids)
    before = kafka_tools.total_records(stack.bootstrap, stack.topic(topics.TASK_UPDATES))
    for task_id in maple_ids + [f"lakeside-peds:{maple_ids[0].split(':', 1)[1]}"]:
        assert lee.get(tpath(task_id)).status_code == 404
        for action, body in (
            ("claim", {}),
            ("complete", {"outcome": "reached_patient"}),
            ("reassign", {"role": "nurse"}),
        ):
            response = lee.post(tpath(task_id, action), body)
            assert (response.status_code, response.json()["error"]) == (404, "not_found"), (task_id, action)
    assert kafka_tools.total_records(stack.bootstrap, stack.topic(topics.TASK_UPDATES)) == before
    # And maple's users do not see lakeside's task either.
    assert theirs["action_id"] not in desk.open_ids()
    assert desk.get(tpath(theirs["action_id"])).status_code == 404
    # Unauthenticated and forged sessions get nothing at all.
    anonymous = httpx.get(f"{stack.console}/api/tasks")
    check_httpx(anonymous)
    assert anonymous.status_code == 401
    forged = httpx.get(f"{stack.console}/api/tasks", cookies={"rb_console": "eyJwIjoibWFwbGUtZmFtaWx5In0.x.y"})
    assert forged.status_code == 401
    # Nothing the console wrote in the meantime names a caller or a patient.
    log = stack.procs.log("console")
    assert "console sign-in" in log
    for phi in (
        GENERAL,
        URGENT_DONE,
        URGENT_LEFT,
        LAKESIDE_CALLER,
        MAPLE_OTHER,
        "Gene Ral",
        "Ursula Done",
        "Uri Left",
        "Mae Other",
        "results question",
        GENERAL[-10:],
    ):
        assert phi not in log
