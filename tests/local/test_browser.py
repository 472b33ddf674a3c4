"""What users do in the Airflow UI, driven in headless Chromium against a real `make up` stack.

The stack (docker/local/stack.py: PostgreSQL, emulators, airflow standalone with this
checkout's DAGs) is started on free ports in a temporary directory, so a developer's own
`make up` is left alone. Screenshots land in test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from stack_support.run_expectations import DEFAULT_N, items_per_user, still_writing, writes
from stack_support.stack_client import api, bigquery_client, recommendation_days

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "docker" / "local" / "stack.py"
SHOTS = REPO / "test-artifacts" / "browser"
sys.path.insert(0, str(REPO / "docker" / "emulators"))
from emulators import free_port  # noqa: E402 - stdlib-only launcher

CHROMIUM = os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium")
# Headless Chromium on a machine with no outside network (see docs/troubleshooting.md).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DAG = "recommend_predict"
UI_TIMEOUT_S = 240
UI_STEP_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def stack():
    """`make up` on free ports; `make down --wipe` afterwards (checked by the last test too)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (.ci/run does)")
    state = REPO / ".local" / f"browser-test-{os.getpid()}"
    env = {**os.environ,
           "RECSYS_STACK_DIR": str(state), "RECSYS_API_PORT": str(free_port()),
           "RECSYS_PG_PORT": str(free_port()), "RECSYS_SLACK_PORT": str(free_port()),
           "RECSYS_BQ_EMULATOR_PORT": str(free_port()), "RECSYS_BQ_EMULATOR_GRPC_PORT": str(free_port()),
           "RECSYS_GCS_EMULATOR_PORT": str(free_port()),
           "RECSYS_TASK_RETRIES": "0"}  # a failure is final at once, so the clear test is quick
    started = time.monotonic()
    up = subprocess.run([sys.executable, str(STACK), "up"], env=env, capture_output=True, text=True)
    print(f"\n  make up: {time.monotonic() - started:.0f}s to a healthy UI")
    if up.returncode != 0:
        subprocess.run([sys.executable, str(STACK), "down", "--wipe"], env=env, check=False)
        pytest.fail(f"stack did not come up:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    client = json.loads((state / "env.json").read_text())
    info = {"env": env, "state": state, "url": f"http://127.0.0.1:{env['RECSYS_API_PORT']}",
            "bq": client["BIGQUERY_EMULATOR_HOST"], "gcs": client["STORAGE_EMULATOR_HOST"],
            "seeded": dt.date.fromisoformat((state / "seeded").read_text())}
    yield info
    subprocess.run([sys.executable, str(STACK), "down", "--wipe"], env=env, check=False)


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # Bounds, not delays: on a loaded 2-core machine a page of the UI can take tens of seconds.
        page.set_default_timeout(UI_STEP_TIMEOUT_MS)
        yield page
        browser.close()


def submit_trigger_form(page) -> None:
    """Submit the open trigger form and wait for it to close, which the UI does once the API
    has created the run. If it stays open, fail with what the form shows (the API's error),
    rather than waiting minutes for a run that was never created."""
    dialog = page.get_by_role("dialog")
    page.get_by_test_id("trigger-dag-submit").click()
    try:
        expect(dialog).to_be_hidden(timeout=UI_STEP_TIMEOUT_MS)
    except AssertionError:
        shot(page, "trigger-form-still-open")
        pytest.fail(f"the trigger form did not submit within {UI_STEP_TIMEOUT_MS // 1000}s; it shows: "
                    f"{' | '.join(dialog.all_inner_texts())[:1500]}")


def slack_messages(stack, pick) -> list[str]:
    """The Slack receiver's messages chosen by ``pick``, once there is one. A run-level callback
    is sent by Airflow's dag-processor after the run is marked done, so on a loaded machine it
    can arrive after the UI shows the run's state: wait for it (bounded), as for the run."""
    deadline = time.monotonic() + UI_STEP_TIMEOUT_MS / 1000
    while True:
        received = (stack["state"] / "slack.jsonl").read_text().splitlines()
        chosen = [m for m in (json.loads(line)["text"] for line in received) if pick(m)]
        if chosen or time.monotonic() > deadline:
            return chosen
        time.sleep(1)


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def runs_and_predicts(stack) -> tuple[list[dict], list[dict]]:
    runs = api(stack, f"/api/v2/dags/{DAG}/dagRuns?limit=100")["dag_runs"]
    # publish_predictions is what writes `recommendations` (the predict shards only stage parts).
    tis = api(stack, f"/api/v2/dags/{DAG}/dagRuns/~/taskInstances?task_id=publish_predictions&limit=100")
    return runs, tis["task_instances"]


def _utc(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _fingerprint(tis: list[dict]) -> set[tuple]:
    return {(t["dag_run_id"], t["try_number"], t["state"], t["end_date"]) for t in tis}


def days_match_the_runs(stack) -> tuple[dict, list[dict]]:
    """Check ``recommendations`` against what the runs that exist must have written.

    The scheduler adds runs by the wall clock (one for the latest 05:00 UTC on unpause, one at
    every 05:00), so which days hold what is derived from the runs (run_expectations.py), never
    assumed. Read while no predict may write, and again after: an unchanged set of predict task
    instances around the BigQuery read means the two describe the same moment."""
    deadline = time.monotonic() + UI_TIMEOUT_S
    while time.monotonic() < deadline:
        runs, tis = runs_and_predicts(stack)
        if not still_writing(tis):
            days = recommendation_days(stack)
            if _fingerprint(runs_and_predicts(stack)[1]) == _fingerprint(tis):
                break
        time.sleep(2)
    else:
        pytest.fail(f"predict kept running for {UI_TIMEOUT_S}s: {still_writing(tis)}")
    expected = items_per_user({stack["seeded"]: DEFAULT_N}, writes(runs, tis))
    assert set(days) == set(expected), (days, expected)
    for day, n in expected.items():
        rows, users, slots = days[day]
        assert rows == slots == n * users and users > 100, (day, n, days[day])
    return days, runs


def run_rows(page, stack, wait_ms: int = UI_STEP_TIMEOUT_MS) -> dict[str, str]:
    """run id -> row text, as the Runs tab of the DAG shows them; empty if it shows no run
    within ``wait_ms`` (callers that wait for a run poll again, up to their own deadline)."""
    page.goto(f"{stack['url']}/dags/{DAG}/runs")
    try:
        page.locator("tbody tr").first.wait_for(timeout=wait_ms)
    except PlaywrightTimeout:
        return {}
    out = {}
    page.wait_for_timeout(500)  # let the table settle after navigation
    for text in page.locator("tbody tr").all_inner_texts():
        match = re.search(r"(manual|scheduled|backfill)__\S+", text)
        if match:
            out[match.group(0)] = text
    return out


def wait_for_runs(page, stack, pick, state: str, count: int = 1) -> list[str]:
    """Reload the Runs tab until ``count`` runs chosen by ``pick`` show ``state``. The tab may show
    no run at first: after an unpause, the scheduler creates the run on its next loop, which on
    a loaded machine can take longer than one page wait."""
    deadline = time.monotonic() + UI_TIMEOUT_S
    rows: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = {k: v for k, v in run_rows(page, stack, wait_ms=10_000).items() if pick(k, v)}
        done = [k for k, v in rows.items() if state in v]
        if len(done) >= count:
            return done
        failed = [k for k, v in rows.items() if "Failed" in v and state != "Failed"]
        if failed:
            shot(page, "unexpected-failure")
            pytest.fail(f"runs failed in the UI: {failed}\n" + failed_task_logs(stack, failed))
        time.sleep(2)
    shot(page, "timeout")
    pytest.fail(f"no {count} run(s) reached {state} within {UI_TIMEOUT_S}s: {rows}")


def failed_task_logs(stack, run_ids: list[str], lines: int = 40) -> str:
    """The last lines of each failed task's log in these runs: the stack is wiped afterwards, and
    a screenshot shows that a task failed, not why."""
    out = []
    for run_id in run_ids:
        for ti in api(stack, f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]:
            if ti["state"] != "failed":
                continue
            task_dir = (stack["state"] / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}"
                        / f"task_id={ti['task_id']}")
            for log in sorted(task_dir.rglob("attempt=*.log")):
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.relative_to(stack['state'])}\n" + "\n".join(tail))
    return "\n".join(out) or "(no failed task logs found)"


