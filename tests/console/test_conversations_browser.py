"""A conversation in the staff console, in real browsers (Debian's chromium through
Playwright), on the real broker with the whole service and Twilio played by Prism
(Twilio's official OpenAPI contract, tests/support/prism.py).

A new patient's missed call gets the workflow's SMS; the patient texts back through
Twilio's inbound-SMS webhook; the text appears in the conversation of two staff members
of the practice who have it open; one answers from the reply box (a double click, then
the same form sent again, then the same action produced again as a restarted console
replica would): the patient's number gets exactly one more message through Prism, the
conversation shows both messages and who answered, live in the second browser too, and
a user of another practice sees no conversation and gets 404 for this one.
Screenshots: test-artifacts/test_conversations_browser/."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.sync_api import Page, expect
from twilio.request_validator import RequestValidator

from ringback.kafka import topics
from tests.conftest import ARTIFACTS, wait_for
from tests.support import kafka_tools
from tests.support.console_stack import ACCOUNT_SID, AUTH_TOKEN, MAPLE_DID, PASSWORD, ConsoleStack
from tests.support.prism import PrismMock

pytestmark = pytest.mark.integration

PATIENT = "+14155550181"
PATIENT_TEXT = "Yes please — can I come Tuesday after 3?"
REPLY_TEXT = "Tuesday 3:30 pm works. See you then! Maple Family Practice"
SHOTS = ARTIFACTS / "test_conversations_browser"


@pytest.fixture(scope="module")
def prism():
    SHOTS.mkdir(parents=True, exist_ok=True)
    mock = PrismMock(SHOTS / "prism.log").start()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory, prism):
    s = ConsoleStack(
        kafka_bootstrap,
        "test_conversations_browser",
        600,
        tmp_path_factory.mktemp("conversations"),
        extra_env={"TWILIO_API_BASE_URL": prism.url},
    )
    try:
        s.start(
            users=[
                ("maple-family", "ana", ["admin_team"]),
                ("maple-family", "bo", ["scheduling_coordinator"]),
                ("lakeside-peds", "lee", ["admin_team"]),
            ]
        )
        yield s
    finally:
        s.close()


def inbound_sms(stack: ConsoleStack, caller: str, body: str) -> None:
    """The patient's text, as Twilio posts it to the gateway (signed)."""
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": MAPLE_DID,
        "Body": body,
        "NumMedia": "0",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    endpoint = f"{stack.gateway}/webhooks/twilio/sms/inbound"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(endpoint, params)
    response = httpx.post(endpoint, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text


def sign_in(browser, stack: ConsoleStack, practice: str, username: str, errors: list[str]) -> Page:
    context = browser.new_context(viewport={"width": 1024, "height": 1100}, has_touch=True, locale="en-US")
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{username}: {exc}"))
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and "status of 401" not in msg.text
            and "status of 404" not in msg.text  # lee's probes of another practice's conversation, below
            and errors.append(f"{username}: {msg.text}")
        ),
    )
    page.goto(stack.console)
    page.fill("#practice_id", practice)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#live")).to_have_text("live", timeout=15_000)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    return page


def sms_actions(stack: ConsoleStack, caller: str) -> list[dict]:
    return [a for a in stack.actions() if a["kind"] == "SEND_SMS" and a["recipient"] == caller]


def sent(stack: ConsoleStack, action: dict) -> bool:
    return any(
        o["record_type"] == "ACTION" and o["action_id"] == action["action_id"] and o["action_result"] == "SENT"
        for o in stack.outcomes(action["case_id"])
    )


def api(page: Page, method: str, path: str, body: dict | None = None) -> dict:
    """A request from the page itself, with its session cookie and CSRF token."""
    return page.evaluate(
        """async ([method, path, body]) => {
            const session = await (await fetch("/api/session")).json();
            const headers = { "Content-Type": "application/json", "X-CSRF-Token": session.csrf_token };
            const opts = { method, headers };
            if (body) opts.body = JSON.stringify(body);
            const r = await fetch(path, opts);
            return { status: r.status, data: await r.json() };
        }""",
        [method, path, body],
    )


