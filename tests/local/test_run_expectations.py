"""Fast checks of how the browser test derives the expected recommendation days from the runs,
at the hours that broke it when it assumed them (before 05:00 UTC, just after midnight, just
before midnight). No stack, no browser."""

from __future__ import annotations

import datetime as dt

import pytest
from stack_support.run_expectations import items_per_user, still_writing, writes

SEEDED = dt.date(2026, 11, 29)  # `make up` on 2026-11-30 seeds events ending the day before


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def run(run_id: str, logical: dt.datetime | None, run_after: dt.datetime, n: int | None = None) -> dict:
    conf = {} if n is None else {"image_uri": None, "lookback_days": 30, "n_recommendations": n}
    return {"dag_run_id": run_id, "logical_date": logical and _iso(logical), "run_after": _iso(run_after),
            "conf": conf}


def ti(run_id: str, state: str, end: dt.datetime | None) -> dict:
    return {"dag_run_id": run_id, "state": state, "end_date": end and _iso(end)}


def at(day: int, hour: int, minute: int, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)


def test_unpaused_at_04_59_the_scheduled_runs_write_the_day_before_then_overwrite_the_trigger():
    """Unpaused at 04:59: a scheduled run for yesterday's 05:00 (run date 11-28), the manual run
    with n=3 (11-29), then at 05:00 today's scheduled run, which replaces 11-29 with 10."""
    runs = [run("scheduled__2026-11-29T05:00:00+00:00", at(29, 5, 0), at(29, 5, 0)),
            run("manual__1", at(30, 4, 59), at(30, 4, 59), n=3),
            run("scheduled__2026-11-30T05:00:00+00:00", at(30, 5, 0), at(30, 5, 0))]
    tis = [ti("scheduled__2026-11-29T05:00:00+00:00", "success", at(30, 4, 59)),
           ti("manual__1", "success", at(30, 5, 0)),
           ti("scheduled__2026-11-30T05:00:00+00:00", "success", at(30, 5, 2))]
    done = writes(runs, tis)
    assert [(w.run_date, w.n) for w in done] == [
        (dt.date(2026, 11, 28), 10), (SEEDED, 3), (SEEDED, 10)]
    assert items_per_user({SEEDED: 10}, done) == {dt.date(2026, 11, 28): 10, SEEDED: 10}
    # Had today's scheduled run finished first, the trigger's 3 would have stayed.
    reordered = [tis[0], ti("manual__1", "success", at(30, 5, 3)), tis[2]]
    assert items_per_user({SEEDED: 10}, writes(runs, reordered))[SEEDED] == 3


@pytest.mark.parametrize("now", [at(30, 0, 30), at(30, 23, 59), at(30, 5, 0)], ids=str)
def test_a_manual_run_writes_the_day_before_its_logical_date_whenever_it_finishes(now):
    runs = [run("manual__x", now, now, n=3)]
    finished = now + dt.timedelta(minutes=2)  # after midnight for the 23:59 trigger
    done = writes(runs, [ti("manual__x", "success", finished)])
    assert [(w.run_date, w.n) for w in done] == [(now.date() - dt.timedelta(days=1), 3)]


def test_asset_triggered_runs_have_no_logical_date_and_use_run_after():
    after = at(1, 0, 30, month=12)
    done = writes([run("asset_triggered__1", None, after)], [ti("asset_triggered__1", "success", after)])
    assert [(w.run_date, w.n) for w in done] == [(dt.date(2026, 11, 30), 10)]


def test_failed_and_unfinished_predicts_write_nothing_and_unfinished_ones_are_reported():
    runs = [run("manual__failed", at(30, 6, 0), at(30, 6, 0)),
            run("manual__busy", at(30, 7, 0), at(30, 7, 0))]
    tis = [ti("manual__failed", "failed", at(30, 6, 1)), ti("manual__busy", "running", None)]
    assert writes(runs, tis) == []
    assert items_per_user({SEEDED: 10}, writes(runs, tis)) == {SEEDED: 10}
    assert still_writing(tis) == ["manual__busy"]