def unpause_from_the_ui(page, stack) -> None:
    """Click the DAG page's pause toggle once the DAG's details have loaded, then wait (bounded)
    for the API to say unpaused. The toggle sends ``is_paused: !isPaused``: clicked while the
    details are still loading, isPaused is not known yet and the click leaves the DAG paused (a
    loaded CI machine saw no run for 240 s, the toggle still off)."""
    page.goto(f"{stack['url']}/dags/{DAG}")
    expect(page.get_by_text("ml-engineering").first).to_be_visible(timeout=UI_STEP_TIMEOUT_MS)  # the owner
    page.get_by_test_id("toggle-pause").click()
    deadline = time.monotonic() + UI_STEP_TIMEOUT_MS / 1000
    while api(stack, f"/api/v2/dags/{DAG}")["is_paused"]:
        if time.monotonic() > deadline:
            shot(page, "still-paused")
            pytest.fail(f"{DAG} still paused {UI_STEP_TIMEOUT_MS // 1000}s after a click on its toggle")
        time.sleep(1)


def test_login_and_trigger_with_a_changed_parameter(page, stack):
    page.goto(stack["url"])
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin")
    shot(page, "01-login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack['url']}/")

    # Unpause: the scheduler starts a run for the latest 05:00 UTC at once (yesterday's before 05:00).
    unpause_from_the_ui(page, stack)
    wait_for_runs(page, stack, lambda run, _: run.startswith("scheduled__"), "Success")

    page.goto(f"{stack['url']}/dags/{DAG}")
    before = set(run_rows(page, stack))
    page.goto(f"{stack['url']}/dags/{DAG}")
    page.get_by_test_id("trigger-dag-button").click()
    field = page.locator("input[name=element_n_recommendations]")
    assert field.input_value() == "10"  # the param's default, from its schema
    field.fill("3")
    shot(page, "02-trigger-form")
    submit_trigger_form(page)
    [run_id] = wait_for_runs(page, stack, lambda run, _: run.startswith("manual__") and run not in before,
                             "Success")
    shot(page, "03-triggered-run-succeeded")

    # The changed parameter reached the trainer: the run wrote 3 items per user, as its Slack
    # success message reports; the table holds what the runs since (a 05:00 one, say) left.
    [text] = slack_messages(stack, lambda m: m.startswith(f":white_check_mark: *{DAG}*") and run_id in m)
    rows, users = map(int, re.search(r"rows written: (\d+) for (\d+) users", text).groups())
    assert rows == 3 * users and users > 100, text
    days_match_the_runs(stack)

    # The Slack success message of that run links to it in this UI.
    link = re.search(r"<(http[^|>]+)\|Open in Airflow>", text).group(1)
    assert link.startswith(stack["url"])
    page.goto(link)
    page.get_by_text(run_id).first.wait_for()
    expect(page.locator("main, body").first).to_contain_text("Success", timeout=UI_STEP_TIMEOUT_MS)
    shot(page, "03b-slack-link-opens-the-run")


