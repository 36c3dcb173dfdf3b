"""The sink executor without a broker: dict tables, fake Twilio/Slack/SMTP, a manual clock.

Covers the decisions (consent, caps, FCC profile, quiet hours, retries, look-ups,
dead letters, tasks) and the order of durable writes around every API call.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from ringback.sinks import records as rec
from ringback.sinks.executor import caller_of, resolve_target
from ringback.sinks.retry import OptedOut, Permanent, RateLimited, Transient
from tests.sinks.harness import (
    CALLER,
    CHICAGO,
    NOON,
    action,
    created_but_timed_out,
    key,
    make,
)


async def test_sms_is_sent_once_and_redelivery_is_skipped(practices):
    ex = make(practices)
    a = action()
    assert await ex.handle_action(key(), a, 0) == rec.SENT
    assert await ex.handle_action(key(), a, 0) == "DUPLICATE"
    assert len(ex.sms.sent) == 1
    assert ex.sms.sent[0]["callback"] == (
        "https://rb.example.org/webhooks/twilio/sms/status?practice=maple-family&action="
        + a["action_id"].replace(":", "%3A")
    )
    entry = ex.t.sent_log[a["action_id"]]
    assert (entry["state"], entry["sid"], entry["attempts"]) == (rec.SENT, "SM0", 1)
    assert [o["action_result"] for o in ex.fx.outcomes] == ["SENT"]
    o = ex.fx.outcomes[0]
    assert o["missed_at"] == a["created_at"] and o["state"] == "RESPONDED" and o["channel"] == "sms"
    # Durable order: ATTEMPTING before the call; the outcome acknowledged before SENT (a
    # final entry makes a redelivery skip the action, outcome and all).
    order = [e[3] if e[0] == "persist" else e[0] for e in ex.fx.log if e[0] == "outcome" or e[1] == "sent_log"]
    assert order == [rec.ATTEMPTING, "outcome", rec.SENT]


def crash_at_final_write(ex) -> None:
    """The process dies once, as the first write of a final sent-log entry starts."""
    persist_all = ex.fx.persist_all

    async def dying(writes):
        if any(table == "sent_log" and (value or {}).get("state") in rec.FINAL for table, _, value in writes):
            ex.fx.persist_all = persist_all
            raise SystemExit("kill -9")
        await persist_all(writes)

    ex.fx.persist_all = dying


@pytest.mark.parametrize(
    ("kind", "recipient", "result"),
    [
        ("SEND_SMS", CALLER, rec.SENT),
        ("NOTIFY_STAFF", "email:x@maple.example.org", rec.SENT),
        ("CREATE_TASK", "scheduling_coordinator", rec.SENT),
        ("NOTIFY_STAFF", "pager:x", rec.FAILED),
    ],
)
async def test_a_crash_before_the_final_entry_repeats_the_outcome_and_never_loses_it(
    practices, kind, recipient, result
):
    ex = make(practices)
    a = action(kind=kind, recipient=recipient)
    crash_at_final_write(ex)
    with pytest.raises(SystemExit):
        await ex.handle_action(key(), a, 0)
    assert [o["action_result"] for o in ex.fx.outcomes] == [result]  # out before the entry
    assert len(ex.fx.dead) == (result == rec.FAILED)
    assert (ex.t.sent_log.get(a["action_id"]) or {}).get("state") not in rec.FINAL

    # Redelivered after the restart: carried out again where no look-up exists, the outcome
    # (and dead letter) once more under the same id, and a text that went out not sent again.
    assert await ex.handle_action(key(), a, 0) == result
    assert ex.t.sent_log[a["action_id"]]["state"] == result
    assert [o["outcome_id"] for o in ex.fx.outcomes] == [f"{a['action_id']}:{result}"] * 2
    assert len(ex.fx.dead) == 2 * (result == rec.FAILED)
    if kind == "SEND_SMS":
        assert len(ex.sms.sent) == 1 and ex.sms.lookups == 1


async def test_ambiguous_timeout_is_resolved_by_lookup_not_resend(practices):
    ex = make(practices, sms_script=[created_but_timed_out()])
    a = action()
    assert await ex.handle_action(key(), a, 0) == rec.SENT
    assert len(ex.sms.sent) == 1 and ex.sms.lookups == 1 and len(ex.sms.created) == 1


async def test_crash_after_attempting_looks_up_after_the_request_could_finish(practices):
    ex = make(practices)
    a = action()
    ex.sms.created.append({"to": CALLER, "body": a["body"], "sid": "SMx"})  # it went out before the crash
    ex.t.sent_log[a["action_id"]] = {
        **rec.entry_base(a),
        "state": rec.ATTEMPTING,
        "attempts": 1,
        "started_wall": 999.5,
        "first_wall": 999.5,
    }
    assert await ex.handle_action(key(), a, 0) == rec.SENT
    assert ex.sms.sent == [] and ex.t.sent_log[a["action_id"]]["sid"] == "SMx"
    assert ex.sleeps and ex.sleeps[0] == pytest.approx(999.5 + 1.0 + 2.0 - 1000.0)


async def test_crash_before_the_request_left_sends_after_an_empty_lookup(practices):
    ex = make(practices)
    a = action()
    ex.t.sent_log[a["action_id"]] = {
        **rec.entry_base(a),
        "state": rec.ATTEMPTING,
        "attempts": 1,
        "started_wall": 900.0,
        "first_wall": 900.0,
    }
    assert await ex.handle_action(key(), a, 0) == rec.SENT
    assert ex.sms.lookups == 1 and len(ex.sms.sent) == 1 and ex.sleeps == []
    assert ex.t.sent_log[a["action_id"]]["attempts"] == 2


async def test_429_and_5xx_are_retried_with_backoff_and_retry_after(practices):
    ex = make(practices, sms_script=[Transient("429", retry_after=7.0), Transient("500", ambiguous=True)])
    assert await ex.handle_action(key(), action(), 0) == rec.SENT
    assert len(ex.sms.sent) == 3 and ex.sms.lookups == 1  # only the 5xx is looked up
    assert ex.sleeps[0] == 7.0  # Retry-After honoured
    assert 0.5 <= ex.sleeps[1] <= 4.0  # exponential backoff


async def test_budget_spent_dead_letters_with_reason(practices):
    ex = make(practices, sms_script=[Transient("500", ambiguous=True)] * 4)
    a = action()
    assert await ex.handle_action(key(), a, 0) == rec.DEAD_LETTERED
    assert len(ex.sms.sent) == 4
    assert ex.fx.dead and "retry budget spent after 4 attempts" in ex.fx.dead[0]["reason"]
    assert ex.fx.dead[0]["source"] == "sinks.send_sms"
    assert [o["action_result"] for o in ex.fx.outcomes] == ["DEAD_LETTERED"]
    assert await ex.handle_action(key(), a, 0) == "DUPLICATE"


async def test_permanent_refusal_fails_without_retry(practices):
    ex = make(practices, sms_script=[Permanent("HTTP 400, error 21211")])
    assert await ex.handle_action(key(), action(), 0) == rec.FAILED
    assert len(ex.sms.sent) == 1 and ex.fx.dead


async def test_21610_records_an_opt_out_and_stops_later_sms(practices):
    ex = make(practices, sms_script=[OptedOut("unsubscribed")])
    assert await ex.handle_action(key(), action(), 0) == rec.SUPPRESSED
    assert ex.t.consent[f"maple-family|{CALLER}"]["state"] == "OUT"
    assert await ex.handle_action(key(), action(), 0) == rec.SUPPRESSED
    assert len(ex.sms.sent) == 1


@pytest.mark.parametrize(
    "text, state",
    [("STOP", "OUT"), ("unsubscribe", "OUT"), ("Please stop texting me", "OUT"), ("start", "IN"), ("YES", "IN")],
)
async def test_inbound_words_and_sentences_set_consent(practices, text, state):
    ex = make(practices)
    event = {
        "event_type": "SMS",
        "direction": "INBOUND",
        "practice_id": "maple-family",
        "caller": CALLER,
        "sms_body": text,
        "occurred_at": int(NOON * 1000),
    }
    await ex.on_call_event(key(), event)
    assert ex.t.consent[f"maple-family|{CALLER}"]["state"] == state


async def test_opted_out_gets_no_sms_but_tasks_and_one_confirmation(practices):
    ex = make(practices)
    now = int(NOON * 1000)
    stop = {
        "event_type": "SMS",
        "direction": "INBOUND",
        "practice_id": "maple-family",
        "caller": CALLER,
        "sms_body": "STOP",
        "occurred_at": now,
    }
    await ex.on_call_event(key(), stop)
    sms = action()
    assert await ex.handle_action(key(), sms, 0) == rec.SUPPRESSED
    # The last line of defence puts a call-back task in place of the SMS.
    fallback = ex.t.tasks[sms["action_id"] + ":callback"]
    assert fallback["role"] == "scheduling_coordinator" and "opted out" in fallback["reason"]
    assert await ex.handle_action(key(), action("CREATE_TASK", params={"role": "nurse"}), 0) == rec.SENT
    confirm = [action(params={"consent_confirmation": "1"}) for _ in range(2)]
    assert await ex.handle_action(key(), confirm[0], 0) == rec.SENT
    assert await ex.handle_action(key(), confirm[1], 0) == rec.SUPPRESSED
    assert len(ex.sms.sent) == 1
    # A late copy of an older STOP does not undo a newer START.
    await ex.on_call_event(key(), {**stop, "sms_body": "START", "occurred_at": now + 10})
    await ex.on_call_event(key(), stop)
    assert ex.t.consent[f"maple-family|{CALLER}"]["state"] == "IN"


async def test_frequency_caps_and_fcc_profile(practices):
    ex = make(practices, sms_caps=practices[0].sms_caps.model_copy(update={"fcc_healthcare_exemption": True}))
    assert await ex.handle_action(key(), action(), 0) == rec.SENT
    second = action()
    assert await ex.handle_action(key(), second, 0) == rec.SUPPRESSED
    suppressed = [o for o in ex.fx.outcomes if o["action_result"] == "SUPPRESSED"]
    assert suppressed[-1]["reason"].startswith("frequency cap: 1 SMS in 24 h")
    other = "+14155550999"
    assert (
        await ex.handle_action(key(other), action(caller=other, body="x" * 161 + " Maple Family Practice STOP"), 0)
        == rec.SUPPRESSED
    )
    assert "FCC profile" in [o for o in ex.fx.outcomes if o["action_result"] == "SUPPRESSED"][-1]["reason"]
    ex.clock.advance(86_400)  # a day later the daily cap has room again
    assert await ex.handle_action(key(), action(), 0) == rec.SENT


async def test_blocked_and_malformed(practices):
    ex = make(practices)
    assert await ex.handle_action(key("+13125550199"), action(caller="+13125550199"), 0) == rec.SUPPRESSED
    assert await ex.handle_action(key(), action(body=" "), 0) == rec.FAILED
    assert await ex.handle_action(key("555"), action(caller="555"), 0) == rec.FAILED
    assert await ex.handle_action(key(), action(practice_id="nope"), 0) == rec.DEAD_LETTERED
    assert ex.sms.sent == []


async def test_quiet_hours_defer_then_tick_sends_at_opening(practices):
    evening = datetime(2026, 11, 24, 22, 30, tzinfo=CHICAGO).timestamp()
    ex = make(practices, now=evening)
    a = action(now=evening)
    assert await ex.handle_action(key(), a, 2) == rec.DEFERRED
    assert await ex.handle_action(key(), a, 2) == "DUPLICATE"
    opening = datetime(2026, 11, 25, 8, 0, tzinfo=CHICAGO).timestamp()
    assert ex.t.deferred[a["action_id"]]["due_at"] == int(opening * 1000)
    assert "deferred to Wed 25 Nov 08:00" in ex.fx.outcomes[-1]["reason"]
    ex.clock.set(opening - 60)
    assert await ex.fire_due(2) == 0
    ex.clock.set(opening)
    assert await ex.fire_due(1) == 0  # another partition's tick leaves it alone
    assert await ex.fire_due(2) == 1
    assert len(ex.sms.sent) == 1 and a["action_id"] not in ex.t.deferred
    assert [o["action_result"] for o in ex.fx.outcomes] == ["DEFERRED", "SENT"]
    # Staff actions at night are never deferred.
    ex.clock.set(evening)
    assert (
        await ex.handle_action(key(), action("NOTIFY_STAFF", recipient="email:frontdesk@maple.example.org"), 2)
        == rec.SENT
    )


async def test_opt_out_during_deferral_suppresses_at_opening(practices):
    evening = datetime(2026, 11, 24, 22, 30, tzinfo=CHICAGO).timestamp()
    ex = make(practices, now=evening)
    a = action(now=evening)
    await ex.handle_action(key(), a, 0)
    await ex.on_call_event(
        key(),
        {
            "event_type": "SMS",
            "direction": "INBOUND",
            "practice_id": "maple-family",
            "caller": CALLER,
            "sms_body": "stop",
            "occurred_at": int(evening * 1000) + 1,
        },
    )
    ex.clock.set(datetime(2026, 11, 25, 8, 0, tzinfo=CHICAGO).timestamp())
    await ex.fire_due(0)
    assert ex.sms.sent == [] and ex.t.sent_log[a["action_id"]]["state"] == rec.SUPPRESSED


async def test_slack_retries_429_then_5xx_and_email_goes_to_the_routed_address(practices):
    import os

    os.environ["MAPLE_SLACK_WEBHOOK"] = "https://hooks.example.org/services/x"
    try:
        ex = make(practices, slack_script=[Transient("429", retry_after=2.0), Transient("500", ambiguous=True)])
        a = action("ALERT_MANAGER", recipient="department_manager")  # routed: slack:MAPLE_SLACK_WEBHOOK
        assert await ex.handle_action(key(), a, 0) == rec.SENT
        assert len(ex.slack.calls) == 3 and ex.sleeps[0] == 2.0
        url, text = ex.slack.calls[-1]
        assert url == "https://hooks.example.org/services/x" and "0123" not in text  # no number in Slack
        n = action("NOTIFY_STAFF", recipient="scheduling_coordinator")  # routed: email
        assert await ex.handle_action(key(), n, 0) == rec.SENT
        to, subject, body = ex.mailer.calls[0]
        assert to == "frontdesk@maple.example.org" and "0123" not in body and "Maple Family Practice" in subject
        assert ex.fx.outcomes[-1]["channel"] == "email"
    finally:
        del os.environ["MAPLE_SLACK_WEBHOOK"]


async def test_staff_refusal_and_missing_secret_fail_and_dead_letter(practices):
    ex = make(practices, mail_script=[Permanent("550 no such user")])
    assert await ex.handle_action(key(), action("NOTIFY_STAFF", recipient="email:x@maple.example.org"), 0) == rec.FAILED
    assert await ex.handle_action(key(), action("NOTIFY_STAFF", recipient="slack:NOT_SET_ANYWHERE"), 0) == rec.FAILED
    assert await ex.handle_action(key(), action("NOTIFY_STAFF", recipient="pager:x"), 0) == rec.FAILED
    assert len(ex.fx.dead) == 3


async def test_tasks_created_once_and_updates_apply_in_any_order(practices):
    ex = make(practices)
    a = action(
        "CREATE_TASK",
        recipient="email:nurse@maple.example.org",
        params={"role": "nurse"},
        priority="URGENT",
        due_at=int(NOON * 1000) + 300_000,
    )
    claim = {
        "update_id": "u1",
        "task_id": a["action_id"],
        "case_id": a["case_id"],
        "practice_id": "maple-family",
        "action": "CLAIM",
        "actor": "nurse-1",
        "outcome": None,
        "new_role": None,
        "at": 1,
    }
    assert await ex.on_task_update(key(), claim) == "PENDING"  # overtook its task
    assert await ex.handle_action(key(), a, 0) == rec.SENT
    assert await ex.handle_action(key(), a, 0) == "DUPLICATE"
    task = ex.t.tasks[a["action_id"]]
    assert (task["state"], task["claimed_by"], task["role"], task["caller"]) == ("CLAIMED", "nurse-1", "nurse", CALLER)
    assert await ex.on_task_update(key(), claim) == "duplicate update"
    reassign = {**claim, "update_id": "u2", "action": "REASSIGN", "new_role": "department_manager"}
    assert await ex.on_task_update(key(), reassign) == "OPEN"
    done = {**claim, "update_id": "u3", "action": "COMPLETE", "outcome": "reached"}
    assert await ex.on_task_update(key(), done) == "COMPLETED"
    assert await ex.on_task_update(key(), {**claim, "update_id": "u4"}) == "task already completed"


async def test_delivery_receipts_give_one_outcome(practices):
    ex = make(practices)
    a = action()
    await ex.handle_action(key(), a, 0)
    receipt = {
        "message_sid": "SM0",
        "status": "delivered",
        "error_code": None,
        "practice_id": "maple-family",
        "recipient": CALLER,
        "action_id": a["action_id"],
        "received_at": 5,
    }
    assert await ex.on_message_status(key(), {**receipt, "status": "sent"}) is None
    assert await ex.on_message_status(key(), receipt) == "DELIVERED"
    assert await ex.on_message_status(key(), {**receipt, "status": "failed"}) is None
    assert [o["action_result"] for o in ex.fx.outcomes] == ["SENT", "DELIVERED"]
    await ex.on_message_status(key(), {**receipt, "status": "undelivered", "error_code": "21610", "action_id": None})
    assert ex.t.consent[f"maple-family|{CALLER}"]["state"] == "OUT"


def test_caller_and_target_resolution(practices):
    maple = practices[0]
    assert caller_of(b"maple-family|+14155550123", {}) == "+14155550123"
    assert resolve_target("slack:X", maple) == ("slack", "X")
    assert resolve_target("nurse", maple) == ("email", "nurse@maple.example.org")
    assert resolve_target("unknown_role", maple) is None


async def test_answered_call_cancels_the_sms_waiting_for_morning(practices):
    evening = datetime(2026, 11, 24, 22, 30, tzinfo=CHICAGO).timestamp()
    ex = make(practices, now=evening)
    a = action(now=evening)
    other = action(caller="+14155550999", now=evening)
    await ex.handle_action(key(), a, 1)
    await ex.handle_action(key("+14155550999"), other, 1)
    answered = {
        "event_type": "CALL",
        "direction": "INBOUND",
        "outcome": "ANSWERED",
        "practice_id": "maple-family",
        "caller": CALLER,
        "occurred_at": int(evening * 1000) + 60_000,
    }
    assert await ex.on_call_event(key(), answered, 1) == "CANCELLED"
    assert ex.t.sent_log[a["action_id"]]["state"] == rec.SUPPRESSED
    assert ex.fx.outcomes[-1]["reason"].startswith("cancel-if-answered")
    ex.clock.set(datetime(2026, 11, 25, 8, 0, tzinfo=CHICAGO).timestamp())
    await ex.fire_due(1)
    assert [s["to"] for s in ex.sms.sent] == ["+14155550999"]


async def test_429_pauses_the_practice_and_the_same_action_is_sent_after_the_pause(practices):
    ex = make(practices, sms_script=[RateLimited("Twilio answered 429", retry_after=5)])
    a = action()
    assert await ex.handle_action(None, a, 0) == rec.SENT
    assert len(ex.sms.sent) == 2 and len(ex.sms.created) == 1
    assert ex.throttle.paused_for("maple-family") == 5.0  # every call of the practice waits it out
    assert ex.throttle.paused_for("other-practice") == 0
    assert 5.0 in ex.sleeps
