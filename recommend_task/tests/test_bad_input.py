"""Bad input fails with one clear line, writes nothing, and leaves the last good results."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from trainer_support.helpers import RUN_DATE, SEED_ARGS, query, recommendation_counts, run_training, seed

from trainer.core.errors import ValidationError
from trainer.data.synthetic import SyntheticSpec, corrupt, generate
from trainer.predict_task import validate_staged
from trainer.storage import tables
from trainer.storage.partitions import staging_table


def _written(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_empty_window_fails_naming_the_window_and_writes_nothing(step, tmp_path):
    seed(step)
    art = tmp_path / "artifacts"
    rc, err = step("create_cf_matrices_task", "--run-date", "2025-01-10", "--lookback-days", "7",
                   "--artifacts-uri", str(art))
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("ERROR: create_cf_matrices_task:") and "2025-01-04..2025-01-10" in last
    assert _written(art) == ["runs/2025-01-10/status/create_cf_matrices_task.json"]  # its outcome only


def test_validate_only_applies_the_step_rules_and_reads_nothing(step, tmp_path):
    """What the DAGs' param limits test relies on: the real entry point, no I/O (this dataset has
    no events table, which a read would report)."""
    art = tmp_path / "artifacts"
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", str(art), "--validate-only")
    assert step("create_cf_matrices_task", *common, "--lookback-days", "3")[0] == 0
    assert step("predict_task", *common, "--lookback-days", "1", "--n-recommendations", "1000")[0] == 0
    rc, err = step("create_cf_matrices_task", *common, "--lookback-days", "2")
    assert rc == 2
    assert err.strip().splitlines()[-1] == ("ERROR: create_cf_matrices_task: holdout_days (2) must be "
                                            "smaller than lookback_days (2)")
    rc, err = step("promote_model_task", *common, "--rollback-to", "None")  # an empty rollback param
    assert rc == 2 and "--rollback-to needs the id of a model" in err.strip().splitlines()[-1]
    rc, err = step("train_task", *common, "--iterations", "501")
    assert rc == 2 and "--iterations must be in [1, 500], got 501" in err.strip().splitlines()[-1]
    assert not art.exists()


def test_missing_events_table_is_a_clear_error(step, tmp_path):
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE),
                   "--artifacts-uri", str(tmp_path))
    assert rc == 2 and "events" in err.splitlines()[-1] and "does not exist" in err


def test_bad_rows_are_dropped_and_counted(step, tmp_path):
    seed(step, RUN_DATE, "--corrupt-fraction", "0.03")
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE), "--lookback-days", "20",
                   "--artifacts-uri", str(tmp_path))
    assert rc == 0, err
    manifest = json.loads((tmp_path / "runs" / str(RUN_DATE) / "manifest.json").read_text())
    # Recompute what the seeder damaged, independently of the trainer's SQL.
    spec = SyntheticSpec(users=600, items=120, events=24000, days=20, clusters=6, end_date=RUN_DATE)
    events = corrupt(generate(spec), 0.03, spec.seed)
    q = manifest["quality"]
    assert q["rows_read"] == 24000
    assert q["null_user_id"] == events["user_id"].null_count > 0
    assert q["null_item_id"] == events["item_id"].null_count > 0
    days = events["event_timestamp"].to_numpy().astype("datetime64[D]")
    outside = int((days < np.datetime64(RUN_DATE - dt.timedelta(days=19))).sum())
    assert q["timestamp_outside_window"] == outside > 0
    assert q["valid_rows"] == 24000 - q["null_user_id"] - q["null_item_id"] - outside
    assert "dropped=" in err and f"timestamp outside window={outside}" in err


def test_one_scan_counts_and_aggregates_exactly_as_the_quality_query_and_the_aggregation(
        step, bq_client, project, dataset):
    """create_cf_matrices reads the window once: its quality counts equal the quality query's
    and its rows the plain aggregation's, on data with every reason to drop a row (null ids,
    skewed timestamps, and an event type the weights don't know), some rows with several."""
    from trainer.data.date_windows import split_window
    from trainer.data.events import EventSource

    seed(step, RUN_DATE, "--corrupt-fraction", "0.05")
    source = EventSource(bq_client, f"{project}.{dataset}.{tables.EVENTS}")
    window = split_window(RUN_DATE, 20, 2)
    weights = {"view": 1.0, "complete": 4.0}  # "start" events count as an unknown type
    report, rows = source.read_checked(window.full, weights, 1.0, holdout_start=window.holdout.start)

    expected = source.quality(window.full, weights)
    assert report == expected
    assert expected.unknown_event_type > 0 and expected.null_user_id > 0 and expected.null_item_id > 0
    assert expected.timestamp_outside_window > 0
    several = expected.null_user_id + expected.null_item_id + expected.unknown_event_type \
        + expected.timestamp_outside_window - expected.bad_rows
    assert several > 0  # rows dropped for more than one reason are counted under each

    plain = source.interactions(window.full, weights, window.holdout.start)
    key = [("user_id", "ascending"), ("item_id", "ascending"), ("in_holdout", "ascending")]
    # The one scan also splits off the validation days (for the tuning search): summed over
    # that split, its rows are the plain aggregation's.
    assert rows.schema.remove(rows.schema.get_field_index("in_validation")) == plain.schema
    merged = rows.group_by(["user_id", "item_id", "in_holdout"]).aggregate(
        [("weight", "sum"), ("events", "sum")]).rename_columns(
        ["user_id", "item_id", "in_holdout", "weight", "events"]).select(plain.column_names)
    assert merged.cast(plain.schema).sort_by(key).equals(plain.sort_by(key))
    holdout = rows["in_holdout"].to_numpy()
    assert len(rows) > 0 and holdout.any() and not holdout.all()