def test_backfill_three_past_dates_from_the_ui(page, stack):
    today = dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=5)
    last = today - dt.timedelta(days=3)
    page.goto(f"{stack['url']}/dags/{DAG}")
    page.get_by_test_id("trigger-dag-button").click()
    page.get_by_text("Backfill", exact=True).click()
    # Whole days: one daily run each, whatever hour the DAG is scheduled at.
    for index, (day, at) in enumerate(((first, "00:00"), (last, "23:59"))):
        trigger = page.get_by_test_id("datetime-input").nth(index)
        trigger.click()
        content_id = trigger.get_attribute("id").replace(":trigger", ":content")
        popover = page.locator(f"[id='{content_id}']")
        popover.get_by_placeholder("YYYY/MM/DD").fill(day.strftime("%Y/%m/%d"))
        popover.get_by_placeholder("HH:mm").fill(at)
        popover.get_by_placeholder("HH:mm").press("Enter")
        page.keyboard.press("Escape")
        popover.wait_for(state="hidden")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("3 runs will be triggered.").wait_for()
    shot(page, "04-backfill-form")
    dialog.get_by_role("button", name="Run Backfill").click()

    wait_for_runs(page, stack, lambda run, _: run.startswith("backfill__"), "Success", count=3)
    shot(page, "05-backfill-succeeded")
    page.goto(f"{stack['url']}/dags/{DAG}/backfills")
    page.locator("tbody tr").first.wait_for()
    shot(page, "06-backfills-tab")

    # Exactly the three days chosen in the form; each run wrote its run date (the day before)
    # once, next to what the other runs wrote.
    days, runs = days_match_the_runs(stack)
    backfilled = sorted(_utc(r["logical_date"]) for r in runs if r["run_type"] == "backfill")
    assert [d.date() for d in backfilled] == [first + dt.timedelta(days=i) for i in range(3)], backfilled
    assert {first - dt.timedelta(days=1) + dt.timedelta(days=i) for i in range(3)} <= set(days)


BACKFILL_TIMEOUT_S = 900  # seven runs, three at a time, publishing one at a time, on 2 loaded cores


def _publishes(stack, run_ids: set[str]) -> list[dict]:
    return [t for t in runs_and_predicts(stack)[1] if t["dag_run_id"] in run_ids]


