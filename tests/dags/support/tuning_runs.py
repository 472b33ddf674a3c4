"""Tuning on its schedule through a runtime: the check test_end_to_end (local),
test_launchers_end_to_end (vertex, docker's launcher) and tests/docker (a real engine) share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Train = Callable[[dt.date, dict], Any]  # (run date, conf) -> the finished recommend_train run
Rows = Callable[[str], list[dict]]  # SQL -> rows


def check_tuning_schedule(train: Train, rows: Rows, states: Callable[[Any], dict[str, str]],
                          table: Callable[[str], str], day: dt.date) -> None:
    """With ``tune`` weekly: the first run searches (its trials in ``tuning_trials``, one winner,
    ``model_metrics`` saying so); a run two days later, whose last training day is the first
    run's date, reuses those settings and names the model they came from (``tune`` off, today's
    settings: every other test of the suites). ``day``'s 22-day window must hold events."""
    first = train(day, {"tune": "weekly"})
    assert {t: states(first).get(t) for t in ("train", "evaluate")} == {
        "train": "success", "evaluate": "success"}, states(first)
    trials = rows(f"SELECT * FROM `{table('tuning_trials')}` WHERE run_date = '{day}' ORDER BY trial")
    assert len(trials) > 1 and sum(t["winner"] for t in trials) == 1, trials
    [searched] = rows(f"SELECT * FROM `{table('model_metrics')}` WHERE run_date = '{day}'")
    assert (searched["tuning_source"], searched["tuned_on"]) == ("search", day), searched
    assert {t["model_id"] for t in trials} == {searched["model_id"]}

    later = day + dt.timedelta(days=2)
    second = train(later, {"tune": "weekly"})
    assert states(second).get("train") == "success", states(second)
    [reused] = rows(f"SELECT * FROM `{table('model_metrics')}` WHERE run_date = '{later}'")
    assert (reused["tuning_source"], reused["tuned_on"], reused["tuned_model_id"]) == (
        "reused", day, searched["model_id"]), reused
    assert rows(f"SELECT trial FROM `{table('tuning_trials')}` WHERE run_date = '{later}'") == []
