"""The actions the workflow makes of a patient's SMS replies, through the sink executor: one
"patient replied" task per open conversation, its text list growing, redeliveries adding
nothing, a reply after the task was done making a new task; no notification carries the text."""

from __future__ import annotations

from ringback.domain.tasks import replies
from ringback.sinks import records as rec
from tests.sinks.harness import key, make
from tests.workflow.harness import NEW_CALLER, Harness

TEXTS = ("Yes please - can I come Tuesday after 3?", "Or Wednesday morning", "Hello?")


async def test_replies_become_one_open_task_whose_texts_grow(practices):
    h = Harness()
    h.missed()
    h.at(3_600_000)
    h.sms(NEW_CALLER, TEXTS[0])
    h.sms(NEW_CALLER, TEXTS[1])
    one, two = [a for a in h.actions if a["step"].startswith("patient_replied") and a["kind"] == "CREATE_TASK"]
    ex = make(practices)
    assert await ex.handle_action(key(NEW_CALLER), one, 0) == rec.SENT
    assert await ex.handle_action(key(NEW_CALLER), two, 0) == rec.SENT
    assert await ex.handle_action(key(NEW_CALLER), two, 0) == "DUPLICATE"  # redelivered
    assert set(ex.t.tasks) == {one["action_id"]}
    task = ex.t.tasks[one["action_id"]]
    assert [r["text"] for r in replies(task)] == list(TEXTS[:2])
    assert task["role"] == "scheduling_coordinator" and task["priority"] == "HIGH" and task["caller"] == NEW_CALLER
    assert not any(text in str(task["reason"]) for text in TEXTS)
    # A redelivery the sent-log no longer remembers still adds nothing to the task.
    ex.t.sent_log.pop(two["action_id"])
    await ex.handle_action(key(NEW_CALLER), two, 0)
    assert len(replies(ex.t.tasks[one["action_id"]])) == 2

    # Staff finish the task; the patient texts again: a new task (the worker learnt of the completion).
    h.task(NEW_CALLER, "patient_replied", outcome="left_message")
    h.sms(NEW_CALLER, TEXTS[2])
    three = [a for a in h.actions if a["kind"] == "CREATE_TASK"][-1]
    ex.t.tasks[one["action_id"]] = {**ex.t.tasks[one["action_id"]], "state": "COMPLETED"}
    assert await ex.handle_action(key(NEW_CALLER), three, 0) == rec.SENT
    assert [r["text"] for r in replies(ex.t.tasks[three["action_id"]])] == [TEXTS[2]]


async def test_a_reply_naming_a_task_already_completed_makes_its_own(practices):
    """The worker had not yet seen the completion: the sinks do not bury the reply in a done task."""
    h = Harness()
    h.sms(NEW_CALLER, TEXTS[0])
    h.sms(NEW_CALLER, TEXTS[1])
    one, two = [a for a in h.actions if a["kind"] == "CREATE_TASK"]  # each with its notice to the role
    ex = make(practices)
    await ex.handle_action(key(NEW_CALLER), one, 0)
    ex.t.tasks[one["action_id"]] = {**ex.t.tasks[one["action_id"]], "state": "COMPLETED"}
    assert await ex.handle_action(key(NEW_CALLER), two, 0) == rec.SENT
    assert [r["text"] for r in replies(ex.t.tasks[two["action_id"]])] == [TEXTS[1]]
    assert ex.t.tasks[two["action_id"]]["role"] == "admin_team"