def _backfill_and_wait(stack, first: dt.date, last: dt.date, reprocess: str) -> list[dict]:
    """Backfill ``first``..``last`` (3 active runs) and wait for the scheduler to mark it
    complete; its runs, each checked successful."""
    # One backfill per DAG at a time: an earlier one must be marked complete (by the scheduler,
    # after its runs) before another can be created.
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while any(b["completed_at"] is None for b in api(stack, f"/api/v2/backfills?dag_id={DAG}")["backfills"]):
        assert time.monotonic() < deadline, "an earlier backfill was never marked complete"
        time.sleep(2)
    backfill = api(stack, "/api/v2/backfills", {
        "dag_id": DAG, "from_date": f"{first}T00:00:00Z", "to_date": f"{last}T23:59:00Z",
        "max_active_runs": 3, "reprocess_behavior": reprocess, "run_backwards": False, "dag_run_conf": {}})
    assert backfill["max_active_runs"] == 3  # not the DAG's 1: only the pool serializes writers
    while api(stack, f"/api/v2/backfills/{backfill['id']}")["completed_at"] is None:
        assert time.monotonic() < deadline, f"backfill {backfill['id']} not complete in {BACKFILL_TIMEOUT_S}s"
        time.sleep(2)
    runs = [r for r in runs_and_predicts(stack)[0]
            if r["run_type"] == "backfill" and first <= _utc(r["logical_date"]).date() <= last]
    assert sorted(_utc(r["logical_date"]).date() for r in runs) == [
        first + dt.timedelta(days=i) for i in range((last - first).days + 1)], runs
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    return runs


def test_a_seven_day_backfill_run_twice_writes_each_day_once_and_one_writer_at_a_time(page, stack):
    """Seven dates backfilled with three active runs, then the same seven again with
    reprocessing of completed runs, so 14 runs really execute. A backfill has its own
    max_active_runs (the DAG's 1 does not apply), so only the one-slot writers' pool keeps the
    publishes apart. Both times: exactly the seven days, the same row counts, no overlap."""
    pool = api(stack, "/api/v2/pools/recsys_bigquery_writers")
    assert (pool["slots"], pool["include_deferred"]) == (1, True), pool
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=19)
    last = first + dt.timedelta(days=6)
    run_dates = {first - dt.timedelta(days=1) + dt.timedelta(days=i) for i in range(7)}  # the days before

    executions, counts = [], []
    for reprocess in ("none", "completed"):
        started = time.monotonic()
        runs = _backfill_and_wait(stack, first, last, reprocess)
        print(f"\n  backfill of 7 dates (reprocess {reprocess}): {time.monotonic() - started:.0f}s")
        publishes = _publishes(stack, {r["dag_run_id"] for r in runs})
        assert len(publishes) == 7 and all(t["state"] == "success" for t in publishes), publishes
        executions += [(t["dag_run_id"], t["try_number"], _utc(t["start_date"]), _utc(t["end_date"]))
                       for t in publishes]
        days, _ = days_match_the_runs(stack)
        counts.append({day: days[day] for day in run_dates})
    page.goto(f"{stack['url']}/dags/{DAG}/backfills")
    page.locator("tbody tr").first.wait_for()
    shot(page, "06b-backfill-seven-days-twice")

    assert len(set(executions)) == 14, executions  # the second pass really ran every publish again
    windows = sorted((start, end) for _, _, start, end in executions)
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, f"publishes overlapped: {windows}"
    assert counts[0] == counts[1], counts  # exactly the seven days, identical both times
    assert set(counts[0]) == run_dates and all(rows == slots for rows, _, slots in counts[0].values())


