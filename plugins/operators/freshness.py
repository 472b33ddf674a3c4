"""The check that the web app's recommendations are fresh, whatever stopped them (a paused DAG,
a stuck sensor, a failing step, a run that never started), and that no run of the pipeline is
dated in the future (Airflow 3.3 never schedules such a run's tasks, and with max_active_runs=1
it holds back every later run of its DAG).

Own operator because the provider's BigQuery check operators query through the discovery
client, which ignores BIGQUERY_EMULATOR_HOST (BigQueryHook.get_conn, providers-google 22); this
one uses the stock hook's client, like the events sensor.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import BaseOperator, Context

# The run states a future-dated run sits in (queued until the scheduler looks, then running).
FUTURE_RUN_STATES = ("queued", "running")
MAX_FUTURE_RUNS = 5  # named in an alert; more are counted
_WALK_LIMIT = 20  # runs read per DAG and state: bounds the check's calls to the API server
_END_OF_TIME = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


def due_day(checked_at: dt.datetime, deadline_hour: int) -> dt.date:
    """The newest day whose recommendations must be published at ``checked_at`` (UTC): day D is
    due from ``deadline_hour`` o'clock UTC on D + 1."""
    return (checked_at.astimezone(dt.UTC) - dt.timedelta(hours=deadline_hour)).date() - dt.timedelta(days=1)


def future_runs(dag_ids: Sequence[str], after: dt.datetime,
                log: logging.Logger | None = None) -> list[tuple[str, str, str, dt.datetime]]:
    """``(dag_id, run_id, state, logical_date)`` of the queued and running runs of ``dag_ids``
    whose logical date is after ``after``, newest first per DAG and state.

    Read through the Task SDK's supervisor channel (tasks have no metadata DB access in
    Airflow 3), with the request ``ti.get_previous_dagrun`` sends, for other DAGs: each answer is
    the newest run before a logical date, so walking down from the end of time yields the future
    runs one by one. The same in Airflow 3.1 and 3.3; no API credentials needed.

    Airflow 3.1's API server cannot return a run that has not started (its DagRun model requires
    a start date: HTTP 500), so there a queued run that never ran is skipped with a warning. The
    run that blocks its DAG is the running one (the scheduler starts a future-dated run, then
    never schedules its tasks), and it is found on 3.1 too."""
    from airflow.sdk.api.client import ServerResponseError
    from airflow.sdk.exceptions import AirflowRuntimeError
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import GetPreviousDagRun

    found = []
    for dag_id in dag_ids:
        for state in FUTURE_RUN_STATES:
            before = _END_OF_TIME
            for _ in range(_WALK_LIMIT):
                try:
                    run = task_runner.SUPERVISOR_COMMS.send(
                        GetPreviousDagRun(dag_id=dag_id, logical_date=before, state=state)).dag_run
                except (ServerResponseError, AirflowRuntimeError) as exc:
                    # ServerResponseError in-process (dag.test), AirflowRuntimeError from a worker.
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    (log or logging.getLogger(__name__)).warning(
                        "cannot list the %s runs of %s before %s (%s): not checked for future-dated runs",
                        state, dag_id, before.isoformat(), reason)
                    break
                if run is None or run.logical_date is None or run.logical_date <= after:
                    break
                found.append((dag_id, run.run_id, state, run.logical_date))
                before = run.logical_date
    return found


def describe_future_runs(runs: Sequence[tuple[str, str, str, dt.datetime]]) -> str:
    """One line naming each run (up to :data:`MAX_FUTURE_RUNS`, then a count)."""
    named = ", ".join(f"{dag_id} {run_id} ({state}, logical date {logical_date.isoformat()})"
                      for dag_id, run_id, state, logical_date in runs[:MAX_FUTURE_RUNS])
    more = len(runs) - MAX_FUTURE_RUNS
    return named + (f" and {more} more" if more > 0 else "")


class RecommendationsFreshnessCheck(BaseOperator):
    """Fail (once, no retry: the next hourly check looks again) unless ``view`` holds the day
    that is due at the run's time and no run of ``watched_dag_ids`` is queued or running with a
    logical date after it; the task's failure callback sends the Slack alert."""

    template_fields: Sequence[str] = ("view",)
    ui_color = "#fff3e0"

    def __init__(self, *, view: str, gcp_conn_id: str, deadline_hour: int, location: str | None = None,
                 watched_dag_ids: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= deadline_hour <= 23:
            raise ValueError(f"deadline_hour must be 0..23, got {deadline_hour}")
        self.view, self.gcp_conn_id, self.location = view, gcp_conn_id, location
        self.deadline_hour = deadline_hour
        self.watched_dag_ids = tuple(watched_dag_ids)

    def newest_day(self) -> dt.date | None:
        """The newest day in the view up to today (BigQuery's CURRENT_DATE, as the view itself
        reads it): a day after it, written ahead of its date and shown by a view still defined
        by older code, does not make the recommendations fresh."""
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
        from google.api_core.exceptions import NotFound

        client = BigQueryHook(gcp_conn_id=self.gcp_conn_id, location=self.location,
                              use_legacy_sql=False).get_client(project_id=self.view.split(".")[0],
                                                               location=self.location)
        sql = f"SELECT MAX(run_date) AS day FROM `{self.view}` WHERE run_date <= CURRENT_DATE"
        try:
            rows = list(client.query(sql).result())
        except NotFound:
            return None
        return rows[0]["day"] if rows else None

    def execute(self, context: Context) -> str:
        dag_run = context["dag_run"]
        checked_at = dag_run.logical_date or dag_run.run_after  # the run's time, not the clock's
        due = due_day(checked_at, self.deadline_hour)
        newest = self.newest_day()
        ahead = future_runs(self.watched_dag_ids, checked_at, self.log)
        blocked = f"; future-dated runs block the pipeline: {describe_future_runs(ahead)}" if ahead else ""
        if newest is None or newest < due:
            behind = (f"the newest day in {self.view} is {newest}" if newest
                      else f"{self.view} is empty or missing")
            raise AirflowFailException(
                f"recommendations are stale: {behind}; {due} was due by "
                f"{due + dt.timedelta(days=1)} {self.deadline_hour:02d}:00 UTC{blocked}")
        if ahead:
            raise AirflowFailException(
                f"future-dated runs block the pipeline: {describe_future_runs(ahead)} (recommendations "
                f"are fresh so far: newest day {newest})")
        self.log.info("recommendations are fresh: newest day %s (due: %s)", newest, due)
        return newest.isoformat()
