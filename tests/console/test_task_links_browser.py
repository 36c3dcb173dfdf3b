"""A staff notification's link opens its task in the console, in a real browser (Debian's
chromium through Playwright), on the real broker with the whole service.

The links are taken from the real notifications: the Slack posts the sinks made (to a local
Slack stand-in) when the tasks were created, with RINGBACK_CONSOLE_URL set to this console.
A nurse opens the urgent task's link before signing in: after signing in, that task is
shown selected, in view and focused. The patient texts back: the "patient replied" task's
link, followed in the same page (hashchange), selects that task, which lists the patient's
text with its time (as text, never as HTML), and the caller's conversation is one click
away. A user of another role sees the task without the text; a user of another practice,
and any link to a completed or unknown task, get "not open" and nothing of the task.
Screenshots: test-artifacts/test_task_links_browser/."""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import unquote

import httpx
import pytest
from playwright.sync_api import Page, expect
from twilio.request_validator import RequestValidator

from ringback.sinks.records import task_link
from tests.conftest import ARTIFACTS, wait_for
from tests.support.console_stack import ACCOUNT_SID, AUTH_TOKEN, MAPLE_DID, PASSWORD, ConsoleStack

pytestmark = pytest.mark.integration

PATIENT = "+14155550171"
PATIENT_NAME = "Ulla Linked"
# Markup in a patient's text must show as the characters typed.
PATIENT_TEXT = "<b>Still</b> dizzy, can the nurse call after 3? <img src=x onerror=alert(1)>"
NOT_OPEN = "This task is not open (done, reassigned, or not yours)."
SLACK_PATH = "/slack/console-test"
SHOTS = ARTIFACTS / "test_task_links_browser"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    s = ConsoleStack(kafka_bootstrap, "test_task_links_browser", 600, tmp_path_factory.mktemp("links"))
    s.env["RINGBACK_CONSOLE_URL"] = s.console  # the notifications link to this console
    try:
        s.start(
            users=[
                ("maple-family", "nina", ["nurse"]),
                ("maple-family", "ana", ["admin_team"]),
                ("lakeside-peds", "lee", ["nurse", "admin_team"]),
            ]
        )
        s.known_patient("maple-family", PATIENT, PATIENT_NAME, urgent="Callback requested: dizziness")
        s.ehr_loaded()
        yield s
    finally:
        s.close()


def notified_links(stack: ConsoleStack) -> dict[str, str]:
    """task id -> the console link of every staff notification posted to Slack so far."""
    found = {}
    for post in stack.twilio.posts(SLACK_PATH):
        text = json.loads(post.body)["text"]
        for link in re.findall(re.escape(stack.console) + r"/#task=\S+", text):
            found[unquote(link.split("#task=", 1)[1])] = link
    return found


def task_of(stack: ConsoleStack, step: str) -> dict | None:
    return next(
        (
            a
            for a in stack.actions()
            if a["kind"] == "CREATE_TASK" and a["step"] == step and a["params"].get("caller") == PATIENT
        ),
        None,
    )


def link_for(stack: ConsoleStack, step: str) -> tuple[str, str]:
    """(task id, the link its notification carried), once the task is on the tasks topic."""
    task = wait_for(lambda: task_of(stack, step), 90, message=f"the {step} task")
    task_id = task["action_id"]
    link = wait_for(lambda: notified_links(stack).get(task_id), 30, message=f"the Slack notice of {task_id}")
    assert link == task_link(task_id, stack.console)  # the text domain code writes, not a test-made URL
    wait_for(lambda: task_id in stack.tasks(), 30, message=f"{task_id} on the tasks topic")
    return task_id, link


def inbound_sms(stack: ConsoleStack, caller: str, body: str) -> None:
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


def new_page(browser, username: str, errors: list[str]) -> Page:
    context = browser.new_context(viewport={"width": 1024, "height": 700}, has_touch=True, locale="en-US")
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{username}: {exc}"))
    page.on("dialog", lambda dialog: errors.append(f"{username}: a dialog opened: {dialog.message}"))
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and "status of 401" not in msg.text
            and "status of 404" not in msg.text  # links to tasks that are not open: the page asks, 404
            and errors.append(f"{username}: {msg.text}")
        ),
    )
    return page


def sign_in(page: Page, practice: str, username: str) -> None:
    page.fill("#practice_id", practice)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#live")).to_have_text("live", timeout=15_000)


def card(page: Page, task_id: str):
    return page.locator(f'#tasks > li.task[data-task-id="{task_id}"]')


def focused_task(page: Page) -> str | None:
    return page.evaluate("document.activeElement && document.activeElement.dataset.taskId || null")