def test_clear_a_failed_task_and_see_it_rerun(page, stack):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(project="local-project", credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": stack["gcs"]})
    bucket = gcs.bucket("recsys-artifacts")
    pointer = json.loads(bucket.blob("recsys/models/LATEST").download_as_bytes())
    model = bucket.blob(pointer["model_uri"].removeprefix("gs://recsys-artifacts/") + "/model.npz")
    good = model.download_as_bytes()
    model.upload_from_string(b"damaged")  # predict refuses a model failing its checksum
    try:
        before = set(run_rows(page, stack))
        page.goto(f"{stack['url']}/dags/{DAG}")
        page.get_by_test_id("trigger-dag-button").click()
        submit_trigger_form(page)
        [run_id] = wait_for_runs(page, stack, lambda run, _: run.startswith("manual__") and run not in before,
                                 "Failed")
    finally:
        model.upload_from_string(good)  # the operator fixes the cause, then clears the task

    page.goto(f"{stack['url']}/dags/{DAG}/runs/{run_id}")
    row = page.locator("tbody tr", has=page.get_by_role("link", name="predict", exact=True))
    # The UI renders state names once its translations have loaded: wait for the text.
    expect(row).to_contain_text("Failed", timeout=UI_STEP_TIMEOUT_MS)
    shot(page, "07-failed-task")
    row.get_by_role("button", name="Clear Task Instance").click()
    dialog = page.get_by_role("dialog")
    # The failed shard and, downstream by default, the publishing task it held back.
    expect(dialog).to_contain_text("Affected Tasks: 2", timeout=UI_STEP_TIMEOUT_MS)
    expect(dialog).to_contain_text("publish_predictions", timeout=UI_STEP_TIMEOUT_MS)
    shot(page, "08-clear-dialog")
    dialog.get_by_role("button", name="Confirm").click()
    # The dialog closes once the clear has been applied (the run queued again); until then the
    # Runs tab may still show the run as failed.
    expect(dialog).to_be_hidden(timeout=UI_STEP_TIMEOUT_MS)
    wait_for_runs(page, stack, lambda run, _: run == run_id, "Success")
    page.goto(f"{stack['url']}/dags/{DAG}/runs/{run_id}")
    row = page.locator("tbody tr", has=page.get_by_role("link", name="predict", exact=True))
    row.wait_for()
    expect(row).to_contain_text("Success", timeout=UI_STEP_TIMEOUT_MS)
    shot(page, "09-cleared-task-succeeded")


def sign_in(page, stack) -> None:
    """Sign in as the stack's admin unless this browser already is."""
    page.goto(stack["url"])
    login = page.get_by_label("Username")
    page.wait_for_load_state("networkidle")
    if login.count():
        login.fill("admin")
        page.get_by_label("Password").fill("admin")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{stack['url']}/")


def _latest_pointer(stack) -> dict:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(project="local-project", credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": stack["gcs"]})
    return json.loads(gcs.bucket("recsys-artifacts").blob("recsys/models/LATEST").download_as_bytes())


def _train_history(stack) -> list[dict]:
    """Two more recommend_train runs through Airflow besides the scheduler's own: an older day
    (passes, is not published: older than the published model) and a day trained with one
    factor and heavy regularization (no better than popularity: fails evaluation)."""
    api(stack, f"/api/v2/dags/{DAG}", {"is_paused": True}, method="PATCH")  # nothing to predict here
    for dag in ("recommend_train", "recommend_rollback"):
        api(stack, f"/api/v2/dags/{dag}", {"is_paused": False}, method="PATCH")
    today = dt.datetime.now(dt.UTC).date()
    for days, conf in ((7, {"lookback_days": 14}),
                       (6, {"lookback_days": 14, "factors": 1, "iterations": 1, "regularization": 100})):
        api(stack, "/api/v2/dags/recommend_train/dagRuns",
            {"logical_date": f"{today - dt.timedelta(days=days)}T03:00:00Z", "conf": conf})
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while True:
        runs = api(stack, "/api/v2/dags/recommend_train/dagRuns?limit=50")["dag_runs"]
        if len(runs) >= 3 and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        assert time.monotonic() < deadline, [(r["dag_run_id"], r["state"]) for r in runs]
        time.sleep(2)


def test_the_recommender_page_charts_the_models_links_their_runs_and_rolls_back(page, stack):
    """Runs before the dead-worker test, which leaves the stack without a scheduler."""
    runs = _train_history(stack)
    assert sorted(r["state"] for r in runs).count("failed") == 1, runs
    violations, policies = _watch_the_content_security_policy(page)
    sign_in(page, stack)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Recommender").click()
    frame = page.frame_locator("iframe[title=Recommender]")
    points = frame.locator("#chart-recall circle.point")
    points.first.wait_for()
    shot(page, "10-recommender-overview")
    # The watch sees a violation when there is one: an inline script added to the page is refused.
    page.frame_locator("iframe[title=Recommender]").locator("body").evaluate(
        "b => { const s = document.createElement('script'); s.textContent = 'window.ran = 1'; b.append(s); }")
    deadline = time.monotonic() + UI_STEP_TIMEOUT_MS / 1000
    while not any(v["how"] == "console" for v in violations) and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # the browser's report arrives asynchronously
    # Chromium's console report is what always arrives (the sandboxed frame's event may not).
    assert any(v["how"] == "console" for v in violations), violations
    assert frame.locator("body").evaluate("() => window.ran") is None
    # The injected script's own reports may still arrive: its console line names the script's
    # hash, which no other inline script shares, so exactly those are set aside.
    injected = {v["text"] for v in violations if v["how"] == "console"}
    violations.clear()

    # Every model of the last 30 days is drawn, at its run date, with the value model_metrics holds.
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)
    rows = [dict(r) for r in bigquery_client(stack).query(
        "SELECT model_id, run_date, verdict, airflow_run_id, model_recall, popularity_recall "
        "FROM `local-project.recsys.model_metrics` WHERE run_date >= @since",
        job_config=_since(since)).result()]
    assert len({r["run_date"] for r in rows}) >= 2, rows
    drawn = sorted((c.get_attribute("data-series"), c.get_attribute("data-day"),
                    float(c.get_attribute("data-value"))) for c in points.all())
    expected = sorted([("model", str(r["run_date"]), r["model_recall"]) for r in rows]
                      + [("popularity", str(r["run_date"]), r["popularity_recall"]) for r in rows])
    assert [d[:2] for d in drawn] == [e[:2] for e in expected]
    assert all(abs(d[2] - e[2]) < 1e-12 for d, e in zip(drawn, expected, strict=True)), (drawn, expected)
    failed = [r for r in rows if r["verdict"] == "fail"]
    marked = frame.locator("#chart-recall circle[data-series=model][data-marked]")
    assert [c.get_attribute("data-day") for c in marked.all()] == [str(r["run_date"]) for r in failed]

    # An older model that passed and is not published: its page, its run, its rollback.
    published = _latest_pointer(stack)["model_id"]
    older = next(r for r in rows if r["verdict"] == "pass" and r["model_id"] != published
                 and r["airflow_run_id"])
    frame.locator("#models").get_by_role("link", name=older["model_id"], exact=True).click()
    frame.locator("#rollback").wait_for()
    shot(page, "11-recommender-model")
    frame.locator("ol.lineage").get_by_role("link", name=older["airflow_run_id"], exact=True).first.click()
    page.wait_for_url(re.compile(r"/dags/recommend_train/runs/"))  # Airflow's own run page, not framed
    expect(page.locator("main, body").first).to_contain_text(older["airflow_run_id"],
                                                             timeout=UI_STEP_TIMEOUT_MS)
    shot(page, "12-lineage-link-opens-the-run")
    page.go_back()
    frame.locator("#rollback").click()
    result = frame.locator("#rollback-result[data-run-id]")
    result.wait_for()
    rollback_run = result.get_attribute("data-run-id")
    deadline = time.monotonic() + UI_TIMEOUT_S
    path = f"/api/v2/dags/recommend_rollback/dagRuns/{rollback_run}"
    while (state := api(stack, path)["state"]) != "success":
        assert state != "failed" and time.monotonic() < deadline, f"{rollback_run}: {state}"
        time.sleep(2)
    pointer = _latest_pointer(stack)
    assert (pointer["model_id"], pointer["previous_model_id"]) == (older["model_id"], published)
    shot(page, "13-recommender-rolled-back")

    # A model that failed evaluation offers no rollback.
    [bad] = failed
    frame.locator("a", has_text="Recommender").first.click()
    frame.locator("#models").get_by_role("link", name=bad["model_id"], exact=True).click()
    frame.locator("#no-rollback").wait_for()
    assert frame.locator("#rollback").count() == 0
    shot(page, "14-recommender-failed-model")

    # Every page and the report came with its policy, and nothing on them broke it.
    kinds = {kind for kind, _ in policies}
    assert kinds >= {"overview", "model", "report"}, policies
    for kind, policy in policies:
        assert "frame-ancestors 'self'" in policy, (kind, policy)
        if kind == "report":  # a stored file: no script at all, its inline styles in a sandbox
            assert "sandbox" in policy and "default-src 'none'" in policy, policy
        else:
            assert "default-src 'self'" in policy and "unsafe" not in policy, (kind, policy)
    late = [v for v in violations if v.get("text") in injected]  # the injected script's, arriving late
    assert [v for v in violations if v not in late] == [], violations


def _watch_the_content_security_policy(page) -> tuple[list[dict], list[tuple[str, str]]]:
    """Every ``securitypolicyviolation`` event of any frame of ``page`` (an init script runs in
    each frame), every console line about the policy (a frame without script, the report, logs
    them too), and the policy each Recommender document came with."""
    violations: list[dict] = []
    policies: list[tuple[str, str]] = []
    page.expose_binding("recsysViolation", lambda source, v: violations.append({"how": "event", **v}))
    page.add_init_script("""document.addEventListener('securitypolicyviolation', (e) =>
        window.recsysViolation({directive: e.violatedDirective, blocked: e.blockedURI,
                                page: document.location.pathname}));""")
    page.on("console", lambda m: violations.append({"how": "console", "text": m.text})
            if "Content Security Policy" in m.text else None)

    def document(response) -> None:
        path = response.url.split("?")[0]
        if response.request.resource_type == "document" and "/recommender/" in path:
            kind = "report" if path.endswith("/report") else "model" if "/models/" in path else "overview"
            policies.append((kind, response.headers.get("content-security-policy", "")))

    page.on("response", document)
    return violations, policies


def _since(day: dt.date):
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("since", "DATE", day)])


