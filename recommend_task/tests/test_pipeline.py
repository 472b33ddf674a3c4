"""The whole trainer chain against the BigQuery and Cloud Storage emulators (real clients)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from trainer_support.helpers import RUN_DATE, TRAIN_ARGS, query, recommendation_counts, run_training, seed

from trainer.storage import artifacts

STEPS = ("seed_events", "create_cf_matrices_task", "train_task", "evaluate_task",
         "promote_model_task", "predict_window_task", "predict_task", "publish_predictions_task", "report")


@pytest.mark.parametrize("module", STEPS)
def test_every_step_documents_its_arguments(module):
    out = subprocess.run([sys.executable, "-m", f"trainer.{module}", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--project" in out and "--dataset" in out


def test_chain_on_gcs_beats_popularity_and_writes_one_day_of_recommendations(
        step, bq_client, project, dataset, gcs_artifacts):
    seed(step)
    run_training(step, gcs_artifacts)

    metrics = query(bq_client, f"SELECT * FROM `{project}.{dataset}.model_metrics`")
    assert len(metrics) == 1
    m = metrics[0]
    assert m["verdict"] == "pass" and m["run_date"] == RUN_DATE
    assert m["model_recall"] > 1.5 * m["popularity_recall"], m  # planted clusters are learnable
    assert m["model_ndcg"] > m["popularity_ndcg"] and m["eval_users"] > 50
    assert m["published_model_id"] is None and m["published_recall"] is None

    store = artifacts.ArtifactStore(project)
    latest = json.loads(store.read_bytes(f"{gcs_artifacts}/models/LATEST"))
    assert latest["model_id"] == m["model_id"]
    manifest = store.read_json(f"{gcs_artifacts}/runs/{RUN_DATE}/manifest.json")
    assert manifest["counts"]["users"] > 500 and manifest["quality"]["bad_rows"] == 0

    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", gcs_artifacts,
                   "--lookback-days", "20", "--n-recommendations", "7")
    assert rc == 0, err
    rows, users, slots = recommendation_counts(bq_client, project, dataset)[RUN_DATE]
    active = query(bq_client, f"""SELECT COUNT(DISTINCT user_id) AS n
        FROM `{project}.{dataset}.events` WHERE event_date > '{RUN_DATE - dt.timedelta(days=20)}'""")[0]["n"]
    assert users == active and rows == slots == 7 * users
    seen = query(bq_client, f"""
        SELECT COUNT(*) AS n FROM `{project}.{dataset}.recommendations` r
        JOIN `{project}.{dataset}.events` e USING (user_id, item_id)""")[0]["n"]
    assert seen == 0  # already-seen items are filtered
    latest_view = query(bq_client, f"SELECT COUNT(*) AS n FROM `{project}.{dataset}.recommendations_latest`")
    assert latest_view[0]["n"] == rows


def test_repeated_runs_never_duplicate_and_new_dates_keep_old_ones(
        step, bq_client, project, dataset, tmp_path):
    art = str(tmp_path / "artifacts")
    seed(step)
    seed(step)  # seeding the same days twice replaces them
    n_events = query(bq_client, f"SELECT COUNT(*) AS n FROM `{project}.{dataset}.events`")[0]["n"]
    assert n_events == 24000
    run_training(step, art)
    run_training(step, art)  # same data + params: same model, metrics row replaced not added
    assert query(bq_client, f"SELECT COUNT(*) AS n FROM `{project}.{dataset}.model_metrics`")[0]["n"] == 1

    predict = ("predict_task", "--artifacts-uri", art, "--lookback-days", "20")
    assert step(*predict, "--run-date", str(RUN_DATE))[0] == 0
    first = recommendation_counts(bq_client, project, dataset)
    assert step(*predict, "--run-date", str(RUN_DATE))[0] == 0
    assert recommendation_counts(bq_client, project, dataset) == first  # exactly one set of rows

    next_day = RUN_DATE + dt.timedelta(days=1)
    assert step(*predict, "--run-date", str(next_day))[0] == 0
    counts = recommendation_counts(bq_client, project, dataset)
    assert set(counts) == {RUN_DATE, next_day} and counts[RUN_DATE] == first[RUN_DATE]
    latest = query(bq_client, f"SELECT DISTINCT run_date FROM `{project}.{dataset}.recommendations_latest`")
    assert [r["run_date"] for r in latest] == [next_day]


def test_second_model_is_compared_with_the_published_one(step, bq_client, project, dataset, tmp_path):
    art = str(tmp_path / "artifacts")
    seed(step)
    run_training(step, art)
    # A different model (other seed) for the same run: evaluated against the published one.
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", art)
    assert step("train_task", *common, *TRAIN_ARGS[2:], "--random-seed", "7")[0] == 0
    assert step("evaluate_task", *common)[0] == 0
    rows = query(bq_client, f"""SELECT * FROM `{project}.{dataset}.model_metrics`
                               WHERE published_model_id IS NOT NULL""")
    assert len(rows) == 1
    assert rows[0]["published_recall"] > rows[0]["popularity_recall"]
    assert rows[0]["published_model_id"] != rows[0]["model_id"]
