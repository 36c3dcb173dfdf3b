"""Callback task rules (pure): making a task, staff updates, the queue order, updates
that overtake their task; and every task they make fits the tasks topic's contract."""

from __future__ import annotations

from ringback.domain.tasks import (
    MAX_REMEMBERED_UPDATES,
    PENDING,
    add_reply,
    apply_update,
    hold_update,
    is_open,
    new_task,
    open_tasks,
    replies,
    update_record,
)
from ringback.schemas import codec

CALLER = "+14155550123"
BASE = {
    "action_id": "x",
    "case_id": "c",
    "practice_id": "maple-family",
    "reason": "r",
    "scenario": "NEW_PATIENT",
    "step": "s",
}


def update(uid: str, action: str, actor: str, **over) -> dict:
    return {
        "update_id": uid,
        "task_id": "t1",
        "case_id": "c",
        "practice_id": "maple-family",
        "action": action,
        "actor": actor,
        "outcome": None,
        "new_role": None,
        "at": 5,
        **over,
    }


def contract_copy(task: dict) -> dict:
    """The task as a reader of the tasks topic gets it."""
    return codec.decode("task", codec.encode("task", task))


def test_a_new_task_keeps_what_the_console_shows_and_only_the_allowed_details():
    action = {
        **BASE,
        "action_id": "maple-family:abc:callback_task",
        "priority": "HIGH",
        "due_at": 9_000,
        "missed_at": 1_000,
        "params": {"role": "nurse", "todo": "Call back.", "patient_name": "Jane Roe", "recipient_hint": "x"},
    }
    task = new_task(action, CALLER, "nurse", 2_000)
    assert (task["task_id"], task["state"], task["priority"], task["due_at"], task["created_at"]) == (
        "maple-family:abc:callback_task",
        "OPEN",
        "HIGH",
        9_000,
        2_000,
    )
    assert task["details"] == {"todo": "Call back.", "patient_name": "Jane Roe"}
    assert task["history"] == [{"action": "CREATE", "actor": "ringback", "at": 2_000}]
    # No due time or priority in the action: due now, NORMAL; a reason given wins over the action's.
    bare = new_task(BASE, CALLER, "admin_team", 3_000, reason="patient SMS not sent: call back instead")
    assert (bare["due_at"], bare["priority"], bare["reason"]) == (
        3_000,
        "NORMAL",
        "patient SMS not sent: call back instead",
    )
    assert contract_copy(task) == task and contract_copy(bare) == bare


def test_open_tasks_order_and_practice_scope():
    late = new_task({**BASE, "action_id": "t1", "due_at": 2000, "priority": "URGENT"}, CALLER, "nurse", 0)
    early = new_task({**BASE, "action_id": "t2", "due_at": 1000, "priority": "LOW"}, CALLER, "nurse", 0)
    same_due_high = new_task({**BASE, "action_id": "t3", "due_at": 1000, "priority": "HIGH"}, CALLER, "admin", 0)
    other = new_task({**BASE, "action_id": "t4", "practice_id": "lakeside-peds", "due_at": 1}, CALLER, "nurse", 0)
    done, _ = apply_update(late, update("u", "COMPLETE", "a"))
    assert [t["task_id"] for t in open_tasks([late, early, same_due_high, other], "maple-family")] == ["t3", "t2", "t1"]
    assert [t["task_id"] for t in open_tasks([done, early, other], "maple-family", role="nurse")] == ["t2"]
    assert not is_open(done) and is_open(early)
    assert (
        apply_update(late, update("v", "CLAIM", "a", practice_id="lakeside-peds"))[1] == "update from another practice"
    )


def test_the_first_claim_in_the_log_holds_the_task():
    # Two console replicas accepted a claim of the same task at the same instant: the
    # sinks' table and every console's copy apply the log in order and keep the first.
    task = new_task({**BASE, "action_id": "t1", "due_at": 1000, "priority": "HIGH"}, CALLER, "admin", 0)
    ana, _ = apply_update(task, update("u1", "CLAIM", "ana"))
    after, why = apply_update(ana, update("u2", "CLAIM", "bo"))
    assert (after, why) == (ana, "already claimed by someone else")
    again, why = apply_update(ana, update("u3", "CLAIM", "ana"))  # claiming one's own task again is fine
    assert why is None and again["claimed_by"] == "ana"
    released, _ = apply_update(ana, update("u4", "REASSIGN", "ana", new_role="nurse"))
    bo, why = apply_update(released, update("u5", "CLAIM", "bo"))  # free again after a reassign
    assert why is None and bo["claimed_by"] == "bo"