def _proc_field(pid: int, index: int) -> str:
    """A field of /proc/PID/stat after the command name (0: state, 1: parent pid)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[index]


def _alive(pid: int) -> bool:
    try:
        return _proc_field(pid, 0) != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found by their parent pid in /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents.setdefault(int(_proc_field(int(proc.name), 1)), []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


STEP = b"trainer.predict_window_task"


def _predict_trainer(state: Path) -> tuple[int, str, int] | None:
    """(pid, run id, try number) of the predict DAG's first step that reads BigQuery
    (predict_window) in the stack, if one is running.

    The step sees only the trainer's environment (operators/launchers/local.py INHERITED_ENV: RECSYS_*, no
    AIRFLOW_*), so the stack is recognised by RECSYS_STACK_DIR and the run by the attempt's
    RECSYS_ variables."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or STEP not in (proc / "cmdline").read_bytes():
                continue
            env = _environ(int(proc.name))
        except OSError:
            continue
        ours = Path(env.get("RECSYS_STACK_DIR", "/")).resolve() == state.resolve()
        if ours and "RECSYS_AIRFLOW_RUN_ID" in env:
            return int(proc.name), env["RECSYS_AIRFLOW_RUN_ID"], int(env["RECSYS_TRY_NUMBER"])
    return None


