"""Retention settings as the steps apply them to the real BigQuery emulator's tables, and the
bucket lifecycle file they rely on (model marking itself: test_promotion.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from trainer_support.helpers import SEED_ARGS

from trainer.storage import layout, retention

REPO = Path(__file__).resolve().parents[2]
DAY_MS = 24 * 3600 * 1000


def _expiration_days(client, project: str, dataset: str, table: str) -> float | None:
    partitioning = client.get_table(f"{project}.{dataset}.{table}").time_partitioning
    return partitioning.expiration_ms / DAY_MS if partitioning.expiration_ms else None


def test_tables_are_created_with_partition_expiration_and_follow_a_changed_setting(
        step, bq_client, project, dataset):
    rc, err = step("seed_events", "--end-date", "2026-11-29", *SEED_ARGS, "--metrics-retention-days", "0")
    assert rc == 0, err
    days = {t: _expiration_days(bq_client, project, dataset, t)
            for t in ("events", "model_metrics", "recommendations")}
    assert days == {"events": None,  # the producer's table: never changed by the product
                    "model_metrics": None,  # 0: kept forever
                    "recommendations": retention.DEFAULT_RECOMMENDATIONS_DAYS}

    # A changed setting applies to the existing tables. (Clearing an expiration sends
    # expirationMs=null, which BigQuery applies and the emulator ignores: not asserted here.)
    rc, err = step("seed_events", "--end-date", "2026-11-29", *SEED_ARGS,
                   "--recommendations-retention-days", "30", "--metrics-retention-days", "400")
    assert rc == 0, err
    assert _expiration_days(bq_client, project, dataset, "recommendations") == 30
    assert _expiration_days(bq_client, project, dataset, "model_metrics") == 400
    assert "set to 30 days (was 90 days)" in err and "set to 400 days (was none)" in err


def test_a_retention_shorter_than_an_outage_could_last_is_refused_before_anything_is_read(
        step, tmp_path):
    rc, err = step("predict_task", "--run-date", "2026-11-29", "--artifacts-uri", str(tmp_path),
                   "--recommendations-retention-days", "3")
    assert rc == 2
    assert err.strip().splitlines()[-1] == (
        "ERROR: predict_task: recommendations retention must be 0 (keep forever) or at least 7 days, got 3")


def test_the_lifecycle_file_deletes_old_runs_and_marked_models_under_the_default_layout():
    rules = json.loads((REPO / "deploy" / "gcs-lifecycle.json").read_text())["rule"]
    default_prefix = "recsys"  # RECSYS_ARTIFACTS_URI=gs://BUCKET/recsys (README)
    by_prefix = {tuple(r["condition"]["matchesPrefix"]): r for r in rules}
    runs = by_prefix[(layout.run_prefix(default_prefix, dt.date(2026, 1, 1)).rsplit("/", 1)[0] + "/",)]
    models = by_prefix[(layout.model_prefix(default_prefix, ""),)]  # "recsys/models/"
    for rule in (runs, models):
        assert rule["action"] == {"type": "Delete"}
    assert runs["condition"]["age"] >= 7
    # Marked models only: unmarked objects (the published model, the newest) have no customTime
    # and never match daysSinceCustomTime; a model kept again has a customTime in year 9999.
    assert set(models["condition"]) == {"matchesPrefix", "daysSinceCustomTime"}
    assert models["condition"]["daysSinceCustomTime"] >= 7
    assert len(rules) == 2
