"""
### recommend_freshness

Alerts when the web app's recommendations are stale, whatever the cause: a paused DAG, a stuck
sensor, a failed step, a run that never started. `check_recommendations_fresh`

* **hourly** at :30 UTC: the day D must be in `recommendations_latest` from 08:00 UTC on D + 1
  (`RECSYS_FRESHNESS_DEADLINE_HOUR`); otherwise the check fails and Slack gets the task's failure
  alert with the newest day found. The alert repeats every hour until the day arrives. A day
  dated after today (BigQuery's `CURRENT_DATE`) is ignored.
* It also fails, naming them, while a run of the pipeline's DAGs is queued or running with a
  logical date after the check's time: Airflow 3.3 never schedules such a run's tasks, and with
  `max_active_runs=1` it holds back every later run (docs/runbook.md: clearing it).
* Bound: an alert at the first :30 after the deadline (30 minutes), while Airflow's scheduler
  runs. A stopped scheduler stops this check too: Cloud Composer's own environment health
  monitoring covers that (docs/reliability.md).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable

from operators import config as recsys_config
from operators.dag_defaults import dag_kwargs
from operators.freshness import RecommendationsFreshnessCheck

config = recsys_config.load()

with DAG(
    dag_id="recommend_freshness",
    schedule=CronTriggerTimetable("30 * * * *", timezone="UTC"),
    tags=["recsys", "monitoring"],
    doc_md=__doc__,
    **dag_kwargs(config, dagrun_timeout=timedelta(minutes=20)),
):
    RecommendationsFreshnessCheck(
        task_id="check_recommendations_fresh",
        view=f"{config.project}.{config.dataset}.recommendations_latest",
        gcp_conn_id=config.gcp_conn_id,
        location=config.location,
        deadline_hour=config.freshness_deadline_hour,
        watched_dag_ids=("recommend_train", "recommend_predict", "recommend_feedback", "recommend_rollback"),
        retries=0,  # the next hourly run is the retry
        execution_timeout=timedelta(minutes=10),
    )