def test_a_dead_worker_and_scheduler_leave_no_trainer_and_airflow_reruns_the_task(stack):
    """predict_window's worker process (the task's supervisor) is SIGKILLed mid-step, then the
    scheduler. The trainer, in its own session, must not live on (operators/lifeline.py); a new
    scheduler (with a short orphan check, as Composer's restarted scheduler would run it at its
    defaults) finds the task orphaned by Airflow's own heartbeat handling and runs it again; the
    run succeeds, and the next run is clean. The step is held mid-run by freezing the BigQuery
    emulator (SIGSTOP) before the run starts: the step starts, ties itself to its task, logs,
    and waits on its first query, whatever the machine's speed; the emulator is thawed after.

    The scheduler dies as it does when its container, pod or systemd unit goes: with everything
    below it (LocalExecutor's other workers, its log server). Killing its pid alone is not that,
    and hangs the rerun at random: the workers it forked hold its database socket (Airflow's
    at-fork handler drops the pool without closing it), so a transaction it died in stays open
    with its dag_run row locks, and the new scheduler skips that run forever (SKIP LOCKED)."""
    api(stack, f"/api/v2/dags/{DAG}", {"is_paused": False}, method="PATCH")  # unpaused by the first test
    emulator = int((stack["state"] / "emulators" / "bigquery.pid").read_text())
    os.kill(emulator, signal.SIGSTOP)
    try:
        api(stack, f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
        # Whichever run's step starts first (a 05:00 run may be ahead of this one).
        deadline = time.monotonic() + UI_TIMEOUT_S
        while (found := _predict_trainer(stack["state"])) is None:
            assert time.monotonic() < deadline, f"no predict_window started within {UI_TIMEOUT_S}s"
            time.sleep(0.2)
        trainer, run_id, first_try = found
        log = (stack["state"] / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}"
               / "task_id=predict_window" / f"attempt={first_try}.log")
        while not (log.exists() and "step predict_window_task starting" in log.read_text()):  # tied to it
            assert time.monotonic() < deadline, f"predict_window of {run_id} did not log its start: {log}"
            time.sleep(0.2)
        task = int(_proc_field(trainer, 1))
        supervisor = int(_proc_field(task, 1))
        scheduler = int(_proc_field(supervisor, 1))
        assert b"scheduler" in Path(f"/proc/{scheduler}/cmdline").read_bytes(), "not LocalExecutor's tree"
        env, cwd = _environ(scheduler), os.readlink(f"/proc/{scheduler}/cwd")

        os.kill(scheduler, signal.SIGSTOP)  # forks no worker to replace the dead one
        os.kill(supervisor, signal.SIGKILL)
        started = time.monotonic()
        while _alive(supervisor):  # dead: its task and trainer have left the scheduler's tree
            assert time.monotonic() - started < 60, f"the worker {supervisor} survived SIGKILL"
            time.sleep(0.05)
        for pid in [scheduler, *_descendants(scheduler)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        while (alive := [p for p in (trainer, task) if _alive(p)]) and time.monotonic() - started < 60:
            time.sleep(0.2)
        assert not alive, f"the trainer {trainer} or its task {task} outlived the dead worker"
        print(f"\n  dead worker: its trainer gone after {time.monotonic() - started:.1f}s")
    finally:
        os.kill(emulator, signal.SIGCONT)

    scheduler_out = (stack["state"] / "scheduler-restarted.log").open("w")
    restarted = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "scheduler"],
        stdout=scheduler_out, stderr=subprocess.STDOUT,
        env={**env, "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5",
             "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60"},
        cwd=cwd,
        start_new_session=True)
    try:
        deadline = time.monotonic() + UI_TIMEOUT_S + 60
        while (run := api(stack, f"/api/v2/dags/{DAG}/dagRuns/{run_id}"))["state"] != "success":
            assert run["state"] != "failed", _failed_logs(stack, run_id)
            assert time.monotonic() < deadline, (
                f"{run_id} not done: {_states_of(stack, run_id)}; the restarted scheduler "
                f"(exit {restarted.poll()}) logged:\n"
                + "\n".join(line for line in (stack["state"] / "scheduler-restarted.log").read_text()
                            .splitlines() if "Adopting or resetting orphaned" not in line)[-8000:])
            time.sleep(2)
        step = api(stack, f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/predict_window")
        assert step["try_number"] > first_try, step  # Airflow ran it again, not the dead try
        scheduler_log = (stack["state"] / "scheduler-restarted.log").read_text()
        assert "orphaned" in scheduler_log or "without a heartbeat" in scheduler_log, scheduler_log[-3000:]

        # The next run is clean: it succeeds and the table holds exactly what the runs wrote.
        nxt = api(stack, f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})["dag_run_id"]
        deadline = time.monotonic() + UI_TIMEOUT_S
        while (run := api(stack, f"/api/v2/dags/{DAG}/dagRuns/{nxt}"))["state"] != "success":
            assert run["state"] != "failed", _failed_logs(stack, nxt)
            assert time.monotonic() < deadline, f"{nxt} not done: {_states_of(stack, nxt)}"
            time.sleep(2)
        days_match_the_runs(stack)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(restarted.pid, signal.SIGTERM)
        try:
            restarted.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(restarted.pid, signal.SIGKILL)
        scheduler_out.close()


