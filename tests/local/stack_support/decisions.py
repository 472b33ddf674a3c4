"""An anomalous day's decision on a running stack (`make up`, docker/local/stack.py): the day
seeded in its emulators, recommend_train triggered for it, the decision waited for, answered
through the REST API, and what the run left. Shared by the REST test on Airflow 3.1 and the
browser test on 3.3."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from stack_support.stack_client import api, bigquery_client

REPO = Path(__file__).resolve().parents[3]
STACK = REPO / "docker" / "local" / "stack.py"
TRAINER_PY = REPO / ".venv" / "trainer" / "bin" / "python"
CONF = {"lookback_days": 20, "factors": 16, "iterations": 8, "tune": "off"}
WAIT_S = 600
# Where the task waits: 3.1 defers it to the provider's trigger, 3.3 parks it.
WAITING = ("deferred", "awaiting_input")


def start_stack(name: str, **extra_env: str) -> dict:
    """`make up` on free ports in a folder of its own (a developer's own `make up` is left alone)."""
    sys.path.insert(0, str(REPO / "docker" / "emulators"))
    from emulators import free_port

    state = REPO / ".local" / f"{name}-{os.getpid()}"
    env = {**os.environ, "RECSYS_STACK_DIR": str(state), "RECSYS_API_PORT": str(free_port()),
           "RECSYS_PG_PORT": str(free_port()), "RECSYS_SLACK_PORT": str(free_port()),
           "RECSYS_BQ_EMULATOR_PORT": str(free_port()), "RECSYS_BQ_EMULATOR_GRPC_PORT": str(free_port()),
           "RECSYS_GCS_EMULATOR_PORT": str(free_port()), "RECSYS_TASK_RETRIES": "0", **extra_env}
    up = subprocess.run([sys.executable, str(STACK), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        subprocess.run([sys.executable, str(STACK), "down", "--wipe"], env=env, check=False)
        pytest.fail(f"stack did not come up:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    client = json.loads((state / "env.json").read_text())
    return {"env": env, "state": state, "url": f"http://127.0.0.1:{env['RECSYS_API_PORT']}",
            "bq": client["BIGQUERY_EMULATOR_HOST"], "client_env": client}


def stop_stack(stack: dict) -> None:
    subprocess.run([sys.executable, str(STACK), "down", "--wipe"], env=stack["env"], check=False)


def token(stack: dict, username: str, password: str) -> str:
    """A bearer token of one of the stack's logins."""
    request = urllib.request.Request(
        f"{stack['url']}/auth/token", headers={"Content-Type": "application/json"},
        data=json.dumps({"username": username, "password": password}).encode())
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


def patch_as(stack: dict, bearer: str, path: str, body: dict) -> int:
    """PATCH ``body`` on ``path`` with ``bearer``'s token; the HTTP status."""
    request = urllib.request.Request(f"{stack['url']}{path}", data=json.dumps(body).encode(), method="PATCH",
                                     headers={"Authorization": f"Bearer {bearer}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def until(what: str, check, timeout_s: float = WAIT_S):
    """``check()``'s first truthy value, polled every 2 s; fails naming ``what`` after the bound."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


def anomalous_run(stack: dict, day: dt.date) -> str:
    """Seed ``day`` with a bot making half its events, trigger recommend_train for it; the task
    path of its approve_anomalous_day once it waits for a decision."""
    subprocess.run([str(TRAINER_PY), "-m", "trainer.seed_events", "--project", "local-project", "--dataset",
                    "recsys", "--end-date", str(day), "--days", "20", "--users", "600", "--items", "120",
                    "--events", "40000", "--clusters", "6", "--anomaly", "bot=0.5", "--log-level", "WARNING"],
                   check=True, env={**os.environ, **stack["client_env"]})
    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(3), tzinfo=dt.UTC)
    run = api(stack, "/api/v2/dags/recommend_train/dagRuns",
              {"logical_date": logical.isoformat(), "conf": CONF})
    api(stack, "/api/v2/dags/recommend_train", {"is_paused": False}, method="PATCH")  # new DAGs start paused
    task = (f"/api/v2/dags/recommend_train/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
            "/taskInstances/approve_anomalous_day")
    until("the decision to wait", lambda: api(stack, task).get("state") in WAITING)
    return task


def ended(stack: dict, run_id: str) -> dict:
    """The run once it has ended (bounded wait)."""
    path = f"/api/v2/dags/recommend_train/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    return until("the run to end", lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
        api(stack, path)))


def states(stack: dict, run_id: str) -> dict[str, str]:
    path = f"/api/v2/dags/recommend_train/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
    return {t["task_id"]: t["state"] for t in api(stack, path)["task_instances"]}


def event_stats(stack: dict, day: dt.date) -> dict:
    [row] = bigquery_client(stack).query(
        "SELECT status, accepted, accepted_by, accept_reason FROM `local-project.recsys.event_stats` "
        f"WHERE run_date = '{day}'").result()
    return dict(row.items())


def slack_texts(stack: dict) -> list[str]:
    return [json.loads(line)["text"] for line in (stack["state"] / "slack.jsonl").read_text().splitlines()]
