"""
### recommend_rollback

Publishes an earlier model again: one trigger with the model's id (see `model_metrics` or the
`models/` folder). `resolve_image` → `rollback`

* The model must have passed evaluation; one that failed is refused with the reason.
* Training never publishes a model older than the published one (a backfill only records it),
  so this is the one way back. The next daily training publishes over it as usual.
* `rollback` updates the asset `recsys_published_model`, so `recommend_predict` serves the model.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from operators import config as recsys_config
from operators.dag_defaults import dag_kwargs, published_model_asset, trainer_args
from operators.image_pinning import resolve_image
from operators.params import ROLLBACK_PARAMS, fresh
from operators.slack import dag_callbacks
from operators.trainer_step import trainer_task

config = recsys_config.load()

with DAG(
    dag_id="recommend_rollback",
    schedule=None,  # on demand only
    params=fresh(ROLLBACK_PARAMS),
    tags=["recsys", "training"],
    doc_md=__doc__,
    **dag_kwargs(config, dagrun_timeout=timedelta(hours=1)),
    **dag_callbacks(config, summary=None),
):
    image = resolve_image(config)
    rollback = trainer_task(
        "promote_model_task", trainer_args(config, "--rollback-to", "{{ params.model_id }}",
                                           "--keep-models", str(config.keep_models)),
        config=config, task_id="rollback", execution_timeout=timedelta(minutes=15),
        outlets=[published_model_asset(config)])

    image >> rollback
