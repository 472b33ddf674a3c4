"""What the Recommender page shows, read from BigQuery and Cloud Storage through the stock
Google hooks and the DAGs' own configuration and connection (the emulators locally, the real
services on Composer). Nothing is copied into Airflow's database.

Every query reads only the columns it shows and the partitions of the chosen days. Calls are
bounded (a few seconds, a short retry), so a BigQuery or GCS outage answers quickly as
:class:`Unavailable` instead of the clients' default of minutes of retries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from operators import contract
from operators.artifacts import split_gcs_uri
from operators.config import RecsysConfig
from operators.redaction import error_line

log = logging.getLogger(__name__)

SCHEMA_TTL_S = 300.0  # how long the page trusts model_metrics' columns (added, never removed)
DEADLINE_S = 8.0  # per call, retries included: the page answers within it even when a service is down
CANCEL_S = 3.0  # what a page that gave up waits more, for its job's cancellation to be accepted
METRICS = ("recall", "ndcg", "coverage")
MODEL_COLUMNS = (
    "model_id", "run_date", "evaluated_at", "k", "eval_users", "verdict", "reasons", "params",
    "published_model_id", "primary_metric", "airflow_run_id", "image", "window_start", "train_end",
    "events_rows_read", "train_users", "train_items", "train_interactions",
    "tuning_source", "tuned_on", "tuned_model_id", "tuning_note",
    *(f"{rec}_{m}" for rec in ("model", "popularity", "published") for m in METRICS),
)
# A model's tuning search (train_task's trials.json, loaded by evaluate_task): every trial, in order.
TRIAL_COLUMNS = ("trial", "factors", "regularization", "alpha", "weighting", "status", "rung", "iterations",
                 "k", "validation_ndcg", "validation_recall", "seconds", "winner", "note")
TRIALS_SQL = """
    SELECT {columns} FROM `{table}.tuning_trials`
    WHERE run_date = @run_date AND model_id = @model_id ORDER BY trial"""
SERVING_COLUMNS = ("served_date", "model_id", "k", "users_active", "model_hit_rate", "popularity_hit_rate",
                   "model_recall", "popularity_recall", "alerts")
STATS_COLUMNS = ("run_date", "status", "anomalies", "accepted", "events", "active_users", "item_drift",
                 "type_drift", "top_user_share", "new_item_event_share")
PUBLICATION_COLUMNS = ("published_at", "model_id", "model_run_date", "previous_model_id", "is_rollback",
                       "primary_metric", "primary_value", "airflow_run_id")
# The DAG runs whose steps leave a status record (operators.contract.status_record_uri).
LINEAGE_STEPS = (
    ("recommend_train", "create_cf_matrices", "events window → matrices"),
    ("recommend_train", "train", "matrices → model"),
    ("recommend_train", "evaluate", "model → evaluation"),
    ("recommend_train", "promote_model", "evaluation → publication"),
)


# The DAG whose runs write each figure: a user sees a figure only if they may read that DAG's runs.
FIGURE_DAGS = ("recommend_train", "recommend_predict", "recommend_feedback", "recommend_rollback")
# What the model page reads of `recommendations`: the days it shows, these columns (run_date and
# model_id for the filter, rank to count users: every user served has a rank 1).
SERVED_COLUMNS = ("run_date", "model_id", "rank")
SERVED_DAYS_SQL = """
    SELECT run_date, COUNT(*) AS rows_written, COUNTIF(rank = 1) AS users
    FROM `{table}.recommendations` WHERE run_date BETWEEN @first AND @last AND model_id = @id
    GROUP BY run_date ORDER BY run_date"""


class Unavailable(RuntimeError):
    """BigQuery or Cloud Storage did not answer; the message is one line for the page."""


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _one_line(exc: BaseException) -> str:
    return error_line(exc)  # never a credentials file's path or name


class RecommenderStore:
    """Reads for the Recommender page, for one deployment's configuration."""

    def __init__(self, config: RecsysConfig) -> None:
        self.config = config
        self._table = f"{config.project}.{config.dataset}"
        self._bq = None
        self._gcs = None
        self._model_columns: tuple[float, frozenset[str]] | None = None

    # --- clients -------------------------------------------------------------------------------

    def bigquery(self):
        if self._bq is None:
            from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

            hook = BigQueryHook(gcp_conn_id=self.config.gcp_conn_id, location=self.config.location,
                                use_legacy_sql=False)
            self._bq = hook.get_client(project_id=self.config.project, location=self.config.location)
        return self._bq

    def storage(self):
        if self._gcs is None:
            from airflow.providers.google.cloud.hooks.gcs import GCSHook

            self._gcs = GCSHook(gcp_conn_id=self.config.gcp_conn_id).get_conn()
        return self._gcs

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts; an absent table is no rows (a fresh install); any other failure is
        :class:`Unavailable`."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        types = {bool: "BOOL", int: "INT64", float: "FLOAT64", str: "STRING", dt.date: "DATE"}
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(name, types[type(value)], value)
            for name, value in (params or {}).items()])
        retry = bigquery.DEFAULT_RETRY.with_deadline(DEADLINE_S)
        # Our own id: a job whose insert timed out can still be cancelled by it.
        job_id = f"recommender_page_{uuid.uuid4().hex}"
        try:
            job = self.bigquery().query(sql, job_config=config, retry=retry, job_retry=None,
                                        timeout=DEADLINE_S, job_id=job_id)
            return [dict(row.items()) for row in job.result(retry=retry, timeout=DEADLINE_S)]
        except NotFound as exc:
            if "Not found: Table" in str(exc) or "was not found" in str(exc):
                return []
            raise Unavailable(f"BigQuery: {_one_line(exc)}") from None
        except Exception as exc:  # any client or transport failure is an outage here
            # A job the page stopped waiting for would go on scanning (and billing) for no one.
            cancelled = self._cancel(job_id)
            raise Unavailable(f"BigQuery did not answer: {_one_line(exc)}{cancelled}") from None

    def _cancel(self, job_id: str) -> str:
        """Cancel the job if it exists and still runs; what to add to the page's message."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        # Cancellation is a request, not a guarantee (BigQuery's and the emulator's alike: one that
        # lands while the job is starting can be missed): asked again until the job is done,
        # within CANCEL_S.
        deadline = time.monotonic() + CANCEL_S
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                job = self.bigquery().cancel_job(job_id, location=self.config.location, timeout=left,
                                                 retry=bigquery.DEFAULT_RETRY.with_deadline(left))
            except NotFound:
                return ""  # never created: nothing runs
            except Exception as exc:  # the outage may be why: say so
                log.warning("Recommender page: could not cancel BigQuery job %s: %s", job_id, _one_line(exc))
                return f" (job {job_id} could not be cancelled)"
            if job.state == "DONE":
                return f" (job {job_id} cancelled)" if job.error_result else ""
            if time.monotonic() > deadline:
                log.warning("Recommender page: BigQuery job %s still %s after its cancellation", job_id,
                            job.state)
                return f" (job {job_id} asked to cancel)"
            time.sleep(0.2)

    def read_object(self, uri: str) -> bytes | None:
        """The object's bytes, None when there is none; :class:`Unavailable` on an outage."""
        from google.api_core.retry import Retry

        bucket, name = split_gcs_uri(uri)
        try:
            blob = self.storage().bucket(bucket).get_blob(name, timeout=DEADLINE_S,
                                                          retry=Retry(deadline=DEADLINE_S))
            return None if blob is None else blob.download_as_bytes(timeout=DEADLINE_S,
                                                                    retry=Retry(deadline=DEADLINE_S))
        except Exception as exc:
            raise Unavailable(f"Cloud Storage did not answer: {_one_line(exc)}") from None

    def read_json(self, uri: str) -> Any | None:
        data = self.read_object(uri)
        return None if data is None else json.loads(data)

    def model_columns(self) -> str:
        """:data:`MODEL_COLUMNS` for a SELECT on ``model_metrics``, a column the table does not
        have yet as NULL: a release's new columns are added by its trainer's first step, and the
        page must not fail in between (the table's schema, from the tables API, kept 5 minutes)."""
        from google.cloud import bigquery

        now = time.monotonic()
        if self._model_columns is None or now - self._model_columns[0] > SCHEMA_TTL_S:
            try:
                table = self.bigquery().get_table(
                    f"{self._table}.model_metrics", retry=bigquery.DEFAULT_RETRY.with_deadline(DEADLINE_S),
                    timeout=DEADLINE_S)
                self._model_columns = (now, frozenset(f.name for f in table.schema))
            except Exception:  # absent, down, no credentials: the query itself says so, safely
                return ", ".join(MODEL_COLUMNS)
        have = self._model_columns[1]
        return ", ".join(c if c in have else f"NULL AS {c}" for c in MODEL_COLUMNS)

    # --- the overview --------------------------------------------------------------------------

    def overview(self, days: int, today: dt.date | None = None,
                 readable: frozenset[str] = frozenset(FIGURE_DAGS)) -> dict[str, Any]:
        """The charts' and the model table's data for the ``days`` ending today (UTC), of the
        DAGs in ``readable`` only (the others' figures are neither read nor shown)."""
        today = today or dt.datetime.now(dt.UTC).date()
        since = today - dt.timedelta(days=days - 1)
        t = self._table
        queries = {
            "models": (f"SELECT {self.model_columns()} FROM `{t}.model_metrics` "
                       "WHERE run_date >= @since ORDER BY run_date, evaluated_at"),
            "serving": (f"SELECT {', '.join(SERVING_COLUMNS)} FROM `{t}.serving_metrics` "
                        "WHERE served_date >= @since ORDER BY served_date"),
            "event_stats": (f"SELECT {', '.join(STATS_COLUMNS)} FROM `{t}.event_stats` "
                            "WHERE run_date >= @since ORDER BY run_date"),
            # All of them (one a day at most, expired with the metrics): what was published
            # when the chosen days began is in an earlier row.
            "publications": (f"SELECT {', '.join(PUBLICATION_COLUMNS)} FROM `{t}.publications` "
                             "ORDER BY published_at"),
        }
        if "recommend_feedback" not in readable:
            del queries["serving"]
        with ThreadPoolExecutor(len(queries) + 1) as pool:
            futures = {name: pool.submit(self.query, sql, {"since": since} if "@since" in sql else None)
                       for name, sql in queries.items()}
            pointer = pool.submit(self.read_json, contract.latest_pointer(self.config.artifacts_uri))
            data = {name: [{k: _plain(v) for k, v in row.items()} for row in f.result()]
                    for name, f in futures.items()}
            latest = pointer.result()
        data.setdefault("serving", [])
        data["published_spans"] = readable_spans(published_spans(data.pop("publications"), latest), readable)
        spans = data["published_spans"]
        for model in data["models"]:
            model["published"] = [s for s in spans if s["model_id"] == model["model_id"]]
        data["publications"] = [s for s in spans if (s["to"] or today.isoformat()) >= since.isoformat()]
        data.update(since=since.isoformat(), today=today.isoformat(), days=days,
                    published_model_id=latest and latest.get("model_id"),
                    hidden=sorted(set(FIGURE_DAGS) - readable))
        return data

    # --- one model -----------------------------------------------------------------------------

    def model(self, model_id: str, days: int = 30, today: dt.date | None = None,
              readable: frozenset[str] = frozenset(FIGURE_DAGS)) -> dict[str, Any] | None:
        """The model's row, publications, lineage records, tuning trials and the days it served
        among the ``days`` ending today (UTC); None when ``model_metrics`` has no row for it. A
        view reads the model's own ``model_metrics`` and ``tuning_trials`` partitions (its id
        carries its run date), the small ``publications`` table and the ``recommendations``
        partitions of the days shown only: its cost does not grow with the model's age. Figures of
        DAGs outside ``readable`` are neither read nor shown."""
        t = self._table
        run_date = model_run_date(model_id)
        rows = self.query(f"SELECT {self.model_columns()}, model_uri FROM `{t}.model_metrics` "
                          "WHERE run_date = @run_date AND model_id = @id ORDER BY evaluated_at DESC LIMIT 1",
                          {"run_date": run_date, "id": model_id})
        if not rows:
            return None
        model = {k: _plain(v) for k, v in rows[0].items()}
        run_date = dt.date.fromisoformat(model["run_date"])
        today = today or dt.datetime.now(dt.UTC).date()
        first, last = max(run_date, today - dt.timedelta(days=days - 1)), today
        with ThreadPoolExecutor(5) as pool:
            trials = pool.submit(self.query, TRIALS_SQL.format(columns=", ".join(TRIAL_COLUMNS), table=t),
                                 {"run_date": run_date, "model_id": model_id})
            pubs = pool.submit(self.query, f"SELECT {', '.join(PUBLICATION_COLUMNS)} FROM `{t}.publications` "
                                           "ORDER BY published_at")
            served = (pool.submit(self.query, SERVED_DAYS_SQL.format(table=t),
                                  {"first": first, "last": last, "id": model_id})
                      if "recommend_predict" in readable and first <= last else None)
            latest = pool.submit(self.read_json, contract.latest_pointer(self.config.artifacts_uri))
            statuses = pool.submit(self._statuses, run_date)
            rows = [{k: _plain(v) for k, v in r.items()} for r in pubs.result()]
            spans = readable_spans(published_spans(rows, latest.result()), readable)
            model["published"] = [s for s in spans if s["model_id"] == model_id]
            model["is_published"] = bool(latest.result()) and latest.result().get("model_id") == model_id
            model["lineage"] = statuses.result()
            # None of them for a model trained without a search (or before searches existed). A
            # figure that is not finite (JSON has no NaN) is no figure.
            model["trials"] = [{k: None if isinstance(v, float) and not math.isfinite(v) else _plain(v)
                                for k, v in r.items()} for r in trials.result()]
            served_days = [{k: _plain(v) for k, v in r.items()} for r in (served.result() if served else [])]
        with ThreadPoolExecutor(max(1, min(8, len(served_days)))) as pool:
            runs = pool.map(lambda d: self.read_json(contract.run_record_uri(
                self.config.artifacts_uri, d["run_date"], contract.PREDICTIONS_RECORD)), served_days)
            for day, predictions in zip(served_days, runs, strict=True):
                day["airflow_run_id"] = (predictions or {}).get("airflow_run_id")
        model["served_days"] = served_days
        model.update(served_since=first.isoformat(), days=days, hidden=sorted(set(FIGURE_DAGS) - readable))
        manifest = self.read_json(contract.run_record_uri(self.config.artifacts_uri, run_date.isoformat(),
                                                         contract.MANIFEST_RECORD))
        model["manifest"] = manifest and {k: manifest.get(k)
                                          for k in ("window", "counts", "quality", "event_stats")}
        report = contract.join(model["model_uri"], contract.REPORT_PAGE)
        model["has_report"] = self.read_object(report) is not None
        return model

    def _statuses(self, run_date: dt.date) -> list[dict[str, Any]]:
        """The status record of each recommend_train step of the run date (the run that produced
        the model), in pipeline order; a step without one is listed without a run."""
        out = []
        for dag_id, task_id, label in LINEAGE_STEPS:
            record = self.read_json(contract.status_record_uri(
                self.config.artifacts_uri, run_date.isoformat(), contract.status_name(dag_id, task_id))) or {}
            out.append({"dag_id": dag_id, "task_id": task_id, "label": label,
                        "airflow_run_id": record.get("airflow_run_id"), "outcome": record.get("outcome"),
                        "seconds": record.get("seconds"), "image": record.get("image"),
                        "finished_at": record.get("finished_at")})
        return out

    def model_evaluated_by(self, run_id: str) -> str | None:
        """The model a recommend_train run evaluated (its ``model_metrics`` row names the run)."""
        rows = self.query(f"SELECT model_id FROM `{self._table}.model_metrics` WHERE airflow_run_id = @run "
                          "ORDER BY evaluated_at DESC LIMIT 1", {"run": run_id})
        return rows[0]["model_id"] if rows else None

    def report(self, model_id: str) -> bytes | None:
        """The model's report.html, None for a model without one (older models)."""
        model = contract.model_prefix(self.config.artifacts_uri, model_id)
        return self.read_object(contract.join(model, contract.REPORT_PAGE))