def test_too_many_bad_rows_fail_the_step(step, tmp_path):
    seed(step, RUN_DATE, "--corrupt-fraction", "0.2")
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE), "--lookback-days", "20",
                   "--max-bad-fraction", "0.05", "--artifacts-uri", str(tmp_path))
    assert rc == 2
    assert "are invalid" in err.splitlines()[-1] and "max_bad_fraction 5.0%" in err
    # No matrices: only the records of what was read, the day's statistics and the step's outcome.
    assert _written(tmp_path) == [f"runs/{RUN_DATE}/event_stats.json",
                                  f"runs/{RUN_DATE}/status/create_cf_matrices_task.json"]
    stats = json.loads((tmp_path / "runs" / str(RUN_DATE) / "event_stats.json").read_text())
    assert sum(stats["bad_rows"].values()) > 0.15 * stats["rows_read"]


def test_missing_model_stops_promotion_and_prediction(step, tmp_path):
    seed(step)
    art = str(tmp_path / "artifacts")
    rc, err = step("promote_model_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art)
    assert rc == 2 and "no trained model for run date 2026-11-29" in err.splitlines()[-1]
    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art)
    assert rc == 2 and "no published model" in err.splitlines()[-1]
    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art,
                   "--model-uri", f"{art}/models/nope")
    assert rc == 2 and "no model at" in err.splitlines()[-1]


def test_failed_verdict_stops_promotion_and_keeps_the_published_model(
        step, bq_client, project, dataset, tmp_path):
    art = str(tmp_path / "artifacts")
    seed(step)
    run_training(step, art)
    latest_before = (tmp_path / "artifacts" / "models" / "LATEST").read_text()
    assert step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art,
                "--lookback-days", "20")[0] == 0
    before = recommendation_counts(bq_client, project, dataset)

    # Next day: a model that cannot beat popularity by 1000% fails its verdict.
    next_day = RUN_DATE + dt.timedelta(days=1)
    seed(step, next_day)
    common = ("--run-date", str(next_day), "--artifacts-uri", art)
    assert step("create_cf_matrices_task", *common, "--lookback-days", "20")[0] == 0
    assert step("train_task", *common, "--factors", "8", "--iterations", "3")[0] == 0
    rc, err = step("evaluate_task", *common, "--min-lift", "10")
    assert rc == 0, err  # evaluation itself succeeded; its verdict is "fail"
    verdicts = query(bq_client, f"SELECT run_date, verdict FROM `{project}.{dataset}.model_metrics`")
    assert {(r["run_date"], r["verdict"]) for r in verdicts} == {(RUN_DATE, "pass"), (next_day, "fail")}
    rc, err = step("promote_model_task", *common)
    assert rc == 2 and "failed evaluation, not promoting" in err.splitlines()[-1]
    assert (tmp_path / "artifacts" / "models" / "LATEST").read_text() == latest_before
    failed_uri = json.loads((tmp_path / "artifacts" / "runs" / str(next_day) / "candidate.json")
                            .read_text())["model_uri"]
    rc, err = step("predict_task", *common, "--lookback-days", "20", "--model-uri", failed_uri)
    assert rc == 2 and "failed evaluation, not predicting with it" in err.splitlines()[-1]
    assert recommendation_counts(bq_client, project, dataset) == before


