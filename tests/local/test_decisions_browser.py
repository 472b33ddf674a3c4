"""An anomalous day decided in Airflow's UI (3.3, the newest supported), in headless Chromium
against a real `make up` stack (docker/local/stack.py, free ports): the run waits; the decision is
listed under Browse → Required Actions and on the Recommender page with the rule's line; the
read-only `viewer` login is refused; the admin's approval trains and publishes and `event_stats`
names the approver; a second anomalous day rejected fails naming the rule. Screenshots land in
test-artifacts/browser/."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect
from stack_support.decisions import (
    anomalous_run,
    ended,
    event_stats,
    slack_texts,
    start_stack,
    states,
    stop_stack,
)
from stack_support.stack_client import api
from test_browser import CHROMIUM, CHROMIUM_FLAGS, SHOTS, UI_STEP_TIMEOUT_MS, shot

DAYS = {"Approve": dt.date(2026, 9, 10), "Reject": dt.date(2026, 10, 10)}  # before the stack's seeded days
RULE = "user 'bot' made 50 % of the day's events (limit 10 %) [rule bot_user]"


@pytest.fixture(scope="module")
def stack():
    info = start_stack("decisions-browser")
    yield info
    stop_stack(info)


@pytest.fixture(scope="module")
def browser(stack):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _signed_in(browser, stack, user: str):
    """A page of a browser context of its own, signed in as ``user`` (password = user name)."""
    page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    page.set_default_timeout(UI_STEP_TIMEOUT_MS)
    page.goto(stack["url"])
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(user)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack['url']}/")
    return page


def _answer(page, option: str, reason: str) -> int:
    """Fill the open decision's reason and click ``option``; the status of the UI's PATCH."""
    page.locator("[name=element_reason]").fill(reason)
    def answered(response) -> bool:
        return response.url.endswith("/hitlDetails") and response.request.method == "PATCH"

    with page.expect_response(answered) as sent:
        page.get_by_role("button", name=option, exact=True).click()
    return sent.value.status


def _open_from_required_actions(page, stack, day: dt.date) -> None:
    """Browse → Required Actions → the day's decision (its task's Required Action tab)."""
    page.goto(stack["url"])
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Required Actions").click()
    subject = page.get_by_text(f"Train recommend_train on {day}?").first
    expect(subject).to_be_visible()
    subject.click()
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_visible()


def test_an_anomalous_day_is_decided_under_required_actions(stack, browser):
    day = DAYS["Approve"]
    task = anomalous_run(stack, day)
    run_id = api(stack, task)["dag_run_id"]
    assert api(stack, task)["state"] == "awaiting_input"  # 3.3 parks the task; no worker slot held

    admin = _signed_in(browser, stack, "admin")
    admin.goto(f"{stack['url']}/recommender/")
    expect(admin.locator("#decisions")).to_contain_text(f"Train recommend_train on {day}?")
    shot(admin, "20-recommender-pending-decision")

    _open_from_required_actions(admin, stack, day)
    expect(admin.get_by_text(RULE)).to_be_visible()  # the rule's line, shown as text
    expect(admin.get_by_text("The day's figures:")).to_be_visible()
    shot(admin, "21-required-action")

    viewer = _signed_in(browser, stack, "viewer")
    viewer.goto(admin.url)
    expect(viewer.get_by_role("button", name="Approve", exact=True)).to_be_visible()
    assert _answer(viewer, "Approve", "a viewer tries") == 403
    expect(viewer.get_by_text("Access Denied")).to_be_visible()  # what the UI tells the viewer
    shot(viewer, "22-required-action-viewer-refused")
    assert api(stack, f"{task}/-1/hitlDetails").get("responded_at") is None  # nothing changed

    assert _answer(admin, "Approve", "a launch day, checked with the app team") == 200
    run = ended(stack, run_id)
    assert run["state"] == "success", (states(stack, run_id), slack_texts(stack)[-5:])
    assert event_stats(stack, day) == {"status": "accepted", "accepted": True, "accepted_by": "admin",
                                       "accept_reason": "a launch day, checked with the app team"}
    [asked] = [t for t in slack_texts(stack) if "needs a decision" in t and str(day) in t]
    assert re.search(r"/tasks/approve_anomalous_day/required_actions\|Open in Airflow>", asked), asked
    admin.goto(f"{stack['url']}/recommender/")
    expect(admin.locator("h1")).to_have_text("Recommender")
    expect(admin.locator("#decisions")).to_have_count(0)  # answered: no longer listed


def test_a_rejected_day_fails_in_the_ui_naming_the_rule(stack, browser):
    day = DAYS["Reject"]
    task = anomalous_run(stack, day)
    run_id = api(stack, task)["dag_run_id"]
    admin = _signed_in(browser, stack, "admin")
    _open_from_required_actions(admin, stack, day)
    assert _answer(admin, "Reject", "a bot: the export is broken") == 200
    run = ended(stack, run_id)
    assert run["state"] == "failed", run
    found = states(stack, run_id)
    assert found["approve_anomalous_day"] == "failed" and found["create_cf_matrices"] == "upstream_failed"
    head = "Task *approve_anomalous_day* of *recommend_train* failed"
    [failed] = [t for t in slack_texts(stack) if head in t and str(day) in t]
    assert f"rejected by admin: events of {day} look wrong, nothing trained: {RULE}" in failed, failed
    assert event_stats(stack, day)["status"] == "anomaly"
    admin.goto(f"{stack['url']}/dags/recommend_train/runs/{run_id}/tasks/approve_anomalous_day")
    expect(admin.get_by_text("Failed").first).to_be_visible()
    shot(admin, "23-rejected")