def test_a_patient_reply_is_read_and_answered_once_live_and_only_in_its_practice(stack, prism, browser):
    # The missed call of a new patient: the workflow's first SMS goes out through Prism.
    stack.missed_call(PATIENT)
    first = wait_for(lambda: sms_actions(stack, PATIENT), 90, message="the workflow's first SMS")[0]
    wait_for(lambda: sent(stack, first), 60, message="the first SMS SENT through Prism")
    before = len(prism.messages_created())
    assert before == 1

    errors: list[str] = []
    ana = sign_in(browser, stack, "maple-family", "ana", errors)
    bo = sign_in(browser, stack, "maple-family", "bo", errors)
    lee = sign_in(browser, stack, "lakeside-peds", "lee", errors)
    try:
        # Both maple users open the caller's conversation (the number is masked in the list).
        threads = []
        for page in (ana, bo):
            thread = page.locator("li.thread").filter(has_text="•••-•••-0181")
            expect(thread).to_have_count(1, timeout=30_000)
            thread.locator("button").click()
            expect(page.locator("#conversation")).to_be_visible()
            expect(page.locator("#entries li.kind-missed_call")).to_have_count(1)
            expect(page.locator("#entries li.kind-sms_out")).to_have_count(1)
            expect(page.locator("#entries li.kind-sms_out .entry-meta")).to_contain_text("automatic")
            threads.append(thread.get_attribute("data-conversation-id"))
        conversation_id = threads[0]
        assert threads == [conversation_id, conversation_id] and "0181" not in conversation_id

        # The patient texts back: it appears in both open conversations without a reload.
        inbound_sms(stack, PATIENT, PATIENT_TEXT)
        for page in (ana, bo):
            expect(page.locator("#entries li.kind-sms_in .entry-text")).to_have_text(PATIENT_TEXT, timeout=15_000)
        expect(ana.locator("li.thread .awaiting")).to_be_visible()

        # Ana answers. A double click, and the same form again: one reply.
        nonce = ana.locator("#reply-nonce").input_value()
        assert nonce
        ana.fill("#reply-body", REPLY_TEXT)
        ana.screenshot(path=str(SHOTS / "conversation-before-reply.png"), full_page=True)
        ana.locator("#reply-send").dblclick()
        out = ana.locator("#entries li.kind-sms_out").filter(has_text=REPLY_TEXT)
        expect(out).to_have_count(1, timeout=15_000)
        expect(out.locator(".entry-meta")).to_contain_text("by ana")
        expect(ana.locator("#reply-body")).to_have_value("")
        assert ana.locator("#reply-nonce").input_value() not in ("", nonce)  # a new form for the next reply
        again = api(ana, "POST", f"/api/conversations/{conversation_id}/reply", {"body": REPLY_TEXT, "nonce": nonce})
        assert again["status"] == 200, again

        replies = wait_for(
            lambda: [a for a in sms_actions(stack, PATIENT) if a["step"] == "staff_reply"],
            30,
            message="the reply's SEND_SMS action",
        )
        reply = replies[0]
        assert {a["action_id"] for a in replies} == {again["data"]["reply_id"]}
        assert reply["params"]["sent_by"] == "ana" and reply["body"] == REPLY_TEXT
        wait_for(lambda: sent(stack, reply), 60, message="the reply SENT through Prism")

        # A restarted console replica would produce the same action again: still one SMS.
        stack.produce(topics.ACTIONS, "action_command", f"maple-family|{PATIENT}", reply)
        wait_for(
            lambda: kafka_tools.caught_up(stack.bootstrap, f"{stack.ns}-sinks", stack.topic(topics.ACTIONS)),
            60,
            interval=0.3,
            message="the sinks past the repeated action",
        )
        assert len(prism.messages_created()) == before + 1
        prism.assert_all_valid()
        assert len({a["action_id"] for a in sms_actions(stack, PATIENT)}) == 2  # the first SMS and the reply

        # Both messages in the conversation, the reply's status from the sinks; live in bo's browser too.
        for page in (ana, bo):
            expect(page.locator("#entries li.kind-sms_in")).to_have_count(1)
            mine = page.locator("#entries li.kind-sms_out").filter(has_text=REPLY_TEXT)
            expect(mine).to_have_count(1, timeout=15_000)
            expect(mine.locator(".entry-meta")).to_contain_text("by ana")
            expect(mine).to_have_attribute("data-status", "SENT", timeout=15_000)
            texts = page.locator("#entries li .entry-text").all_inner_texts()
            assert texts.index(PATIENT_TEXT) < texts.index(REPLY_TEXT)
            assert page.evaluate("window.__sameDocument") is True
        ana.screenshot(path=str(SHOTS / "conversation-after-reply.png"), full_page=True)
        bo.screenshot(path=str(SHOTS / "conversation-second-browser.png"), full_page=True)

        # Another practice sees nothing of it, whatever it asks.
        expect(lee.locator("#thread-count")).to_have_text("0")
        expect(lee.locator("#threads-empty")).to_be_visible()
        assert api(lee, "GET", "/api/conversations")["data"]["conversations"] == []
        assert api(lee, "GET", f"/api/conversations/{conversation_id}")["status"] == 404
        probe = api(lee, "POST", f"/api/conversations/{conversation_id}/reply", {"body": "x", "nonce": "n" * 24})
        assert probe["status"] == 404
        expect(lee.locator("li.thread")).to_have_count(0)
        assert errors == []
    finally:
        for page in (ana, bo, lee):
            page.context.close()
    # Lee's probe sent nothing either.
    assert len({a["action_id"] for a in sms_actions(stack, PATIENT)}) == 2
