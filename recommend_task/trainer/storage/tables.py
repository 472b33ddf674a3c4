"""BigQuery table schemas of the product and their creation (idempotent, on first use).

``events``            one row per learning event; partitioned by ``event_date``, clustered by user.
``model_metrics``     one row per evaluated model; partitioned by ``run_date``.
``recommendations``   top-N per user and day, one row per (run_date, user_id, rank);
                      partitioned by ``run_date``, clustered by ``user_id``.
``recommendations_latest``  view: the newest day of ``recommendations`` up to today.
``event_stats``       one row per run date: the day's event statistics and anomaly verdict;
                      partitioned by ``run_date``.
``serving_metrics``   one row per served day: what the served recommendations hit the next day,
                      next to the popularity counterfactual; partitioned by ``served_date``.
``publications``      one row per change of the published model (promotion or rollback);
                      partitioned by ``published_date``.
``tuning_trials``     one row per trial of a run's tuning search; partitioned by ``run_date``.

Partitions of every table but ``events`` expire (:mod:`trainer.storage.retention`): ``recommendations``
after its own retention, the metrics tables and ``publications`` after the metrics retention.
A column added to a spec is added to an existing table on the next :func:`ensure_table`.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from google.cloud import bigquery
from google.cloud.bigquery import SchemaField as F

from trainer import contract
from trainer.storage import retention
from trainer.storage.clients import bq_retry

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.tables")

EVENTS = "events"
MODEL_METRICS = "model_metrics"
RECOMMENDATIONS = "recommendations"
RECOMMENDATIONS_LATEST = "recommendations_latest"
EVENT_STATS = "event_stats"
SERVING_METRICS = "serving_metrics"
PUBLICATIONS = "publications"
TUNING_TRIALS = "tuning_trials"

METRIC_NAMES = ("precision", "recall", "map", "ndcg", "coverage")
RECOMMENDERS = ("model", "popularity", "published")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    schema: tuple[F, ...]
    partition_field: str
    clustering: tuple[str, ...] = ()
    description: str = ""


EVENTS_SPEC = TableSpec(
    name=EVENTS,
    schema=(
        F("event_id", "STRING", description="unique id of the event: rows sharing one count once"),
        F("user_id", "STRING", description="learner id; rows without one are dropped"),
        F("item_id", "STRING", description="lesson/course id; rows without one are dropped"),
        F("event_type", "STRING", description="view | start | complete (weights per type)"),
        F("event_timestamp", "TIMESTAMP", description="when it happened (UTC)"),
        F("event_date", "DATE", mode="REQUIRED", description="partition: UTC date of the event"),
    ),
    partition_field="event_date",
    clustering=("user_id",),
    description="Learning-app user events (input of the recommender).",
)

MODEL_METRICS_SPEC = TableSpec(
    name=MODEL_METRICS,
    schema=(
        F("model_id", "STRING", mode="REQUIRED"),
        F("run_date", "DATE", mode="REQUIRED", description="partition: last day of the window"),
        F("evaluated_at", "TIMESTAMP", mode="REQUIRED"),
        F("model_uri", "STRING", mode="REQUIRED"),
        F("k", "INT64", mode="REQUIRED", description="cut-off of the @k metrics"),
        F("eval_users", "INT64", mode="REQUIRED", description="users with holdout interactions"),
        *(
            F(f"{rec}_{metric}", "FLOAT64", description=f"{metric}@k of the {rec} recommender")
            for rec in RECOMMENDERS
            for metric in METRIC_NAMES
        ),
        F("published_model_id", "STRING", description="model published when this one was evaluated"),
        F("primary_metric", "STRING", mode="REQUIRED"),
        F("verdict", "STRING", mode="REQUIRED", description="pass | fail"),
        F("reasons", "STRING", description="why the verdict is what it is"),
        F("params", "STRING", description="training parameters as JSON"),
        # Lineage: what produced the model, from the run's manifest and the step's environment.
        F("airflow_run_id", "STRING", description="the recommend_train run that evaluated it"),
        F("image", "STRING", description="the trainer image (pinned by digest where resolved)"),
        F("window_start", "DATE", description="first day of the events window"),
        F("train_end", "DATE", description="last training day (the holdout days follow)"),
        F("events_rows_read", "INT64", description="rows of the window read"),
        F("train_users", "INT64"),
        F("train_items", "INT64"),
        F("train_interactions", "INT64", description="non-zero (user, item) cells trained on"),
        # Where the model's settings (in params) came from: train_task's tuning.
        F("tuning_source", "STRING",
          description="search (this run's) | reused (an earlier search's) | default | params"),
        F("tuned_on", "DATE", description="run date of the search that chose the settings"),
        F("tuned_model_id", "STRING", description="the model that search trained with them"),
        F("tuning_note", "STRING", description="why no search ran when one was due"),
    ),
    partition_field="run_date",
    description="Offline evaluation of each trained model against a popularity baseline.",
)

RECOMMENDATIONS_SPEC = TableSpec(
    name=RECOMMENDATIONS,
    schema=(
        F("run_date", "DATE", mode="REQUIRED", description="partition: the day they are for"),
        F("user_id", "STRING", mode="REQUIRED"),
        F("rank", "INT64", mode="REQUIRED", description="1 = best"),
        F("item_id", "STRING", mode="REQUIRED"),
        F("score", "FLOAT64", mode="REQUIRED"),
        F("model_id", "STRING", mode="REQUIRED"),
        F("generated_at", "TIMESTAMP", mode="REQUIRED"),
    ),
    partition_field="run_date",
    clustering=("user_id",),
    description="Top-N recommendations per user and day (read by the web app).",
)


TUNING_TRIALS_SPEC = TableSpec(
    name=TUNING_TRIALS,
    schema=(
        F("run_date", "DATE", mode="REQUIRED", description="partition: the run that searched"),
        F("model_id", "STRING", mode="REQUIRED", description="the model trained with the winner"),
        F("trial", "INT64", mode="REQUIRED", description="0 = today's default settings"),
        F("factors", "INT64"),
        F("regularization", "FLOAT64"),
        F("alpha", "FLOAT64"),
        F("weighting", "STRING", description="raw | log1p"),
        F("status", "STRING", mode="REQUIRED",
          description="ok | stopped (not promoted) | nan | over_budget | too_costly"),
        F("rung", "INT64", description="furthest rung fitted (-1: never fitted)"),
        F("iterations", "INT64", description="ALS iterations of its last fit"),
        F("k", "INT64", description="cut-off of the validation metrics"),
        F("validation_ndcg", "FLOAT64", description="ndcg@k on the validation days"),
        F("validation_recall", "FLOAT64", description="recall@k on the validation days"),
        F("seconds", "FLOAT64", description="its fits and scoring"),
        F("winner", "BOOL", mode="REQUIRED"),
        F("note", "STRING"),
        F("seed", "INT64"),
        F("loaded_at", "TIMESTAMP", mode="REQUIRED"),
    ),
    partition_field="run_date",
    description="Every trial of each run's hyper-parameter search (trials.json beside the model).",
)

EVENT_STATS_SPEC = TableSpec(
    name=EVENT_STATS,
    schema=(
        F("run_date", "DATE", mode="REQUIRED", description="partition: the day the statistics are of"),
        F("computed_at", "TIMESTAMP", mode="REQUIRED"),
        F("status", "STRING", mode="REQUIRED",
          description="ok | anomaly (not trained on) | accepted (trained on anyway) | "
          "unchecked (too few events)"),
        F("anomalies", "STRING", mode="REPEATED", description="each broken rule: rule, figure and limit"),
        F("accepted", "BOOL", mode="REQUIRED", description="an operator accepted the day's anomalies"),
        F("events", "INT64", mode="REQUIRED", description="valid events of the day"),
        F("events_by_type", "RECORD", mode="REPEATED", description="valid events per known type", fields=(
            F("event_type", "STRING", mode="REQUIRED"), F("events", "INT64", mode="REQUIRED"),
            F("trailing_median", "FLOAT64", description="median daily count over the trailing days"))),
        F("trailing_days", "INT64", mode="REQUIRED", description="days with events in the 7 before"),
        F("trailing_median_events", "FLOAT64"),
        F("active_users", "INT64", mode="REQUIRED"),
        F("active_items", "INT64", mode="REQUIRED"),
        F("events_per_user_median", "FLOAT64"),
        F("events_per_user_p99", "INT64", description="nearest rank"),
        F("events_per_user_max", "INT64"),
        F("top_user_id", "STRING", description="the user with the most events"),
        F("top_user_share", "FLOAT64", description="their share of the day's events"),
        F("new_users", "INT64", description="users without events in the trailing days"),
        F("new_user_event_share", "FLOAT64"),
        F("new_items", "INT64", description="items without events in the trailing days"),
        F("new_item_event_share", "FLOAT64"),
        F("item_drift", "FLOAT64", description="Jensen-Shannon distance of item popularity, 0..1"),
        F("type_drift", "FLOAT64", description="Jensen-Shannon distance of the event-type mix, 0..1"),
        F("rows_read", "INT64", mode="REQUIRED", description="rows of the day's partition"),
        F("bad_rows", "RECORD", mode="REPEATED", description="invalid rows of the day per reason", fields=(
            F("reason", "STRING", mode="REQUIRED"), F("rows", "INT64", mode="REQUIRED"))),
        F("duplicate_rows", "INT64", description="copies of the day's events (same event_id): not counted"),
        F("conflicting_rows", "INT64", description="those copies whose content differs from the event's"),
        F("rules", "STRING", description="the limits the day was judged by, as JSON"),
        F("airflow_run_id", "STRING"),
        F("image", "STRING", description="the trainer image that computed the row"),
        F("accepted_by", "STRING", description="who approved training on the anomalous day (Airflow user)"),
        F("accepted_at", "TIMESTAMP", description="when they approved it"),
        F("accept_reason", "STRING", description="the reason they gave"),
    ),
    partition_field="run_date",
    description="Per-day statistics of the events and the anomaly rules' verdict (create_cf_matrices).",
)

SERVING_METRICS_SPEC = TableSpec(
    name=SERVING_METRICS,
    schema=(
        F("served_date", "DATE", mode="REQUIRED", description="partition: the recommendations' run_date"),
        F("run_date", "DATE", mode="REQUIRED", description="the next day, whose events are the outcome"),
        F("computed_at", "TIMESTAMP", mode="REQUIRED"),
        F("model_id", "STRING", description="the model that produced the served recommendations"),
        F("image", "STRING", description="the trainer image that published them"),
        F("k", "INT64", mode="REQUIRED", description="recommendations per user (the @k)"),
        F("users_served", "INT64", mode="REQUIRED"),
        F("users_returning", "INT64", mode="REQUIRED", description="served users with events the next day"),
        F("users_active", "INT64", mode="REQUIRED",
          description="served users with an item the next day they had not seen in the window"),
        F("model_hit_rate", "FLOAT64", description="share of active users with a served item among them"),
        F("model_recall", "FLOAT64", description="mean share of their new items that were served"),
        F("popularity_hit_rate", "FLOAT64", description="the same for the popularity counterfactual"),
        F("popularity_recall", "FLOAT64"),
        F("trailing_median_hit_rate", "FLOAT64",
          description="median model_hit_rate of the 7 served days before"),
        F("alerts", "STRING", mode="REPEATED"),
        F("lookback_days", "INT64", mode="REQUIRED", description="the window of seen items and popularity"),
        F("airflow_run_id", "STRING"),
    ),
    partition_field="served_date",
    description="Hit rate and recall of each served day's recommendations on the next day (feedback).",
)


PUBLICATIONS_SPEC = TableSpec(
    name=PUBLICATIONS,
    schema=(
        F("published_date", "DATE", mode="REQUIRED", description="partition: UTC date of published_at"),
        F("published_at", "TIMESTAMP", mode="REQUIRED",
          description=f"when {contract.LATEST_POINTER} named the model"),
        F("model_id", "STRING", mode="REQUIRED"),
        F("model_run_date", "DATE", mode="REQUIRED"),
        F("previous_model_id", "STRING", description="the model it replaced"),
        F("is_rollback", "BOOL", mode="REQUIRED", description="published by recommend_rollback"),
        F("primary_metric", "STRING"),
        F("primary_value", "FLOAT64", description="the model's primary metric@k at evaluation"),
        F("airflow_run_id", "STRING", description="the run that published it"),
        F("image", "STRING"),
    ),
    partition_field="published_date",
    description="Every change of the published model: promotions and rollbacks (promote_model).",
)


def table_id(project: str, dataset: str, name: str) -> str:
    return f"{project}.{dataset}.{name}"


def ensure_dataset(client: bigquery.Client, project: str, dataset: str, location: str) -> None:
    ds = bigquery.Dataset(f"{project}.{dataset}")
    ds.location = location
    client.create_dataset(ds, exists_ok=True, retry=bq_retry())


def ensure_table(client: bigquery.Client, project: str, dataset: str, spec: TableSpec,
                 expiration_days: int | None = None) -> str:
    """Create the table if it is missing; returns its full id. ``expiration_days`` sets how long
    a partition is kept (0: forever), on an existing table too; None leaves it as it is (the
    producer owns the events table's)."""
    tid = table_id(project, dataset, spec.name)
    wanted = retention.expiration_ms(expiration_days) if expiration_days is not None else None
    table = bigquery.Table(tid, schema=list(spec.schema))
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=spec.partition_field, expiration_ms=wanted
    )
    if spec.clustering:
        table.clustering_fields = list(spec.clustering)
    table.description = spec.description
    existing = client.create_table(table, exists_ok=True, retry=bq_retry())
    have = {f.name for f in existing.schema}
    added = [f for f in spec.schema if f.name not in have]
    if added:  # columns are only ever added (nullable), so older rows stay valid
        existing.schema = [*existing.schema, *added]
        existing = client.update_table(existing, ["schema"], retry=bq_retry())
        log.info("added columns %s to %s", ", ".join(f.name for f in added), tid)
    current = existing.time_partitioning.expiration_ms if existing.time_partitioning else None
    if expiration_days is not None and current != wanted:
        existing.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=spec.partition_field, expiration_ms=wanted)
        client.update_table(existing, ["time_partitioning"], retry=bq_retry())
        log.info("partition expiration of %s set to %s (was %s)", tid,
                 f"{expiration_days} days" if wanted else "none",
                 f"{int(current) // retention.DAY_MS} days" if current else "none")
    return tid


