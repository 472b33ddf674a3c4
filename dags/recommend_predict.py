"""
### recommend_predict

Writes the day's top-N recommendations per learner to BigQuery with the published model.

`resolve_image` → `wait_for_published_model` → `predict_window` → `plan_shards` → `predict` ×`n_shards`
→ `publish_predictions`

* **schedule**: daily at 05:00 UTC, and whenever `recommend_train` publishes a new model
  (asset `recsys_published_model`).
* **run date**: the last complete UTC day before the run; asset-triggered runs use the trigger time.
* `predict_window` reads the window's events once (quality counts and the aggregation, or the
  window `create_cf_matrices` saved when nothing changed) into one file per shard.
* `predict` is mapped over `n_shards` (param, default 1): each shard loads its file, scores
  the users of its stable hash bucket in its own job and stages them (BigQuery bills one read
  of the window whatever `n_shards` is); the shards run in parallel, one slot each
  of the pool `recsys_trainer_jobs` that bounds the environment's trainer jobs (16 in
  production: 64 shards run in 4 waves).
* `publish_predictions` validates all staged parts together and swaps the run date's rows in
  one transaction: a failed shard publishes nothing, a failed or repeated run never leaves
  partial or duplicated recommendations; `recommendations_latest` keeps showing the last good
  day. It alone runs in the one-slot pool `recsys_bigquery_writers`: no two runs (scheduled,
  asset-triggered, manual or backfill) write the table at once.
* Slack: run success (with rows written) and failure, task retries and failures.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from operators import config as recsys_config
from operators.dag_defaults import (
    PREDICT_TIMEOUT,
    dag_kwargs,
    published_model_asset,
    table_retention_args,
    trainer_args,
)
from operators.image_pinning import resolve_image
from operators.params import PREDICT_PARAMS, fresh
from operators.sensors import PublishedModelSensor
from operators.sharding import SHARD_ARGUMENTS, SHARD_LABEL, PlanShardsOperator
from operators.slack import dag_callbacks
from operators.trainer_step import trainer_task

config = recsys_config.load()

with DAG(
    dag_id="recommend_predict",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 5 * * *", timezone="UTC"),
        assets=[published_model_asset(config)],
    ),
    params=fresh(PREDICT_PARAMS),
    tags=["recsys", "prediction"],
    doc_md=__doc__,
    # Budget: image 10 min + sensor 30 min + window 1 h + plan 5 min + 4 waves of 2 h shards (64
    # shards, the maximum, through the trainer pool's 16 slots) + publish 30 min = 10 h 15 min.
    **dag_kwargs(config, dagrun_timeout=timedelta(hours=10, minutes=30)),
    **dag_callbacks(config, summary="predict"),
):
    image = resolve_image(config)
    model = PublishedModelSensor(
        task_id="wait_for_published_model",
        artifacts_uri=config.artifacts_uri,
        gcp_conn_id=config.gcp_conn_id,
        deferrable=config.runtime == "vertex",  # Composer has a triggerer; laptops may not
        mode="reschedule",
        poke_interval=120,
        timeout=timedelta(minutes=30).total_seconds(),
    )
    window = trainer_task("predict_window_task", trainer_args(
        config, "--lookback-days", "{{ recsys_whole(params.lookback_days) }}",
        "--n-shards", "{{ recsys_whole(params.n_shards) }}"), config=config,
        execution_timeout=timedelta(hours=1))
    shards = PlanShardsOperator(task_id="plan_shards", execution_timeout=timedelta(minutes=5))
    predict = trainer_task("predict_task", trainer_args(
        config, "--lookback-days", "{{ recsys_whole(params.lookback_days) }}",
        "--n-recommendations", "{{ recsys_whole(params.n_recommendations) }}", *table_retention_args(config),
        *SHARD_ARGUMENTS), config=config,
        shards=shards.output, map_index_template=SHARD_LABEL, execution_timeout=PREDICT_TIMEOUT)
    publish = trainer_task("publish_predictions_task", trainer_args(
        config, "--n-shards", "{{ recsys_whole(params.n_shards) }}",
        "--n-recommendations", "{{ recsys_whole(params.n_recommendations) }}"), config=config,
        execution_timeout=timedelta(minutes=30),
        pool=config.writers_pool)  # writes recommendations

    image >> model >> window >> shards >> predict >> publish
