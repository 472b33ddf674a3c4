"""The trainer<->Airflow contract exists once: one stdlib module, the same file on both sides,
its values frozen (images and DAGs deploy apart: an image of an earlier release runs under these
DAGs), and what a real step writes is what the Airflow side reads."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

AIRFLOW_SIDE = REPO / "plugins" / "operators" / "contract.py"
TRAINER_SIDE = REPO / "recommend_task" / "trainer" / "contract.py"
TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")


def test_both_sides_hold_the_same_file():
    assert AIRFLOW_SIDE.read_bytes() == TRAINER_SIDE.read_bytes(), (
        "plugins/operators/contract.py and recommend_task/trainer/contract.py differ: edit one, copy it")


def test_the_contract_imports_only_the_standard_library():
    imported = set()
    for node in ast.walk(ast.parse(AIRFLOW_SIDE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_the_values_images_of_earlier_releases_rely_on_stay_as_they_were():
    """Golden: what the image's CLI contract has been since the status record was introduced."""
    from operators import contract

    assert (contract.EXIT_OK, contract.EXIT_CRASH, contract.EXIT_PERMANENT, contract.EXIT_TRANSIENT) == (
        0, 1, 2, 75)
    assert [contract.outcome(c) for c in (0, 1, 2, 75, 137)] == [
        "succeeded", "crash", "permanent", "transient", "crash"]
    assert contract.ATTEMPT_ENV == ("RECSYS_STATUS_NAME", "RECSYS_AIRFLOW_RUN_ID", "RECSYS_TRY_NUMBER",
                                    "RECSYS_TRAINER_IMAGE", "RECSYS_LAUNCHER_PID")
    assert (contract.TIME_BUDGET_ENV, contract.TODAY_ENV) == ("RECSYS_TIME_BUDGET_S", "RECSYS_TODAY")
    assert contract.ERROR_PREFIX == "ERROR:"
    assert contract.status_name("recommend_predict", "predict", 2) == "recommend_predict.predict.2"
    assert contract.status_name("recommend_train", "train") == "recommend_train.train"
    assert contract.status_record_uri("gs://b/recsys/", "2026-11-29", "recommend_train.train") == (
        "gs://b/recsys/runs/2026-11-29/status/recommend_train.train.json")
    assert contract.LATEST_POINTER == "models/LATEST"
    assert contract.latest_pointer("gs://b/recsys") == "gs://b/recsys/models/LATEST"
    assert contract.model_prefix("gs://b/recsys", "als-1") == "gs://b/recsys/models/als-1"
    assert contract.RECORD_FIELDS == ("step", "exit_code", "outcome", "error", "run_date", "airflow_run_id",
                                      "try", "image", "uid", "started_at", "finished_at", "seconds",
                                      "profile")
    assert [contract.EVENT_STATS_RECORD, contract.MANIFEST_RECORD, contract.CANDIDATE_RECORD,
            contract.PROMOTION_RECORD, contract.PREDICTIONS_RECORD, contract.SERVING_METRICS_RECORD,
            contract.FORGET_RECORD, contract.EVALUATION_RECORD, contract.REPORT_PAGE] == [
        "event_stats.json", "manifest.json", "candidate.json", "promotion.json", "predictions.json",
        "serving_metrics.json", "forget.json", "evaluation.json", "report.html"]


def test_a_real_steps_record_is_what_the_airflow_side_reads(tmp_path):
    """The trainer writes its status record where, and as, the launchers look for it."""
    from types import SimpleNamespace

    from operators import contract
    from operators.trainer_exit import read_status_record

    env = {**os.environ, contract.STATUS_NAME_ENV: "recommend_predict.predict.1",
           contract.AIRFLOW_RUN_ID_ENV: "manual__r", contract.TRY_NUMBER_ENV: "3",
           contract.IMAGE_ENV: "recsys-trainer:dev@sha256:" + "1" * 64, contract.TODAY_ENV: "2026-11-01"}
    done = subprocess.run([TRAINER_PY, "-m", "trainer.predict_task", "--run-date", "2026-11-29",
                           "--artifacts-uri", str(tmp_path), "--project", "p"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == contract.EXIT_PERMANENT, done.stderr[-2000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(contract.ERROR_PREFIX)
    path = contract.status_record_uri(str(tmp_path), "2026-11-29", "recommend_predict.predict.1")
    record = json.loads(Path(path).read_text())
    assert set(record) == set(contract.RECORD_FIELDS)
    assert (record["exit_code"], record["outcome"], record["try"], record["airflow_run_id"]) == (
        2, "permanent", 3, "manual__r")
    assert record["error"] == error.removeprefix(contract.ERROR_PREFIX).strip().removeprefix("predict_task: ")
    ti = SimpleNamespace(dag_id="recommend_predict", task_id="predict", map_index=1, run_id="manual__r")
    assert read_status_record(str(tmp_path), "2026-11-29", ti, "google_cloud_default", 3) == record
    assert read_status_record(str(tmp_path), "2026-11-29", ti, "google_cloud_default", 2) is None
