"""The check that the web app's recommendations are fresh, whatever stopped them (a paused DAG,
a stuck sensor, a failing step, a run that never started).

Own operator because the provider's BigQuery check operators query through the discovery
client, which ignores BIGQUERY_EMULATOR_HOST (BigQueryHook.get_conn, providers-google 22); this
one uses the stock hook's client, like the events sensor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import BaseOperator, Context


def due_day(checked_at: dt.datetime, deadline_hour: int) -> dt.date:
    """The newest day whose recommendations must be published at ``checked_at`` (UTC): day D is
    due from ``deadline_hour`` o'clock UTC on D + 1."""
    return (checked_at.astimezone(dt.UTC) - dt.timedelta(hours=deadline_hour)).date() - dt.timedelta(days=1)


class RecommendationsFreshnessCheck(BaseOperator):
    """Fail (once, no retry: the next hourly check looks again) unless ``view`` holds the day
    that is due at the run's time; the task's failure callback sends the Slack alert."""

    template_fields: Sequence[str] = ("view",)
    ui_color = "#fff3e0"

    def __init__(self, *, view: str, gcp_conn_id: str, deadline_hour: int, location: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= deadline_hour <= 23:
            raise ValueError(f"deadline_hour must be 0..23, got {deadline_hour}")
        self.view, self.gcp_conn_id, self.location = view, gcp_conn_id, location
        self.deadline_hour = deadline_hour

    def newest_day(self) -> dt.date | None:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
        from google.api_core.exceptions import NotFound

        client = BigQueryHook(gcp_conn_id=self.gcp_conn_id, location=self.location,
                              use_legacy_sql=False).get_client(project_id=self.view.split(".")[0],
                                                               location=self.location)
        try:
            rows = list(client.query(f"SELECT MAX(run_date) AS day FROM `{self.view}`").result())
        except NotFound:
            return None
        return rows[0]["day"] if rows else None

    def execute(self, context: Context) -> str:
        dag_run = context["dag_run"]
        checked_at = dag_run.logical_date or dag_run.run_after  # the run's time, not the clock's
        due = due_day(checked_at, self.deadline_hour)
        newest = self.newest_day()
        if newest is None or newest < due:
            behind = (f"the newest day in {self.view} is {newest}" if newest
                      else f"{self.view} is empty or missing")
            raise AirflowFailException(
                f"recommendations are stale: {behind}; {due} was due by "
                f"{due + dt.timedelta(days=1)} {self.deadline_hour:02d}:00 UTC")
        self.log.info("recommendations are fresh: newest day %s (due: %s)", newest, due)
        return newest.isoformat()