def expect_selected(page: Page, task_id: str) -> None:
    li = card(page, task_id)
    expect(li).to_have_class(re.compile(r"\bselected\b"), timeout=15_000)
    expect(li).to_have_attribute("aria-current", "true")
    expect(li).to_be_in_viewport()
    wait_for(lambda: focused_task(page) == task_id, 5, interval=0.1, message="focus on the linked task")
    expect(page.locator("#tasks > li.task.selected")).to_have_count(1)
    expect(page.locator("#link-notice")).to_be_hidden()


def test_notification_links_open_their_task_and_a_reply_task_lists_the_texts(stack, browser):
    # Filler tasks first, so the linked ones are not simply the first card on the page.
    for i in range(6):
        stack.direct_task(
            "maple-family",
            f"+1415555020{i}",
            "nurse",
            due_in_s=300 + i,
            missed_ago_s=60,
            reason="general inquiry",
            todo="Call back.",
        )
    stack.missed_call(PATIENT)
    clinical_id, clinical_link = link_for(stack, "clinical_task")
    assert "#task=" in clinical_link and PATIENT not in clinical_link

    errors: list[str] = []
    nina = new_page(browser, "nina", errors)
    ana = new_page(browser, "ana", errors)
    lee = new_page(browser, "lee", errors)
    try:
        # Nina opens the link signed out: the sign-in form says why, then the task is shown.
        nina.goto(clinical_link)
        expect(nina.locator("#login-view")).to_be_visible()
        expect(nina.locator("#login-target")).to_be_visible()
        sign_in(nina, "maple-family", "nina")
        expect_selected(nina, clinical_id)
        expect(card(nina, clinical_id).locator(".details")).to_contain_text(PATIENT_NAME)  # her role's task
        expect(card(nina, clinical_id).locator(".replies")).to_be_hidden()
        nina.screenshot(path=str(SHOTS / "linked-task.png"))

        # The patient texts back: a "patient replied" task, notified with its own link.
        inbound_sms(stack, PATIENT, PATIENT_TEXT)
        reply_id, reply_link = link_for(stack, "patient_replied")
        assert reply_id != clinical_id
        nina.evaluate("window.__sameDocument = true")
        nina.evaluate("(hash) => { window.location.hash = hash; }", reply_link.split("#", 1)[1])
        expect_selected(nina, reply_id)
        assert nina.evaluate("window.__sameDocument") is True  # followed in the page, no reload
        replies = card(nina, reply_id).locator(".replies")
        expect(replies).to_be_visible()
        expect(replies.locator(".patient-reply")).to_have_count(1)
        expect(replies.locator(".reply-text")).to_have_text(PATIENT_TEXT)  # the characters, not markup
        assert replies.locator(".reply-text b, .reply-text img").count() == 0
        expect(replies.locator(".reply-when")).not_to_have_text(re.compile(r"^(—|)$"))
        nina.screenshot(path=str(SHOTS / "linked-reply-task.png"))

        # The caller's conversation is one click away, with the same text.
        card(nina, reply_id).locator(".open-conversation").click()
        expect(nina.locator("#conversation")).to_be_visible()
        expect(nina.locator("#conversation")).to_be_focused()
        expect(nina.locator("#entries li.kind-sms_in .entry-text")).to_have_text(PATIENT_TEXT, timeout=15_000)

        # Another role of the practice: the task, not what the patient wrote.
        ana.goto(reply_link)
        sign_in(ana, "maple-family", "ana")
        expect_selected(ana, reply_id)
        expect(card(ana, reply_id).locator(".replies")).to_be_hidden()
        assert ana.locator("#tasks").inner_text().count("Still") == 0

        # Another practice: "not open", and nothing of the task.
        lee.goto(reply_link)
        sign_in(lee, "lakeside-peds", "lee")
        expect(lee.locator("#link-notice")).to_have_text(NOT_OPEN)
        expect(lee.locator("#link-notice")).to_be_focused()
        expect(card(lee, reply_id)).to_have_count(0)
        assert "Still" not in lee.content() and "0171" not in lee.locator("#tasks").inner_text()

        # A completed task's link, and a link to no task: "not open"; a task link again clears it.
        card(nina, clinical_id).locator(".complete").click()
        nina.locator("#outcomes button.outcome-reached_patient").click()
        expect(card(nina, clinical_id)).to_have_count(0, timeout=15_000)
        nina.evaluate("(hash) => { window.location.hash = hash; }", clinical_link.split("#", 1)[1])
        expect(nina.locator("#link-notice")).to_have_text(NOT_OPEN)
        expect(nina.locator("#tasks > li.task.selected")).to_have_count(0)
        nina.evaluate("window.location.hash = '#task=maple-family%3Anope%3Aclinical_task'")
        expect(nina.locator("#link-notice")).to_have_text(NOT_OPEN)
        nina.evaluate("(hash) => { window.location.hash = hash; }", reply_link.split("#", 1)[1])
        expect_selected(nina, reply_id)
        assert errors == []
    finally:
        for page in (nina, ana, lee):
            page.context.close()