def test_updates_apply_once_and_nothing_moves_a_completed_task():
    task = new_task({**BASE, "action_id": "t1"}, CALLER, "nurse", 0)
    claimed, _ = apply_update(task, update("u1", "CLAIM", "ana"))
    assert apply_update(claimed, update("u1", "CLAIM", "ana")) == (claimed, "duplicate update")
    assert apply_update(claimed, update("u2", "REASSIGN", "ana"))[1] == "reassign without a new role"
    done, why = apply_update(claimed, update("u3", "COMPLETE", "ana", outcome="reached_patient", at=9))
    assert why is None
    assert (done["state"], done["completed_by"], done["completed_at"], done["outcome"]) == (
        "COMPLETED",
        "ana",
        9,
        "reached_patient",
    )
    assert [h["action"] for h in done["history"]] == ["CREATE", "CLAIM", "COMPLETE"]
    assert apply_update(done, update("u4", "REASSIGN", "max", new_role="nurse")) == (done, "task already completed")
    assert contract_copy(done) == done


def test_only_the_last_update_ids_are_remembered():
    task = new_task({**BASE, "action_id": "t1"}, CALLER, "nurse", 0)
    for n in range(MAX_REMEMBERED_UPDATES + 5):
        task, _ = apply_update(task, update(f"u{n}", "CLAIM", "ana"))
    assert len(task["updates"]) == MAX_REMEMBERED_UPDATES and task["updates"][-1] == f"u{MAX_REMEMBERED_UPDATES + 4}"


def test_updates_that_overtake_their_task_are_held_once_and_fit_the_contract():
    claim = update("u1", "CLAIM", "ana")
    held = hold_update(None, claim)
    assert held is not None and (held["state"], held["task_id"], held["case_id"]) == (PENDING, "t1", "c")
    assert hold_update(held, claim) is None  # a redelivery adds nothing
    done = update("u2", "COMPLETE", "ana", outcome="left_message")
    held = hold_update(contract_copy(held), done)  # as the sinks' RocksDB store gives it back
    assert held is not None
    assert [u["update_id"] for u in held["pending_updates"]] == ["u1", "u2"]
    assert contract_copy(held)["pending_updates"] == [claim, done]


def test_the_update_record_is_a_task_update_keyed_by_the_caller():
    task = new_task({**BASE, "action_id": "t1"}, CALLER, "nurse", 0)
    key, record = update_record(task, "COMPLETE", actor="ana", now_ms=7, outcome="reached_patient")
    assert key == f"maple-family|{CALLER}".encode()
    assert codec.decode("task_update", codec.encode("task_update", record)) == record
    assert (record["task_id"], record["action"], record["outcome"], record["new_role"]) == (
        "t1",
        "COMPLETE",
        "reached_patient",
        None,
    )
    assert update_record(task, "CLAIM", actor="ana", now_ms=7)[1]["update_id"] != record["update_id"]


# ---------------------------------------------------------------- patient replies
def reply_action(aid: str, reply_id: str, text: str, at: int, task_id: str | None = None) -> dict:
    params = {"role": "scheduling_coordinator", "todo": "Read the reply.", "reply_id": reply_id}
    params |= {"reply_at": str(at), "reply_text": text} | ({"task_id": task_id} if task_id else {})
    return {**BASE, "action_id": aid, "step": aid.rsplit(":", 1)[1], "created_at": at, "params": params}


def test_a_reply_task_keeps_the_text_for_the_console_and_further_replies_join_it_once():
    first = reply_action("c:patient_replied", "sms-1", "Tuesday after 3?", 10)
    table = {"c:patient_replied": new_task(first, CALLER, "scheduling_coordinator", 11)}
    assert replies(table["c:patient_replied"]) == [{"id": "sms-1", "at": 10, "text": "Tuesday after 3?"}]
    second = reply_action("c:patient_replied_2", "sms-2", "Or Wednesday", 20, task_id="c:patient_replied")
    adds, task = add_reply(second, table.get)
    assert adds and task is not None and task["task_id"] == "c:patient_replied"
    assert [r["text"] for r in replies(task)] == ["Tuesday after 3?", "Or Wednesday"]
    assert task["history"][-1] == {"action": "REPLY", "actor": "ringback", "at": 20}
    table[task["task_id"]] = task
    assert add_reply(second, table.get) == (True, None)  # redelivered: nothing to add
    assert contract_copy(task)["details"]["replies"] == task["details"]["replies"]
    # Not a reply, or a reply without an open task to join: the action makes its own task.
    assert add_reply({**BASE, "params": {"task_id": "c:patient_replied"}}, table.get) == (False, None)
    assert add_reply(reply_action("c:patient_replied_3", "sms-3", "?", 30, task_id="gone"), table.get) == (False, None)
    done, _ = apply_update(task, update("u1", "COMPLETE", "ana", task_id=task["task_id"], outcome="left_message"))
    table[task["task_id"]] = done
    third = reply_action("c:patient_replied_3", "sms-3", "Hello?", 30, task_id="c:patient_replied")
    assert add_reply(third, table.get) == (False, None)
    own = new_task(third, CALLER, "scheduling_coordinator", 31)
    assert own["task_id"] == "c:patient_replied_3" and [r["text"] for r in replies(own)] == ["Hello?"]


def test_other_tasks_carry_no_replies():
    assert replies(new_task({**BASE, "params": {"todo": "Call back."}}, CALLER, "nurse", 1)) == []
    assert "replies" not in new_task({**BASE, "params": {"reply_text": "x"}}, CALLER, "nurse", 1)["details"]
