"""Sensors that gate the trainer steps: the run date's events, and a published model.

The stock BigQuery and GCS sensors build their clients from a Google connection and cannot
be pointed at the local emulators; these use :mod:`operators.gcp`, which can, and otherwise
the stock hooks. Both fail with a message that says what was missing, not just "timed out".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout  # moved in Airflow 3.2
from airflow.sdk import BaseSensorOperator, Context

from operators import gcp


class _ExplainedTimeoutSensor(BaseSensorOperator):
    def missing(self) -> str:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(f"{self.missing()} after waiting {self.timeout:.0f}s") from exc


class BigQueryRowsSensor(_ExplainedTimeoutSensor):
    """Wait until ``table`` holds at least ``min_rows`` rows with ``date_column = run_date``."""

    template_fields: Sequence[str] = ("table", "run_date")
    ui_color = "#e0f2f1"

    def __init__(self, *, table: str, run_date: str, date_column: str, gcp_conn_id: str,
                 location: str | None = None, min_rows: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.table, self.run_date, self.date_column = table, run_date, date_column
        self.gcp_conn_id, self.location, self.min_rows = gcp_conn_id, location, min_rows

    def poke(self, context: Context) -> bool:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        project = self.table.split(".")[0]
        client = gcp.bigquery_client(self.gcp_conn_id, project, self.location)
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


class PublishedModelSensor(_ExplainedTimeoutSensor):
    """Wait until the ``models/LATEST`` pointer under ``artifacts_uri`` names a saved model."""

    template_fields: Sequence[str] = ("artifacts_uri",)
    ui_color = "#e0f2f1"

    def __init__(self, *, artifacts_uri: str, project: str, gcp_conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.artifacts_uri, self.project, self.gcp_conn_id = artifacts_uri, project, gcp_conn_id

    def poke(self, context: Context) -> bool:
        pointer = gcp.read_json(gcp.join(self.artifacts_uri, "models", "LATEST"),
                                self.gcp_conn_id, self.project)
        if pointer is None:
            self.log.info("no published model yet at %s/models/LATEST", self.artifacts_uri)
            return False
        model = gcp.read_json(gcp.join(pointer["model_uri"], "model.json"), self.gcp_conn_id, self.project)
        if model is None:
            self.log.warning("LATEST points at %s, which has no model.json", pointer["model_uri"])
            return False
        self.log.info("published model: %s (%s)", pointer["model_id"], pointer["model_uri"])
        return True

    def missing(self) -> str:
        return (f"no published model at {self.artifacts_uri}/models/LATEST "
                "(run recommend_train until a model passes evaluation)")