def model_run_date(model_id: str) -> dt.date:
    """The run date a model id carries (``als-YYYYMMDD-<hash>``, the app's MODEL_ID)."""
    return dt.datetime.strptime(model_id.split("-")[1], "%Y%m%d").date()


def readable_spans(spans: list[dict[str, Any]], readable: frozenset[str]) -> list[dict[str, Any]]:
    """The publication spans whose DAG (recommend_rollback for a rollback, else recommend_train)
    the user may read."""
    return [s for s in spans if ("recommend_rollback" if s["rollback"] else "recommend_train") in readable]


def published_spans(publications: list[dict[str, Any]],
                    latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each publication as a span: the model, from when, to when (None: still published). The
    pointer itself counts as a publication when the table has no row for it (a model published
    before the table existed)."""
    rows = sorted(publications, key=lambda r: r["published_at"])
    if latest and latest.get("promoted_at") and not any(
            r["model_id"] == latest["model_id"] and r["published_at"][:19] == latest["promoted_at"][:19]
            for r in rows):
        rows.append({"published_at": latest["promoted_at"], "model_id": latest["model_id"],
                     "previous_model_id": latest.get("previous_model_id"),
                     "is_rollback": bool(latest.get("rollback")),
                     "airflow_run_id": latest.get("airflow_run_id")})
        rows.sort(key=lambda r: r["published_at"])
    spans = []
    for row, nxt in zip(rows, [*rows[1:], None], strict=True):
        spans.append({"model_id": row["model_id"], "from": row["published_at"],
                      "to": nxt["published_at"] if nxt else None, "rollback": bool(row.get("is_rollback")),
                      "previous_model_id": row.get("previous_model_id"),
                      "airflow_run_id": row.get("airflow_run_id")})
    return spans