def _failed_logs(stack, run_id: str) -> str:
    """The last lines of each failed task's log in ``run_id``: what a failed assertion needs."""
    tis = api(stack, f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    out = [str(_states_of(stack, run_id))]
    for t in tis:
        if t["state"] == "failed":
            folder = (stack["state"] / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}"
                      / f"task_id={t['task_id']}")
            for log in sorted(folder.rglob("attempt=*.log")):
                out += [f"--- {log.relative_to(folder)}", *log.read_text(errors="replace").splitlines()[-30:]]
    return "\n".join(out)


def _states_of(stack, run_id: str) -> dict[str, str]:
    tis = api(stack, f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {f"{t['task_id']}[{t['map_index']}]": f"{t['state']} (try {t['try_number']})" for t in tis}


def _processes_of(state: Path) -> list[str]:
    """Processes whose environment or command line points into the stack's directory (or its
    PostgreSQL cluster, which may live elsewhere)."""
    marks = [str(state).encode()]
    if (state / "postgres.path").exists():
        marks.append((state / "postgres.path").read_bytes())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
            status = (proc / "stat").read_text().split(") ")[-1].split()[0]
        except OSError:
            continue
        if any(mark in blob for mark in marks) and status != "Z":
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:120]!r}")
    return found


def test_make_down_leaves_no_process_behind(stack):
    assert _processes_of(stack["state"]), "expected the running stack's processes to be visible"
    started = time.monotonic()
    subprocess.run([sys.executable, str(STACK), "down"], env=stack["env"], check=True)
    print(f"\n  make down: {time.monotonic() - started:.0f}s")
    time.sleep(1)
    assert _processes_of(stack["state"]) == []
    cluster = Path((stack["state"] / "postgres.path").read_text())
    assert (cluster / "PG_VERSION").exists()  # data kept unless --wipe
