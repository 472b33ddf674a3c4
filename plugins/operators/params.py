"""Run parameters with JSON schemas: the Airflow trigger form shows and validates them."""

from __future__ import annotations

import copy
from typing import Any

from airflow.sdk import Param

# Each Param declares its JSON Schema dialect: draft-07, the one Airflow's own serialization schema
# uses. Without it jsonschema assumes 2020-12, and Airflow checks every Param's schema against
# that meta-schema each time it validates a value: at every parse, once per task and Param
# (0.67 ms against 0.19 ms each; about 20 ms of each parse of recommend_predict: docs/benchmarks.md).
DIALECT = "http://json-schema.org/draft-07/schema#"


def param(default: Any, **schema: Any) -> Param:
    """A Param whose schema (``type``, bounds, ``title``, ``description``...) is draft-07."""
    return Param(default, **{"$schema": DIALECT, **schema})

# Nullable: the trigger form treats an empty non-null string as a missing required value.
IMAGE_URI = param(
    None, type=["null", "string"], maxLength=300, title="Trainer image",
    description="Trainer image to run instead of the environment's tag (Variable "
    "recsys_trainer_image), e.g. REGION-docker.pkg.dev/PROJECT/recsys/trainer:abc123. "
    "Empty: the environment's image. Must match the configured registry allowlist.",
)
# Limits are what the trainer steps accept (tests/dags/test_params.py runs their own checks).
# Templates render an integer param with the `recsys_whole` macro: JSON Schema's integer type admits
# a whole-number float (64.0, from a REST client's JSON), which would render as "64.0" and be
# refused by a step (operators/macros.py).
# Training keeps the window's last 2 days apart for evaluation, so it needs at least 3.
TRAIN_LOOKBACK_DAYS = param(30, type="integer", minimum=3, maximum=365, title="Lookback days",
                            description="Days of events used, ending at the run date; the last 2 "
                            "are the evaluation holdout.")
PREDICT_LOOKBACK_DAYS = param(30, type="integer", minimum=1, maximum=365, title="Lookback days",
                              description="Days of events that define each user's history, "
                              "ending at the run date.")
# The model's settings default to null: the tuning search (or today's settings, with tune off)
# decides; a value given fixes that dimension of the search.
FACTORS = param(None, type=["null", "integer"], minimum=1, maximum=1024, title="ALS factors",
                description="Latent factors of the ALS model. Empty: tuned (64 with tune off).")
ITERATIONS = param(15, type="integer", minimum=1, maximum=200, title="ALS iterations",
                   description="ALS sweeps over users and items.")
REGULARIZATION = param(None, type=["null", "number"], minimum=0, maximum=100, title="Regularization",
                       description="L2 regularization of the ALS factors. Empty: tuned (0.05 with "
                       "tune off).")
ALPHA = param(None, type=["null", "number"], minimum=0.000001, maximum=10000, title="Alpha",
              description="Confidence scaling of the interaction weights. Empty: tuned (2.0 with tune off).")
WEIGHTING = param(None, type=["null", "string"], enum=[None, "raw", "log1p"], title="Input weighting",
                  description="raw summed event weights, or log1p of them. Empty: tuned (raw with "
                  "tune off).")


def tune_param(default: str) -> Param:
    """``tune``: off, always, or weekly; its default is the deployment's (``RECSYS_TUNE``)."""
    return param(default, type="string", enum=["off", "always", "weekly"], title="Tuning search",
                 description="weekly: search the model's settings on the training part's last days when "
                 "the newest settings tuned on or before them are a week old, else reuse those; "
                 "always: search this run; off: today's settings. A setting given above is kept.")
ACCEPT_ANOMALIES = param(False, type="boolean", title="Accept data anomalies",
                         description="Train on this run's day even though its events break an anomaly "
                         "rule (the error of create_cf_matrices names the rule); recorded in event_stats. "
                         "For one run: trigger it for the refused day with this set.")
FEEDBACK_LOOKBACK_DAYS = param(30, type="integer", minimum=1, maximum=365, title="Lookback days",
                               description="Days ending at the served day whose items count as already "
                               "seen and whose popularity the baseline ranks by: predict's lookback_days.")
N_RECOMMENDATIONS = param(10, type="integer", minimum=1, maximum=100, title="Recommendations per user",
                          description="How many items each user gets.")
N_SHARDS = param(1, type="integer", minimum=1, maximum=64, title="Prediction shards",
                 description="Users are split into this many shards by a stable hash; each shard is "
                 "scored by its own job in parallel and the day is published once all succeed.")

TRAIN_PARAMS = {
    "image_uri": IMAGE_URI, "lookback_days": TRAIN_LOOKBACK_DAYS, "factors": FACTORS,
    "iterations": ITERATIONS, "regularization": REGULARIZATION, "alpha": ALPHA, "weighting": WEIGHTING,
    "accept_anomalies": ACCEPT_ANOMALIES,
}


def fresh(params: dict[str, Param]) -> dict[str, Param]:
    """A DAG's own copy of its params: Airflow resolves a run's conf into the Param objects the
    DAG holds, so Params shared at module level would carry one run's values (say
    ``accept_anomalies: true``) into the next DAG parsed in the same process."""
    return copy.deepcopy(params)


def train_params(tune_default: str) -> dict[str, Param]:
    """recommend_train's params, ``tune`` defaulting to the deployment's mode."""
    return fresh({**TRAIN_PARAMS, "tune": tune_param(tune_default)})
PREDICT_PARAMS = {
    "image_uri": IMAGE_URI, "lookback_days": PREDICT_LOOKBACK_DAYS, "n_recommendations": N_RECOMMENDATIONS,
    "n_shards": N_SHARDS,
}
FEEDBACK_PARAMS = {"image_uri": IMAGE_URI, "lookback_days": FEEDBACK_LOOKBACK_DAYS}
ROLLBACK_PARAMS = {
    "image_uri": IMAGE_URI,
    # Nullable like every param without a default (Airflow validates params with their defaults
    # when it builds callback contexts); the rollback step refuses a run without a model id.
    "model_id": param(None, type=["null", "string"], pattern=r"^als-[0-9]{8}-[0-9a-f]{10}$",
                      title="Model to publish",
                      description="Id of an earlier model that passed evaluation, e.g. "
                      "als-20261129-ff0958af2f (model_metrics.model_id)."),
}
FORGET_PARAMS = {
    "image_uri": IMAGE_URI,
    # Nullable for the same reason as model_id; the forget step refuses a run without an id.
    "user_ids": param(None, type=["null", "array"], minItems=1, maxItems=1000,
                      items={"type": "string", "minLength": 1, "maxLength": 1024},
                      title="Learners to forget",
                      description="Ids of the learners to erase, exactly as in events.user_id, one per "
                      "line. Their events, recommendations and every artifact holding them are erased."),
}