def test_failures_leave_the_previous_days_recommendations_intact(
        step, bq_client, project, dataset, tmp_path):
    art = str(tmp_path / "artifacts")
    seed(step)
    run_training(step, art)
    predict = ("predict_task", "--artifacts-uri", art, "--lookback-days", "20")
    assert step(*predict, "--run-date", str(RUN_DATE))[0] == 0
    before = recommendation_counts(bq_client, project, dataset)
    view = f"`{project}.{dataset}.recommendations_latest`"
    view_before = query(bq_client, f"SELECT user_id, rank, item_id FROM {view} ORDER BY 1, 2")

    # Failure 1: no events for the next day's (1-day) window.
    rc, err = step(*predict, "--run-date", "2027-01-15", "--lookback-days", "1")
    assert rc == 2 and "no valid events" in err
    # Failure 2: a broken model for today.
    (tmp_path / "artifacts" / "models" / "broken").mkdir()
    (tmp_path / "artifacts" / "models" / "broken" / "model.json").write_text("{")
    rc, err = step(*predict, "--run-date", str(RUN_DATE), "--model-uri", f"{art}/models/broken")
    assert rc == 2 and "not valid JSON" in err
    # Failure 3: staged rows that fail validation are never swapped in.
    target = tables.table_id(project, dataset, tables.RECOMMENDATIONS)
    bad = pa.table({"run_date": [RUN_DATE] * 2, "user_id": ["u1", "u1"], "rank": [1, 1],
                    "item_id": ["i1", "i1"], "score": [1.0, 1.0], "model_id": ["m", "m"],
                    "generated_at": [dt.datetime.now(dt.UTC)] * 2})
    schema = list(tables.RECOMMENDATIONS_SPEC.schema)
    with staging_table(bq_client, target, bad, schema) as staging, \
            pytest.raises(ValidationError, match="users without ranks"):
        validate_staged(bq_client, staging, RUN_DATE, expected_users=1, expected_rows=2, n=10)

    assert recommendation_counts(bq_client, project, dataset) == before
    assert query(bq_client, f"SELECT user_id, rank, item_id FROM {view} ORDER BY 1, 2") == view_before
    leftovers = [t.table_id for t in bq_client.list_tables(f"{project}.{dataset}")
                 if t.table_id.startswith("_staging")]
    assert leftovers == []


KILLED_BETWEEN_STAGING_AND_SWAP = """
import os, signal, sys
import datetime as dt
import pyarrow as pa
from trainer.storage import tables
from trainer.storage.clients import bigquery_client
from trainer.storage.partitions import staging_table
project, dataset, day = sys.argv[1:4]
rows = pa.table({"run_date": [dt.date.fromisoformat(day)], "user_id": ["u1"], "rank": [1],
                 "item_id": ["i1"], "score": [1.0], "model_id": ["m"],
                 "generated_at": [dt.datetime.now(dt.UTC)]})
target = tables.table_id(project, dataset, tables.RECOMMENDATIONS)
with staging_table(bigquery_client(project), target, rows, list(tables.RECOMMENDATIONS_SPEC.schema)):
    os.kill(os.getpid(), signal.SIGKILL)  # as a predict killed after staging, before the swap
"""


def test_a_step_killed_between_staging_and_swap_leaves_only_a_staging_table_that_expires(
        emulators, bq_client, project, dataset):
    tables.ensure_all(bq_client, project, dataset, "US")
    before = recommendation_counts(bq_client, project, dataset)
    started = dt.datetime.now(dt.UTC)
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_STAGING_AND_SWAP, project, dataset,
                           str(RUN_DATE)], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == -9, proc.stderr[-2000:]
    staged = [t.table_id for t in bq_client.list_tables(f"{project}.{dataset}")
              if t.table_id.startswith("_staging")]
    assert len(staged) == 1  # nothing cleaned it up: the process had no chance to
    expires = bq_client.get_table(f"{project}.{dataset}.{staged[0]}").expires
    assert expires is not None and started < expires <= started + dt.timedelta(days=1, minutes=5)
    assert recommendation_counts(bq_client, project, dataset) == before  # nothing swapped in


def test_cli_exit_code_and_single_error_line_in_a_real_process(emulators, tmp_path):
    env = {**os.environ, "RECSYS_ARTIFACTS_URI": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.predict_task", "--project", emulators["project"],
         "--dataset", "nothing_here", "--run-date", str(RUN_DATE)],
        capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: predict_task: no published model: {tmp_path}/models/LATEST does not "
                      "exist (train, evaluate and promote a model first, or pass --model-uri)"]
    assert "Traceback" not in proc.stderr


def test_invalid_arguments_are_rejected_before_any_work(step, tmp_path):
    rc, err = step("create_cf_matrices_task", "--run-date", "yesterday", "--artifacts-uri", str(tmp_path))
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith(
        "ERROR: create_cf_matrices_task: bad arguments: argument --run-date: ")
    assert not list(tmp_path.iterdir())  # no run date, so no status record either
    rc, err = step("seed_events", "--end-date", str(RUN_DATE), *SEED_ARGS[:-2], "--clusters", "0")
    assert rc == 2 and "--clusters must be >= 1" in err


def test_seed_end_date_takes_a_date_or_yesterday():
    import argparse

    from trainer.seed_events import _end_date

    before = dt.datetime.now(dt.UTC).date()
    got = _end_date("yesterday")
    after = dt.datetime.now(dt.UTC).date()
    # Either side of a UTC midnight that falls between the two clock reads.
    assert got in {before - dt.timedelta(days=1), after - dt.timedelta(days=1)}
    assert _end_date("2026-03-01") == dt.date(2026, 3, 1)
    with pytest.raises(argparse.ArgumentTypeError):
        _end_date("tomorrow")
