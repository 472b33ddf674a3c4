"""
### recommend_feedback

Measures what yesterday's served recommendations did: for the learners served on day D, the
hit rate and recall of the served items among what they did on D + 1, next to what the
popularity baseline would have served them. `resolve_image` → `wait_for_events` → `feedback`

* **daily** at 03:30 UTC; its run date is D + 1 (the day before the run, as in
  `recommend_train`), and `wait_for_events` waits until that day's events are complete.
* `feedback` replaces the `serving_metrics` row of D: a re-run or a backfill (Trigger →
  Backfill) never duplicates a day, and fills past days without retraining anything.
* Slack: one alert when the served model's hit rate fell below popularity's or more than 20 %
  below its median of the 7 served days before (the run still succeeds: the data is fine, the
  model is worse); task retries and failures as in the other DAGs.
* Its own DAG, not a task of `recommend_train`: measuring serving must never fail or delay a
  training run, and backfilling it must not train models.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable

from operators import config as recsys_config
from operators.dag_defaults import dag_kwargs, events_complete_sensor, table_retention_args, trainer_args
from operators.image_pinning import resolve_image
from operators.params import FEEDBACK_PARAMS, fresh
from operators.slack import dag_callbacks
from operators.trainer_step import trainer_task

config = recsys_config.load()

with DAG(
    dag_id="recommend_feedback",
    schedule=CronTriggerTimetable("30 3 * * *", timezone="UTC"),
    params=fresh(FEEDBACK_PARAMS),
    tags=["recsys", "monitoring"],
    doc_md=__doc__,
    # Budget: image 10 min + sensor 6 h + feedback 30 min = 6 h 40 min.
    **dag_kwargs(config, dagrun_timeout=timedelta(hours=7)),
    **dag_callbacks(config, summary="feedback"),
):
    image = resolve_image(config)
    events = events_complete_sensor(config)
    feedback = trainer_task("feedback_task", trainer_args(
        config, "--lookback-days", "{{ recsys_whole(params.lookback_days) }}", *table_retention_args(config)),
        config=config, execution_timeout=timedelta(minutes=30))  # upserts serving_metrics: no writers' pool

    image >> events >> feedback
