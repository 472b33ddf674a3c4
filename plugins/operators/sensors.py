"""Sensors that gate the trainer steps: the run date's events complete, and a published model.

Both fail with a message that says what was missing, not just "timed out".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout  # moved in Airflow 3.2
from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException

from operators import contract
from operators.artifacts import split_gcs_uri


class _ExplainedTimeout:
    """Mixin: a sensor's timeout names what it waited for (poke and reschedule modes; a
    deferred sensor's timeout is raised by the triggerer, whose message Airflow writes)."""

    timeout: float

    def missing(self) -> str:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        try:
            return super().execute(context)  # type: ignore[misc]
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(f"{self.missing()} after waiting {self.timeout:.0f}s") from exc


class EventsCompleteSensor(_ExplainedTimeout, BaseSensorOperator):
    """Wait until the run date's events look complete: at least ``min_rows`` rows with
    ``date_column = run_date``, and at least ``min_fraction`` of the median daily count of the
    ``trailing_days`` before it (days with events). A day still arriving (a third of the usual
    volume) keeps the sensor waiting; at the timeout it fails naming the counts, so no model is
    trained and nothing is published from a partial day. A new table without history needs
    only ``min_rows``.

    Own sensor because the provider's BigQuery sensors check that a table or partition exists,
    not how many rows it holds, and the SQL sensor's BigQuery hook queries through the discovery
    client, which ignores BIGQUERY_EMULATOR_HOST (BigQueryHook.get_conn, providers-google 22).
    The query itself goes through the stock hook's client."""

    template_fields: Sequence[str] = ("table", "run_date")
    ui_color = "#e0f2f1"

    def __init__(self, *, table: str, run_date: str, date_column: str, gcp_conn_id: str,
                 location: str | None = None, min_rows: int = 1, min_fraction: float = 0.5,
                 trailing_days: int = 7, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= min_fraction <= 1 or trailing_days < 1 or min_rows < 1:
            raise ValueError("min_fraction must be in [0, 1], trailing_days and min_rows at least 1")
        self.table, self.run_date, self.date_column = table, run_date, date_column
        self.gcp_conn_id, self.location, self.min_rows = gcp_conn_id, location, min_rows
        self.min_fraction, self.trailing_days = min_fraction, trailing_days
        self._last = "no count yet"

    def daily_counts(self) -> dict[str, int] | None:
        """Rows per day from ``trailing_days`` before the run date to it; None: no table yet."""
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        project = self.table.split(".")[0]
        client = BigQueryHook(gcp_conn_id=self.gcp_conn_id, location=self.location,
                              use_legacy_sql=False).get_client(
            project_id=project, location=self.location)
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter("d", "DATE", self.run_date),
            bigquery.ScalarQueryParameter("n", "INT64", self.trailing_days)])
        try:
            rows = client.query(
                f"SELECT {self.date_column} AS day, COUNT(*) AS n FROM `{self.table}` "
                f"WHERE {self.date_column} BETWEEN DATE_SUB(@d, INTERVAL @n DAY) AND @d "
                f"GROUP BY {self.date_column}", job_config=config).result()
        except NotFound:
            return None
        return {str(row["day"]): int(row["n"]) for row in rows}

    def poke(self, context: Context) -> bool:
        counts = self.daily_counts()
        if counts is None:
            self._last = f"table {self.table} does not exist"
            self.log.info("%s yet", self._last)
            return False
        today = counts.pop(self.run_date, 0)
        trailing = sorted(counts.values())
        import statistics  # here, not at the top: poking needs it, every parse would pay 1.6 ms

        median = statistics.median(trailing) if trailing else 0
        need = max(self.min_rows, math.ceil(self.min_fraction * median))
        self._last = (f"{today:,} rows for {self.run_date}, need {need:,} "
                      + (f"({self.min_fraction:.0%} of the median {median:,.0f} of the {len(trailing)} "
                         "days before it with events)" if trailing else "(no earlier day with events)"))
        self.log.info("%s: %s", self.table, self._last)
        return today >= need

    def missing(self) -> str:
        return f"events of {self.run_date} in {self.table} incomplete: {self._last}"


class PublishedModelSensor(_ExplainedTimeout, BaseSensorOperator):
    """Wait for the ``models/LATEST`` pointer under ``artifacts_uri``: ``GCSHook.exists`` each
    poke, or (``deferrable``, where Composer has a triggerer) the stock ``GCSBlobTrigger``, in
    the shape of the provider's ``GCSObjectExistenceSensor``.

    Not that sensor itself: importing its module costs a fresh interpreter about 1.3 s, which
    every parse of ``recommend_predict`` would pay, and building it inside this task would nest
    an operator in ours. The hook and the trigger are imported when the task runs. The pointer
    alone is enough: promotion writes the model, then the pointer (with a generation
    precondition), and predict checks the model it names before scoring."""

    template_fields: Sequence[str] = ("artifacts_uri",)
    ui_color = "#e0f2f1"

    def __init__(self, *, artifacts_uri: str, gcp_conn_id: str, deferrable: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.artifacts_uri, self.gcp_conn_id, self.deferrable = artifacts_uri, gcp_conn_id, deferrable

    def pointer(self) -> tuple[str, str]:
        """``(bucket, object)`` of the published model's pointer."""
        bucket, name = split_gcs_uri(contract.latest_pointer(self.artifacts_uri))
        return bucket, name.lstrip("/")

    def poke(self, context: Context) -> bool:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        bucket, name = self.pointer()
        self.log.info("waiting for gs://%s/%s", bucket, name)
        return GCSHook(gcp_conn_id=self.gcp_conn_id).exists(bucket, name)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return True
        from airflow.providers.google.cloud.triggers.gcs import GCSBlobTrigger

        bucket, name = self.pointer()
        self.defer(trigger=GCSBlobTrigger(bucket=bucket, object_name=name, use_glob=False,
                                          poke_interval=self.poke_interval,
                                          google_cloud_conn_id=self.gcp_conn_id, hook_params={}),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> bool:
        if event.get("status") == "error":
            raise AirflowException(f"{self.missing()}: {event.get('message')}")
        self.log.info("published model pointer found: %s", contract.latest_pointer(self.artifacts_uri))
        return True

    def missing(self) -> str:
        return (f"no published model at {contract.latest_pointer(self.artifacts_uri)} "
                "(run recommend_train until a model passes evaluation)")
