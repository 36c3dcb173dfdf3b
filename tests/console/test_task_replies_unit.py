"""A "patient replied" task in the console API (no broker): the patient's texts as a list
with their times, for the task's role only, valid against console/openapi.yaml; a
`details["replies"]` value that is not what domain/tasks.py writes shows no replies."""

from __future__ import annotations

import json

import pytest

from ringback.console import views
from ringback.console.users import User
from ringback.domain.tasks import add_reply, new_task
from tests.console.test_console_unit import (
    CALLER_A,
    NOW_MS,
    action,
    call,
    h,  # noqa: F401 - a fixture, used by name
    login,
    new_client,
    task_path,
)

FIRST = "Yes please — can I come <b>Tuesday</b> after 3?"
SECOND = "Or Wednesday morning."


def reply_action(case: str, reply_id: str, at: int, text: str, task_id: str | None = None) -> dict:
    params = {"role": "nurse", "caller": CALLER_A, "reply_id": reply_id, "reply_at": str(at), "reply_text": text}
    if task_id:
        params["task_id"] = task_id
    return action(
        "maple-family",
        case,
        step="patient_replied",
        scenario="URGENT_EXISTING",
        priority="URGENT",
        reason="the patient replied by SMS",
        params=params,
    )


async def test_a_reply_task_lists_the_texts_for_its_role_only(h):  # noqa: F811
    task = new_task(reply_action("c1", "r1", NOW_MS - 60_000, FIRST), CALLER_A, "nurse", NOW_MS)
    second = reply_action("c1", "r2", NOW_MS - 30_000, SECOND, task_id=task["task_id"])
    second["action_id"] += "_2"
    added, task = add_reply(second, lambda task_id: task)
    assert added and task is not None
    h.put(task)

    await login(h.client, "maple-family", "nina")  # the nurse: her role's task
    status, body, _ = await call(h.client, "GET", task_path(task["task_id"]))
    assert status == 200
    assert body["replies"] == [{"at": NOW_MS - 60_000, "text": FIRST}, {"at": NOW_MS - 30_000, "text": SECOND}]
    assert "replies" not in body["details"]  # not the raw JSON string any more
    assert body["conversation_id"] is None  # a console without conversations links none

    desk = await new_client(h)
    await login(desk, "maple-family", "ana")  # the front desk: sees the task, not what the patient wrote
    status, listed, _ = await call(desk, "GET", "/api/tasks")
    mine = next(t for t in listed["tasks"] if t["task_id"] == task["task_id"])
    assert mine["replies"] == [] and "Tuesday" not in json.dumps(listed) and "Wednesday" not in json.dumps(listed)

    other = await new_client(h)
    await login(other, "lakeside-peds", "lee")
    status, _, _ = await call(other, "GET", task_path(task["task_id"]))
    assert status == 404


@pytest.mark.parametrize(
    "raw",
    ["not json", '{"at": 1}', "17", '[1, "x", {"at": "yesterday", "text": "t"}]', "[null]"],
)
def test_replies_that_are_not_the_written_list_show_none(raw):
    task = new_task(action("maple-family", "c1", params={"role": "nurse", "caller": CALLER_A}), CALLER_A, "nurse", 0)
    task["details"]["replies"] = raw
    view = views.task_view(task, User("maple-family", "nina", ("nurse",), "x"))
    assert view["replies"] == [] and "replies" not in view["details"]
