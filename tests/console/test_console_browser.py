"""The staff console in a real browser: Playwright drives Debian's chromium
(`/usr/bin/chromium`, installed by .ci/run; never a browser download) against the
running service on the real broker. A nurse signs in on a tablet-sized page, a missed
call from a patient with an urgent flag turns into a task that appears without a
reload, she claims and completes it, it leaves the page, and the case's gate is closed:
the TaskUpdate COMPLETE is on the task-updates topic, the task table says COMPLETED, and
no manager alert follows (while the same gate does fire for an urgent task left open).
Screenshots: test-artifacts/test_console_browser/."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS, wait_for
from tests.support.console_stack import PASSWORD, ConsoleStack

pytestmark = pytest.mark.integration

ESCALATION_S = 40
URGENT = "+14155550191"  # completed in the browser
URGENT_LEFT = "+14155550192"  # left open: its gate must fire (the check above can fail)
GENERAL = "+14155550193"  # an admin-team task: masked for the nurse
NEW_PATIENT = "+14155550194"  # an overdue callback task of the scheduling coordinator
SHOTS = ARTIFACTS / "test_console_browser"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    s = ConsoleStack(kafka_bootstrap, "test_console_browser", ESCALATION_S, tmp_path_factory.mktemp("console"))
    try:
        s.start(users=[("maple-family", "nina", ["nurse"])])
        s.known_patient("maple-family", URGENT, "Ursula Done", urgent="Callback requested: medication question")
        s.known_patient("maple-family", URGENT_LEFT, "Uri Left", urgent="Callback requested: refill")
        s.known_patient("maple-family", GENERAL, "Gene Ral")
        s.ehr_loaded()
        yield s
    finally:
        s.close()


def clinical_task(stack: ConsoleStack, caller: str) -> dict | None:
    return next(
        (
            a
            for a in stack.actions()
            if a["kind"] == "CREATE_TASK" and a["step"] == "clinical_task" and a["params"].get("caller") == caller
        ),
        None,
    )


def test_nurse_claims_and_completes_a_missed_call_task_in_the_browser(stack, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Already on the board when she signs in: an admin-team task and an overdue callback.
    stack.missed_call(GENERAL)
    overdue = stack.direct_task(
        "maple-family",
        NEW_PATIENT,
        "scheduling_coordinator",
        due_in_s=-7 * 60,
        missed_ago_s=2 * 3600 + 11 * 60,
        reason="new patient: no reply or booking within the follow-up window",
        todo="Call the caller back and offer an appointment.",
    )
    general = wait_for(
        lambda: stack.task_action("maple-family", "GENERAL_INQUIRY", "admin_task"),
        90,
        message="the general inquiry's task",
    )
    wait_for(
        lambda: {general["action_id"], overdue["action_id"]} <= set(stack.tasks()),
        60,
        message="both tasks in the task table",
    )

    context = browser.new_context(
        viewport={"width": 1024, "height": 900},
        has_touch=True,
        device_scale_factor=1,
        locale="en-US",
        timezone_id="America/Chicago",
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors, except the 401 of the "am I signed in?" call before signing in (expected).
    page.on("console", lambda msg: msg.type == "error" and "status of 401" not in msg.text and errors.append(msg.text))
    try:
        page.goto(stack.console)
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#login-error")).to_have_text("")
        page.screenshot(path=str(SHOTS / "console-login.png"))
        page.fill("#practice_id", "maple-family")
        page.fill("#username", "nina")
        page.fill("#password", "not-her-password")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_have_text("wrong practice, username or password")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#practice-name")).to_have_text("Maple Family Practice")
        expect(page.locator("#live")).to_have_text("live", timeout=15_000)
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads

        # The overdue task stands out; the admin-team caller is masked for a nurse.
        overdue_card = page.locator(f'li.task[data-task-id="{overdue["action_id"]}"]')
        expect(overdue_card).to_have_class(re.compile(r"\boverdue\b"))
        expect(overdue_card.locator(".due-label")).to_have_text("Overdue by")
        expect(overdue_card.locator(".caller")).to_have_text("•••-•••-0194")
        general_card = page.locator(f'li.task[data-task-id="{general["action_id"]}"]')
        expect(general_card.locator(".caller")).to_have_text("•••-•••-0193")
        expect(general_card.locator(".caller a")).to_have_count(0)
        expect(general_card.locator("button.claim")).to_be_hidden()

        # The missed calls come in while the page is open: their tasks appear without a reload.
        stack.missed_call(URGENT)
        stack.missed_call(URGENT_LEFT)
        action = wait_for(lambda: clinical_task(stack, URGENT), 90, message="the urgent call's clinical task")
        left = wait_for(lambda: clinical_task(stack, URGENT_LEFT), 90, message="the second urgent task")
        card = page.locator(f'li.task[data-task-id="{action["action_id"]}"]')
        expect(card).to_be_visible(timeout=30_000)
        expect(page.locator(f'li.task[data-task-id="{left["action_id"]}"]')).to_be_visible(timeout=30_000)
        assert page.evaluate("window.__sameDocument") is True

        expect(card.locator(".priority")).to_have_text("URGENT")
        expect(card.locator(".role")).to_have_text("Nurse")
        expect(card.locator(".caller a")).to_have_text("(415) 555-0191")
        assert card.locator(".caller a").get_attribute("href") == f"tel:{URGENT}"
        expect(card.locator(".details")).to_contain_text("Ursula Done")
        expect(card.locator(".details")).to_contain_text("Callback requested: medication question")
        expect(card.locator(".due-label")).to_have_text("Due in")
        expect(card.locator(".since")).to_have_text(re.compile(r"(less than a minute|\d+ min) ago"))
        countdown = card.locator(".countdown")
        expect(countdown).to_have_text(re.compile(r"^1?\d:\d\d$"))
        first = countdown.inner_text()
        expect(countdown).not_to_have_text(first, timeout=5_000)  # a live countdown
        # Most urgent first: the overdue task, then the clinical ones, then the 4-hour admin task.
        order = page.locator("li.task").evaluate_all("els => els.map(e => e.dataset.taskId)")
        assert order.index(overdue["action_id"]) < order.index(action["action_id"]) < order.index(general["action_id"])
        page.screenshot(path=str(SHOTS / "console-tasks.png"), full_page=True)

        card.locator("button.claim").click()
        expect(card.locator(".state")).to_have_text("Claimed by you")
        expect(card.locator("button.claim")).to_be_hidden()
        card.locator("button.complete").click()
        expect(page.locator("#complete-dialog")).to_be_visible()
        page.screenshot(path=str(SHOTS / "console-complete-dialog.png"))
        page.locator('#outcomes button[value="reached_patient"]').click()
        expect(card).to_have_count(0)
        expect(page.locator("#notice")).to_contain_text("Task completed: reached patient.")
        page.screenshot(path=str(SHOTS / "console-after-complete.png"), full_page=True)
        assert errors == []
    finally:
        context.close()

    # The gate is closed: COMPLETE on the topic, COMPLETED in the task table ...
    updates = [u for _, u in stack.task_updates() if u["task_id"] == action["action_id"]]
    assert [(u["action"], u["actor"], u["outcome"]) for u in updates] == [
        ("CLAIM", "nina", None),
        ("COMPLETE", "nina", "reached_patient"),
    ]
    wait_for(
        lambda: (stack.tasks().get(action["action_id"]) or {}).get("state") == "COMPLETED",
        60,
        message="the task COMPLETED in the task table",
    )
    # ... and no manager alert for it, while the task left open does get one.
    alert = wait_for(
        lambda: [a for a in stack.actions() if a["kind"] == "ALERT_MANAGER" and a["case_id"] == left["case_id"]],
        ESCALATION_S + 60,
        interval=0.5,
        message="the manager alert of the urgent task left open",
    )
    assert alert[0]["params"]["task_id"] == left["action_id"]
    due_s = (action["missed_at"] or action["created_at"]) / 1000 + ESCALATION_S
    wait_for(lambda: time.time() > due_s + 5, ESCALATION_S + 30, interval=0.5, message="past the gate's due time")
    assert not [a for a in stack.actions() if a["kind"] == "ALERT_MANAGER" and a["case_id"] == action["case_id"]]