def latest_view_query(recommendations: str) -> str:
    """The newest day of ``recommendations`` that is not after today (BigQuery's UTC
    CURRENT_DATE): a day written ahead of its date (by a run dated in the future, which the steps
    refuse since issue 38) is never what the web app reads."""
    # CURRENT_DATE without parentheses (BigQuery accepts both): the emulator stores the view's
    # query that way, and an unchanged query must compare equal on the next run.
    return (f"SELECT * FROM `{recommendations}` WHERE run_date = (SELECT MAX(run_date) "
            f"FROM `{recommendations}` WHERE run_date <= CURRENT_DATE)")


LATEST_VIEW_DESCRIPTION = "Newest day of recommendations up to today (what the web app reads)."


def ensure_latest_view(client: bigquery.Client, project: str, dataset: str) -> str:
    """``recommendations_latest``: the newest day only (see :func:`latest_view_query`), so a
    failed day leaves the previous one visible to readers. A view created by older code with
    another query gets this one (``create_table(exists_ok=True)`` alone would keep the old one),
    by ``CREATE OR REPLACE VIEW``: readers never find the view missing."""
    from trainer.storage import bq

    recs = table_id(project, dataset, RECOMMENDATIONS)
    view_id = table_id(project, dataset, RECOMMENDATIONS_LATEST)
    view = bigquery.Table(view_id)
    view.view_query = latest_view_query(recs)
    view.description = LATEST_VIEW_DESCRIPTION
    existing = client.create_table(view, exists_ok=True, retry=bq_retry())
    if " ".join((existing.view_query or "").split()) != " ".join(view.view_query.split()):
        log.info("redefining %s (was: %s)", view_id, " ".join((existing.view_query or "").split()))
        # A literal: DDL options take no query parameters (the description is a constant).
        bq.run(client, f"CREATE OR REPLACE VIEW `{view_id}` OPTIONS (description = "
               f"{json.dumps(LATEST_VIEW_DESCRIPTION)}) AS {view.view_query}")
    return view_id


def ensure_all(client: bigquery.Client, project: str, dataset: str, location: str,
               table_retention: retention.TableRetention | None = None) -> None:
    """Create the dataset, every table and the view if missing, and apply ``table_retention``
    to the tables the product writes (None: leave their expiration as it is)."""
    ensure_dataset(client, project, dataset, location)
    ensure_table(client, project, dataset, EVENTS_SPEC)
    keep = table_retention
    ensure_table(client, project, dataset, MODEL_METRICS_SPEC, keep and keep.metrics_days)
    ensure_table(client, project, dataset, RECOMMENDATIONS_SPEC, keep and keep.recommendations_days)
    ensure_latest_view(client, project, dataset)
    for spec in (EVENT_STATS_SPEC, SERVING_METRICS_SPEC, PUBLICATIONS_SPEC, TUNING_TRIALS_SPEC):
        ensure_table(client, project, dataset, spec, keep and keep.metrics_days)
