"""An anomalous day decided through Airflow's REST API on the oldest supported Airflow (3.1, Cloud
Composer 3's line): `make up`'s stack (docker/local/stack.py) run from .venv/airflow-3.1 on free
ports, so the approval defers to the standard provider's trigger in a real triggerer, as on
Composer. A read-only user is refused; the admin's approval trains on the day and is recorded
with its reason; a second anomalous day rejected fails naming the rule."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from stack_support.decisions import (
    REPO,
    anomalous_run,
    ended,
    event_stats,
    patch_as,
    slack_texts,
    start_stack,
    states,
    stop_stack,
    token,
)
from stack_support.stack_client import api

DAYS = {"Approve": dt.date(2026, 9, 10), "Reject": dt.date(2026, 10, 10)}  # before the stack's seeded days


@pytest.fixture(scope="module")
def stack():
    info = start_stack("decisions-test", RECSYS_STACK_AIRFLOW_VENV=str(REPO / ".venv" / "airflow-3.1"))
    yield info
    # The stack's logs outlive it (test-artifacts/decisions/): a failed decision is read there.
    keep = REPO / "test-artifacts" / "decisions"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(info["state"], keep, ignore=shutil.ignore_patterns("emulators", "postgres", "*.pid"),
                    dirs_exist_ok=True)
    stop_stack(info)


def _decide(stack, option: str) -> tuple[dict, dict]:
    """Seed an anomalous day, trigger its run, answer its decision as the viewer then the admin;
    the finished run and the decision's detail."""
    task = anomalous_run(stack, DAYS[option])
    assert api(stack, task)["state"] == "deferred"  # 3.1: the provider's trigger waits, in the triggerer
    detail = api(stack, f"{task}/-1/hitlDetails")
    body = {"chosen_options": [option], "params_input": {"reason": f"{option}d in the REST test"}}
    assert patch_as(stack, token(stack, "viewer", "viewer"), f"{task}/-1/hitlDetails", body) == 403
    assert api(stack, f"{task}/-1/hitlDetails").get("responded_at") is None  # the refusal changed nothing
    assert patch_as(stack, token(stack, "admin", "admin"), f"{task}/-1/hitlDetails", body) == 200
    return ended(stack, api(stack, task)["dag_run_id"]), detail


def test_an_approved_day_trains_and_records_the_approver(stack):
    run, detail = _decide(stack, "Approve")
    assert "broke 1 anomaly rule" in detail["subject"] and "bot" in detail["body"], detail
    assert run["state"] == "success", (states(stack, run["dag_run_id"]), slack_texts(stack)[-5:])
    assert event_stats(stack, DAYS["Approve"]) == {
        "status": "accepted", "accepted": True, "accepted_by": "admin",
        "accept_reason": "Approved in the REST test"}


def test_a_rejected_day_fails_naming_the_rule_and_trains_nothing(stack):
    run, _ = _decide(stack, "Reject")
    assert run["state"] == "failed", run
    found = states(stack, run["dag_run_id"])
    assert found["approve_anomalous_day"] == "failed" and found["create_cf_matrices"] == "upstream_failed"
    day = DAYS["Reject"]
    head = "Task *approve_anomalous_day* of *recommend_train* failed"
    [failed] = [t for t in slack_texts(stack) if head in t and str(day) in t]
    assert f"rejected by admin: events of {day} look wrong, nothing trained: user 'bot' made" in failed
    assert event_stats(stack, day)["status"] == "anomaly"
