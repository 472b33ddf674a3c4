"""
### recommend_forget

Forgets learners on request (right to erasure): one trigger with their ids in `user_ids`.
`resolve_image` → `forget`

* Deletes their events (what every later run would learn again) and their rows from
  `recommendations` and every other table of the dataset with a `user_id` column, clears them
  from `event_stats` (top user, anomaly lines), and rewrites every artifact holding them
  (matrices, window and model files without their rows, checksums kept consistent, so the
  published model goes on serving everyone else; records and reports without their ids).
* Safe to trigger again: a second run erases what a run in flight wrote meanwhile, or finds
  nothing left. `forget` runs in the one-slot pool `recsys_bigquery_writers`, so it never
  writes a table while a publish or an evaluation does.
* Slack: success with the counts erased per place (never an id), and failure.
* What cannot be erased in place, and when it expires (BigQuery time travel, Cloud Storage
  soft delete, this run's own conf and logs): docs/operations.md, "Forgetting a learner".
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from operators import config as recsys_config
from operators.dag_defaults import dag_kwargs, trainer_args
from operators.image_pinning import resolve_image
from operators.params import FORGET_PARAMS, fresh
from operators.slack import dag_callbacks
from operators.trainer_step import trainer_task

config = recsys_config.load()

with DAG(
    dag_id="recommend_forget",
    schedule=None,  # on demand only
    params=fresh(FORGET_PARAMS),
    tags=["recsys", "privacy"],
    doc_md=__doc__,
    **dag_kwargs(config, dagrun_timeout=timedelta(hours=3)),
    **dag_callbacks(config, summary="forget"),
):
    image = resolve_image(config)
    forget = trainer_task(
        "forget_user_task", trainer_args(config, "--user-ids-json", "{{ params.user_ids | tojson }}"),
        config=config, task_id="forget", execution_timeout=timedelta(hours=2),
        pool=config.writers_pool)  # deletes from recommendations and events, updates event_stats

    image >> forget
