"""
### recommend_train

Trains the learning-app recommender once a day and publishes it if it is good enough.

`resolve_image` → `wait_for_events` → `check_events` → `approve_anomalous_day` → `create_cf_matrices`
→ `train` → `evaluate` → `promote_model`

* **run date**: the last complete UTC day before the run (logical date − 1 day).
* `wait_for_events` waits (6 h by default) until the run date holds at least half the median
  daily events of the 7 days before it: a partial day is never trained on.
* `check_events` checks the run date's events against the 7 days before it and records the
  day's statistics in `event_stats`. A day that breaks an anomaly rule (an event type gone, a
  bot, drift, a renumbered catalogue) is a decision: `approve_anomalous_day` waits (4 h by
  default, `RECSYS_APPROVAL_TIMEOUT_S`) under Browse → Required Actions, naming the rules, and
  Slack says so. Approve: the run trains on the day and `event_stats` records who, when and
  why. Reject or no answer: the run fails naming the rules, nothing is trained. It is skipped
  when the day is ok or the run has `accept_anomalies`; a backfill never waits: its
  `check_events` fails on an anomalous day.
* `create_cf_matrices` builds the matrices of the window.
* **image**: param `image_uri`, else the Variable `recsys_trainer_image` (the environment's tag);
  must match the registry allowlist (`RECSYS_IMAGE_ALLOWLIST`).
* **runtime**: `RECSYS_RUNTIME` = `vertex` | `docker` | `local`; same steps and arguments in each.
* `train` chooses the model's settings with `tune` (default: the deployment's `RECSYS_TUNE`,
  weekly): a search on the training part's last days when the newest tuned settings are a week
  old, else those settings; `factors`, `regularization`, `alpha` and `weighting` given fix
  their dimension. Its trials are in `tuning_trials` and on the model's Recommender page.
* `evaluate` (writes `model_metrics` and `tuning_trials`) runs in the one-slot pool
  `recsys_bigquery_writers`, shared with `recommend_predict`'s writer, so no two runs (backfills
  included) write a table at once.
  The other steps take one slot each of the pool `recsys_trainer_jobs`, which bounds the trainer
  jobs the environment runs at once, backfills included.
* `promote_model` fails when the model does not beat popularity (see `model_metrics`); on success
  it updates the asset `recsys_published_model`, which triggers `recommend_predict`.
* Slack: run success (with metrics, verdict and a link to the evaluation report) and failure,
  task retries and failures.
* The **Recommender** page (Airflow's navigation, or this DAG's Recommender tab) charts every
  model's metrics, the served hit rate and the data checks, with each model's lineage, report
  and a rollback button; `evaluate` links to its model's report.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable

from operators import config as recsys_config
from operators import contract
from operators.approval import (
    ACCEPTANCE_ENV,
    ACCEPTED_ARGUMENT,
    DATA_CHECK_MODE,
    TASK_ID,
    AnomalousDayApproval,
)
from operators.dag_defaults import (
    TRAIN_TIMEOUT,
    dag_kwargs,
    events_complete_sensor,
    published_model_asset,
    table_retention_args,
    trainer_args,
)
from operators.image_pinning import resolve_image
from operators.macros import RUN_DATE
from operators.params import train_params
from operators.slack import dag_callbacks, decision_notifier
from operators.trainer_step import trainer_task
from operators.ui_links import EvaluationReportLink

config = recsys_config.load()

with DAG(
    dag_id="recommend_train",
    schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
    params=train_params(config.tune),
    tags=["recsys", "training"],
    doc_md=__doc__,
    # Budget: sensor 6 h + data check 15 min + a decision 4 h + steps 5 h 25 min (one try each)
    # fits, and a stuck run never blocks the next day's (tests/dags/test_dag_integrity.py).
    **dag_kwargs(config, dagrun_timeout=timedelta(hours=12) + config.approval_timeout),
    **dag_callbacks(config, summary="train"),
):
    image = resolve_image(config)
    events = events_complete_sensor(config)
    check = trainer_task("create_cf_matrices_task", trainer_args(
        config, "--lookback-days", "{{ recsys_whole(params.lookback_days) }}",
        "--accept-anomalies", "{{ params.accept_anomalies | lower }}", *table_retention_args(config)),
        config=config, task_id="check_events", execution_timeout=timedelta(minutes=15),
        # the data check alone; a backfill has nobody to ask, so its anomalous day fails here
        environment={contract.DATA_CHECK_ENV: DATA_CHECK_MODE})
    approval = AnomalousDayApproval(
        task_id=TASK_ID, artifacts_uri=config.artifacts_uri, run_date=RUN_DATE,
        gcp_conn_id=config.gcp_conn_id, response_timeout=config.approval_timeout,
        execution_timeout=timedelta(minutes=5),  # reading the record; the wait is response_timeout
        notifiers=[decision_notifier(config)])
    matrices = trainer_task("create_cf_matrices_task", trainer_args(
        config, "--lookback-days", "{{ recsys_whole(params.lookback_days) }}",
        "--accept-anomalies", ACCEPTED_ARGUMENT, *table_retention_args(config)),
        config=config, execution_timeout=timedelta(hours=1),  # upserts event_stats: no writers' pool
        environment=ACCEPTANCE_ENV, trigger_rule="none_failed")  # runs when nobody had to decide
    train = trainer_task("train_task", trainer_args(
        config, "--iterations", "{{ recsys_whole(params.iterations) }}",
        # A null param passes nothing: the dimension is left to the tuning search.
        "--factors={{ recsys_optional(recsys_whole(params.factors)) }}",
        "--regularization={{ recsys_optional(params.regularization) }}",
        "--alpha={{ recsys_optional(params.alpha) }}",
        "--weighting={{ recsys_optional(params.weighting) }}"), config=config,
        environment={contract.TUNE_ENV: "{{ params.tune }}"}, execution_timeout=TRAIN_TIMEOUT)
    evaluate = trainer_task("evaluate_task", trainer_args(config, *table_retention_args(config)),
                            config=config, execution_timeout=timedelta(hours=1),
                            pool=config.writers_pool,  # writes model_metrics
                            extra_links=[EvaluationReportLink()])
    promote = trainer_task("promote_model_task", trainer_args(
        config, "--keep-models", str(config.keep_models)), config=config,
                           execution_timeout=timedelta(minutes=15),
                           outlets=[published_model_asset(config)])

    image >> events >> check >> approval >> matrices >> train >> evaluate >> promote
