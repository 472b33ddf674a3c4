"""A history for the Recommender page's tests and benchmark: real trainer steps against the
emulators, each with the Airflow environment a DAG gives it (run id, status name, image), so
the lineage records are what production leaves."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

from conftest import REPO

TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
IMAGE = "recsys-trainer:dev@sha256:" + "ab" * 32


def run_id(dag_id: str, day: dt.date) -> str:
    """The run id Airflow gives the DAG's scheduled run for ``day`` (its logical date is a day later)."""
    return f"scheduled__{day + dt.timedelta(days=1)}T03:00:00+00:00"


def step(name: str, dag_id: str, task_id: str, day: dt.date, *extra: str, run: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_AIRFLOW_RUN_ID": run or run_id(dag_id, day),
           "RECSYS_STATUS_NAME": f"{dag_id}.{task_id}", "RECSYS_TRAINER_IMAGE": IMAGE,
           "RECSYS_LOG_LEVEL": "WARNING"}
    done = subprocess.run([TRAINER_PY, "-m", f"trainer.{name}", "--project", os.environ["RECSYS_GCP_PROJECT"],
                           "--dataset", os.environ["RECSYS_BQ_DATASET"], "--run-date", str(day),
                           "--artifacts-uri", os.environ["RECSYS_ARTIFACTS_URI"], *extra],
                          env=env, capture_output=True, text=True, cwd=REPO / "recommend_task")
    if check and done.returncode != 0:
        raise AssertionError(f"{name} for {day} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def seed(end: dt.date, days: int, users: int = 400, items: int = 80, events: int = 12000) -> None:
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", os.environ["RECSYS_GCP_PROJECT"],
                    "--dataset", os.environ["RECSYS_BQ_DATASET"], "--end-date", str(end),
                    "--days", str(days), "--users", str(users), "--items", str(items),
                    "--events", str(events), "--clusters", "5", "--log-level", "WARNING"], check=True)


def train_day(day: dt.date, *evaluate_extra: str, promote: bool = True, tune: str = "off") -> None:
    """recommend_train's steps for ``day`` (``tune``: train_task's ``--tune``, given whatever the
    environment's RECSYS_TUNE says)."""
    step("create_cf_matrices_task", "recommend_train", "create_cf_matrices", day, "--lookback-days", "12")
    step("train_task", "recommend_train", "train", day, "--factors", "8", "--iterations", "4",
         "--tune", tune)
    step("evaluate_task", "recommend_train", "evaluate", day, *evaluate_extra)
    if promote:
        step("promote_model_task", "recommend_train", "promote_model", day)


def predict_day(day: dt.date) -> None:
    """recommend_predict's one-shard path for ``day``."""
    step("predict_task", "recommend_predict", "publish_predictions", day, "--lookback-days", "12")
