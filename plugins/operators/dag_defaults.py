"""Run settings shared by the recommendation DAGs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset

from operators import contract
from operators.config import RecsysConfig
from operators.macros import MACROS, RUN_DATE
from operators.sensors import EventsCompleteSensor
from operators.slack import task_callbacks

START_DATE = datetime(2026, 1, 1)
SCHEDULE_TIMEZONE = "UTC"  # event days are UTC days; schedules say so explicitly


def default_args(config: RecsysConfig) -> dict[str, Any]:
    """Owner, retries with exponential backoff, a per-task timeout and the task-level alerts."""
    return {
        "owner": "ml-engineering",
        "retries": config.retries,
        "retry_delay": config.retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        **task_callbacks(config),
    }


def dag_kwargs(config: RecsysConfig, *, dagrun_timeout: timedelta) -> dict[str, Any]:
    """What every recommendation DAG sets the same way; each states its own run budget."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "dagrun_timeout": dagrun_timeout,
        "default_args": default_args(config),
        "user_defined_macros": MACROS,
    }


def published_model_asset(config: RecsysConfig) -> Asset:
    """The published-model pointer, updated by recommend_train and consumed by recommend_predict.

    Its URI is the pointer's Cloud Storage object under the ``x-gs`` scheme, not ``gs``: Airflow
    normalises a provider's scheme through its provider registry, whose first use imports every
    provider's asset module (the Google one imports ``google.cloud.storage``), about 1 s of every
    fresh parse, including each task's own parse on a worker. ``x-`` URIs are left as written."""
    pointer = contract.latest_pointer(config.artifacts_uri)
    return Asset(name="recsys_published_model", uri="x-" + pointer, group="recsys")


# Timeouts of the two steps whose cost grows with the model's factors, shared with train_task
# (the contract): its tuning search never chooses settings that would overrun either at 100M events.
TRAIN_TIMEOUT = timedelta(seconds=contract.STEP_TIMEOUT_S["train_task"])
PREDICT_TIMEOUT = timedelta(seconds=contract.STEP_TIMEOUT_S["predict_task"])


def trainer_args(config: RecsysConfig, *extra: str) -> list[str]:
    """Arguments every step gets: where the data and artifacts are, and the run date."""
    return ["--project", config.project, "--dataset", config.dataset, "--location", config.location,
            "--artifacts-uri", config.artifacts_uri, "--run-date", RUN_DATE, *extra]


def events_complete_sensor(config: RecsysConfig) -> EventsCompleteSensor:
    """``wait_for_events``: the run date's events complete (recommend_train, recommend_feedback)."""
    return EventsCompleteSensor(
        task_id="wait_for_events",
        table=f"{config.project}.{config.dataset}.events",
        date_column="event_date",
        run_date=RUN_DATE,
        min_fraction=config.events_min_fraction,  # of the trailing 7 days' median
        gcp_conn_id=config.gcp_conn_id,
        location=config.location,
        mode="reschedule",
        poke_interval=config.events_poke_interval_s,
        timeout=config.events_wait_timeout.total_seconds(),
    )


def table_retention_args(config: RecsysConfig) -> list[str]:
    """For the steps that create the tables they write (all but train and promote)."""
    return ["--recommendations-retention-days", str(config.recommendations_retention_days),
            "--metrics-retention-days", str(config.metrics_retention_days)]
