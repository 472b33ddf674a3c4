"""Sensors that gate the trainer steps: the run date's events, and a published model.

Both fail with a message that says what was missing, not just "timed out".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout  # moved in Airflow 3.2
from airflow.providers.google.cloud.sensors.gcs import GCSObjectExistenceSensor
from airflow.sdk import BaseSensorOperator, Context

from operators.artifacts import join, split_gcs_uri


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


class BigQueryRowsSensor(_ExplainedTimeout, BaseSensorOperator):
    """Wait until ``table`` holds at least ``min_rows`` rows with ``date_column = run_date``.

    Own sensor because the provider's BigQuery sensors check that a table or partition exists,
    not how many rows it holds, and the SQL sensor's BigQuery hook queries through the discovery
    client, which ignores BIGQUERY_EMULATOR_HOST (BigQueryHook.get_conn, providers-google 22).
    The query itself goes through the stock hook's client."""

    template_fields: Sequence[str] = ("table", "run_date")
    ui_color = "#e0f2f1"

    def __init__(self, *, table: str, run_date: str, date_column: str, gcp_conn_id: str,
                 location: str | None = None, min_rows: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.table, self.run_date, self.date_column = table, run_date, date_column
        self.gcp_conn_id, self.location, self.min_rows = gcp_conn_id, location, min_rows

    def poke(self, context: Context) -> bool:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        project = self.table.split(".")[0]
        client = BigQueryHook(gcp_conn_id=self.gcp_conn_id, location=self.location).get_client(
            project_id=project, location=self.location)
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("d", "DATE", self.run_date)])
        try:
            rows = client.query(
                f"SELECT COUNT(*) AS n FROM `{self.table}` WHERE {self.date_column} = @d",
                job_config=config).result()
        except NotFound:
            self.log.info("table %s does not exist yet", self.table)
            return False
        count = next(iter(rows))["n"]
        self.log.info("%s has %d rows for %s = %s (need %d)", self.table, count, self.date_column,
                      self.run_date, self.min_rows)
        return count >= self.min_rows

    def missing(self) -> str:
        return f"no events for {self.run_date} in {self.table}"


class PublishedModelSensor(_ExplainedTimeout, GCSObjectExistenceSensor):
    """The stock GCS object sensor on the ``models/LATEST`` pointer under ``artifacts_uri``.

    The pointer alone is enough: promotion writes the model, then the pointer (with a
    generation precondition), and predict checks the model it names before scoring."""

    def __init__(self, *, artifacts_uri: str, gcp_conn_id: str, **kwargs) -> None:
        bucket, prefix = split_gcs_uri(artifacts_uri)
        super().__init__(bucket=bucket, object=join(prefix, "models", "LATEST").lstrip("/"),
                         google_cloud_conn_id=gcp_conn_id, **kwargs)
        self.artifacts_uri = artifacts_uri

    def missing(self) -> str:
        return (f"no published model at {self.artifacts_uri}/models/LATEST "
                "(run recommend_train until a model passes evaluation)")
