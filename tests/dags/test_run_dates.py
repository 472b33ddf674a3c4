"""Which day of events a run works on, at the hours that broke tests which assumed it.

The DAGs' timetables decide which runs exist from the wall clock; ``recsys_run_date`` turns a run
into the day of events it reads and writes. Both are evaluated here with "now" set to just after
midnight, just before and at the 05:00 UTC schedule, and just before midnight, across a month
and a year boundary, against dates computed independently of Airflow. No DB, no clock waits.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from conftest import load_dagbag

from operators.macros import MACROS, RUN_DATE, run_date_for

SCHEDULE_HOUR = {"recommend_train": 3, "recommend_predict": 5}  # daily, UTC
NOWS = [dt.datetime(2026, 11, 30, 0, 30), dt.datetime(2026, 11, 30, 4, 59), dt.datetime(2026, 11, 30, 5, 0),
        dt.datetime(2026, 11, 30, 23, 59), dt.datetime(2026, 12, 1, 0, 30), dt.datetime(2027, 1, 1, 4, 59)]


def latest_schedule_before(now: dt.datetime, hour: int) -> dt.datetime:
    """The latest daily ``hour``:00 at or before ``now``, computed without Airflow."""
    today = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return today if today <= now else today - dt.timedelta(days=1)


@pytest.fixture(scope="module")
def dags():
    return load_dagbag().dags


@pytest.mark.parametrize("now", NOWS, ids=lambda d: d.strftime("%Y-%m-%dT%H:%M"))
@pytest.mark.parametrize("dag_id", sorted(SCHEDULE_HOUR))
def test_unpausing_schedules_the_latest_past_run_and_it_reads_the_day_before(dags, dag_id, now, monkeypatch):
    """What the scheduler creates right after the DAG is unpaused (no earlier scheduled run):
    before the day's schedule that is yesterday's, whose run date is two days back."""
    import airflow.timetables.trigger as trigger
    from airflow.timetables.base import TimeRestriction

    now = now.replace(tzinfo=dt.UTC)
    monkeypatch.setattr(trigger, "utcnow", lambda: now)
    dag = dags[dag_id]
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup))
    expected = latest_schedule_before(now, SCHEDULE_HOUR[dag_id])
    assert info.run_after == expected
    run = SimpleNamespace(logical_date=info.logical_date, run_after=info.run_after)
    assert run_date_for(run) == (expected.date() - dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize("now", NOWS, ids=lambda d: d.strftime("%Y-%m-%dT%H:%M"))
def test_manual_and_asset_triggered_runs_read_the_day_before_they_were_triggered(dags, now):
    """A manual run's logical date is its trigger time; an asset-triggered run has no logical
    date, so the macro falls back to ``run_after``. Rendered through a DAG task, as a run does."""
    now = now.replace(tzinfo=dt.UTC)
    yesterday = (now.date() - dt.timedelta(days=1)).isoformat()
    task = dags["recommend_predict"].get_task("publish_predictions")
    for run in (SimpleNamespace(logical_date=now, run_after=now),
                SimpleNamespace(logical_date=None, run_after=now)):
        assert task.render_template(RUN_DATE, {"dag_run": run, **MACROS}) == yesterday


def test_run_dates_are_utc_days_whatever_the_timezone_of_the_date():
    late_evening_utc = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert run_date_for(SimpleNamespace(logical_date=late_evening_utc, run_after=None)) == "2026-11-29"
