"""Run dates a step must refuse: today and later (their events are not complete; a future day
written to ``recommendations`` would be served as the newest), through every step's real entry
point, with the clock the tests set (``RECSYS_TODAY``)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import pkgutil
from pathlib import Path

import pytest
from google.api_core.exceptions import NotFound

import trainer

# Every step that takes --run-date; test_the_run_date_steps_are_all_covered keeps it complete.
RUN_DATE_STEPS = ("create_cf_matrices_task", "train_task", "evaluate_task", "promote_model_task",
                  "predict_window_task", "predict_task", "publish_predictions_task", "feedback_task",
                  "forget_user_task", "report")
REQUIRED = {"publish_predictions_task": ["--n-shards", "1"],  # beyond --run-date
            "forget_user_task": ["--user-id", "u1"]}
TODAY = dt.date(2027, 4, 1)  # the clock of these tests; the real date plays no part


def _options(module_name: str) -> dict[str, argparse.Action]:
    module = importlib.import_module(f"trainer.{module_name}")
    return module.build_parser()._option_string_actions if hasattr(module, "build_parser") else {}


def _argv(module_name: str, run_date: str, artifacts: Path) -> list[str]:
    argv = ["--run-date", run_date, *REQUIRED.get(module_name, [])]
    if "--artifacts-uri" in _options(module_name):
        argv += ["--artifacts-uri", str(artifacts)]
    return argv


def _written(bq_client, project: str, dataset: str, artifacts: Path) -> tuple[list[str], list[str]]:
    """The dataset's tables and the artifact files other than status records."""
    try:
        tables = sorted(t.table_id for t in bq_client.list_tables(f"{project}.{dataset}"))
    except NotFound:
        tables = []
    files = sorted(str(p.relative_to(artifacts)) for p in artifacts.rglob("*")
                   if p.is_file() and p.parent.name != "status")
    return tables, files


def test_the_run_date_steps_are_all_covered():
    found = {m.name for m in pkgutil.iter_modules(trainer.__path__) if "--run-date" in _options(m.name)}
    assert found == set(RUN_DATE_STEPS)


@pytest.mark.parametrize("module_name", RUN_DATE_STEPS)
def test_every_step_refuses_today_and_future_run_dates_in_one_permanent_line_writing_nothing(
        module_name, step, bq_client, project, dataset, tmp_path, monkeypatch):
    """Today and 19 days ahead (the issue's case): exit 2, the last line names the run date and
    today, nothing in BigQuery (not even the dataset) and no artifact but the status record the
    launchers read the outcome from (a Vertex step without one would be retried)."""
    monkeypatch.setenv("RECSYS_TODAY", TODAY.isoformat())
    artifacts = tmp_path / "artifacts"
    for day in (TODAY, TODAY + dt.timedelta(days=19)):
        rc, err = step(module_name, *_argv(module_name, day.isoformat(), artifacts))
        last = err.strip().splitlines()[-1]
        assert rc == 2, err
        assert last.startswith(f"ERROR: {module_name}: "), err
        assert f"run date {day} is not before today ({TODAY}, UTC)" in last, last
        assert "Traceback" not in err
        if "--artifacts-uri" in _options(module_name):
            assert (artifacts / "runs" / str(day) / "status" / f"{module_name}.json").exists()
    assert _written(bq_client, project, dataset, artifacts) == ([], [])


def test_the_day_before_today_is_accepted(step, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_TODAY", TODAY.isoformat())
    yesterday = (TODAY - dt.timedelta(days=1)).isoformat()
    for module_name in RUN_DATE_STEPS:
        rc, err = step(module_name, *_argv(module_name, yesterday, tmp_path), "--validate-only")
        assert rc == 0, err


def test_the_clock_is_the_utc_date_unless_the_environment_sets_it(monkeypatch):
    from trainer.core import clock
    from trainer.core.errors import TrainerError

    monkeypatch.delenv("RECSYS_TODAY", raising=False)
    before = dt.datetime.now(dt.UTC).date()
    today = clock.today()
    assert before <= today <= dt.datetime.now(dt.UTC).date()
    monkeypatch.setenv("RECSYS_TODAY", "2031-02-03")
    assert clock.today() == dt.date(2031, 2, 3)
    monkeypatch.setenv("RECSYS_TODAY", "tomorrow")
    with pytest.raises(TrainerError, match="RECSYS_TODAY='tomorrow' is not a date"):
        clock.today()


@pytest.mark.parametrize("module_name", RUN_DATE_STEPS)
def test_out_of_range_run_dates_are_one_line_permanent_errors(module_name, step, tmp_path, monkeypatch):
    """``--run-date 0001-01-15`` (the issue's case: a window reaching before year 1 raised
    OverflowError, a crash, retried) and every day before 1970-01-01, the earliest run date
    (trainer/data/date_windows.py says why): the one-line permanent error of any other bad argument."""
    monkeypatch.setenv("RECSYS_TODAY", TODAY.isoformat())
    for day in ("0001-01-15", "0001-01-01", "1969-12-31"):
        rc, err = step(module_name, *_argv(module_name, day, tmp_path))
        assert rc == 2, err
        assert "Traceback" not in err and "OverflowError" not in err, err
        assert err.strip().splitlines()[-1] == (
            f"ERROR: {module_name}: bad arguments: argument --run-date: run date {day} is before "
            "1970-01-01, the earliest run date"), err


@pytest.mark.parametrize("module_name, argv", [
    ("create_cf_matrices_task", ["--run-date", "2027-03-01", "--lookback-days", "1000000"]),
    ("create_cf_matrices_task", ["--run-date", "2027-03-01", "--lookback-days", str(10 ** 30)]),
    ("predict_task", ["--run-date", "2027-03-01", "--lookback-days", "1000000"]),
    ("seed_events", ["--end-date", "0001-01-15"]),
    ("seed_events", ["--end-date", "2027-03-01", "--days", "1000000"]),
])
def test_a_window_reaching_out_of_range_is_a_one_line_permanent_error(module_name, argv, step, tmp_path):
    """The same for a valid run date whose window (``--lookback-days``, seed_events' ``--days``)
    would start before 1970-01-01, or before year 1."""
    if "--run-date" in argv:
        argv = [*argv, "--artifacts-uri", str(tmp_path)]
    rc, err = step(module_name, *argv)
    assert rc == 2, err
    assert "Traceback" not in err and "OverflowError" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"ERROR: {module_name}: "), err
    assert "starts before 1970-01-01, the earliest date" in last, err
