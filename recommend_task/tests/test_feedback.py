"""The served model's hit rate on the next day: a hand-made served day and next day against
figures worked out by hand (the popularity counterfactual too), alerts, the edge cases, and one
row per served day however often or in whatever order days are measured."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from trainer_support.helpers import load_events, query

from trainer.storage import bq, tables
from trainer.storage.partitions import upsert_row

SERVED = dt.date(2026, 6, 10)
NEXT = SERVED + dt.timedelta(days=1)
MODEL = "als-20260610-0123456789"


def _event(day: dt.date, user: str, item: str, kind: str = "view") -> dict:
    return {"user_id": user, "item_id": item, "event_type": kind,
            "event_timestamp": dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC), "event_date": day}


def _days_before(n: int) -> dt.date:
    return SERVED - dt.timedelta(days=n)


# History (--lookback-days 5: SERVED-4..SERVED). Popularity by distinct users: i1 3 (u1, u2, u5),
# i2 2 (u1, u3), i3 1, i4 1: ranks i1, i2, i3, i4 (ties by id). i5's event is outside the window.
HISTORY = [_event(_days_before(1), "u1", "i1"), _event(_days_before(1), "u1", "i2"),
           _event(_days_before(2), "u2", "i1"), _event(SERVED, "u2", "i3"), _event(SERVED, "u3", "i2"),
           _event(_days_before(3), "u4", "i4"), _event(SERVED, "u5", "i1"),
           _event(_days_before(10), "u6", "i5")]
# Served (k = 2) to u1..u4 and u7.
SERVED_ITEMS = {"u1": ["i3", "i4"], "u2": ["i2", "i4"], "u3": ["i1", "i5"], "u4": ["i1", "i2"],
                "u7": ["i1", "i2"]}
# The next day: u1 i3 new (i1 seen); u2 only i1, seen; u3 i3 and i6 new; u4 i2 new; u8 was not
# served; u3's 'share' event is not a known type.
FOLLOWING = [_event(NEXT, "u1", "i3"), _event(NEXT, "u1", "i1", "start"), _event(NEXT, "u2", "i1"),
             _event(NEXT, "u3", "i3"), _event(NEXT, "u3", "i6", "complete"), _event(NEXT, "u4", "i2"),
             _event(NEXT, "u8", "i1"), _event(NEXT, "u3", "i4", "share")]


def _serve(client, project: str, dataset: str, day: dt.date, items: dict[str, list[str]],
           model: str = MODEL) -> None:
    rows = [{"run_date": day, "user_id": user, "rank": rank, "item_id": item, "score": 1.0 / rank,
             "model_id": model, "generated_at": dt.datetime(2026, 6, 11, 5, tzinfo=dt.UTC)}
            for user, picks in items.items() for rank, item in enumerate(picks, 1)]
    schema = list(tables.RECOMMENDATIONS_SPEC.schema)
    arrow = pa.schema([("run_date", pa.date32()), ("user_id", pa.string()), ("rank", pa.int64()),
                       ("item_id", pa.string()), ("score", pa.float64()), ("model_id", pa.string()),
                       ("generated_at", pa.timestamp("us", tz="UTC"))])
    tables.ensure_all(client, project, dataset, "US")
    bq.load_table(client, pa.Table.from_pylist(rows, schema=arrow),
                  tables.table_id(project, dataset, tables.RECOMMENDATIONS), schema, truncate=False)


def _feedback(step, artifacts: str, run_date: dt.date, *extra: str) -> tuple[int, str]:
    return step("feedback_task", "--run-date", str(run_date), "--artifacts-uri", artifacts,
                "--lookback-days", "5", *extra)


def _serving_rows(client, project: str, dataset: str) -> list[dict]:
    return query(client, f"SELECT * FROM `{project}.{dataset}.serving_metrics` ORDER BY served_date")


def test_hit_rate_and_recall_of_a_hand_made_day_and_its_popularity_counterfactual(
        step, bq_client, project, dataset, tmp_path):
    load_events(bq_client, project, dataset, HISTORY + FOLLOWING)
    _serve(bq_client, project, dataset, SERVED, SERVED_ITEMS)
    rc, err = _feedback(step, str(tmp_path), NEXT, "--alert-min-users", "1")
    assert rc == 0, err
    [row] = _serving_rows(bq_client, project, dataset)
    assert (row["served_date"], row["run_date"], row["model_id"], row["k"]) == (SERVED, NEXT, MODEL, 2)
    # Served u1 u2 u3 u4 u7; back the next day u1..u4; with a new item u1 {i3}, u3 {i3, i6}, u4 {i2}.
    assert (row["users_served"], row["users_returning"], row["users_active"]) == (5, 4, 3)
    # Model: u1 hit (i3), u3 none of 2, u4 hit (i2).
    assert row["model_hit_rate"] == pytest.approx(2 / 3)
    assert row["model_recall"] == pytest.approx((1 + 0 + 1) / 3)
    # Popularity: u1 (saw i1, i2) gets i3 i4: hit; u3 (saw i2) gets i1 i3: 1 of 2; u4 (saw i4) i1 i2: hit.
    assert row["popularity_hit_rate"] == pytest.approx(1.0)
    assert row["popularity_recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert row["alerts"] == [f"served model {MODEL} on {SERVED}: hit rate@2 0.667 is below popularity's "
                             f"1.000 (3 learners active on {NEXT})"]
    result = json.loads((tmp_path / "runs" / str(NEXT) / "serving_metrics.json").read_text())
    assert result["alerts"] == row["alerts"] and "hit rate@2 0.6667 (popularity 1.0000)" in result["summary"]
    assert "is no longer in" in err  # the model that served it is not in these artifacts


def test_a_drop_below_the_trailing_median_alerts_and_too_few_learners_do_not(
        step, bq_client, project, dataset, tmp_path):
    load_events(bq_client, project, dataset, HISTORY + FOLLOWING)
    _serve(bq_client, project, dataset, SERVED, SERVED_ITEMS)
    tables.ensure_all(bq_client, project, dataset, "US")
    target = tables.table_id(project, dataset, tables.SERVING_METRICS)
    for days, rate in ((1, 0.9), (2, 0.95), (4, 0.85)):  # median 0.9
        upsert_row(bq_client, target, tables.SERVING_METRICS_SPEC.schema, {
            "served_date": _days_before(days), "run_date": _days_before(days - 1),
            "computed_at": dt.datetime.now(dt.UTC), "k": 2, "users_served": 5, "users_returning": 4,
            "users_active": 3, "model_hit_rate": rate, "lookback_days": 5}, key=("served_date",))
    rc, err = _feedback(step, str(tmp_path), NEXT, "--alert-min-users", "1", "--max-drop", "0.2")
    assert rc == 0, err
    row = next(r for r in _serving_rows(bq_client, project, dataset) if r["served_date"] == SERVED)
    assert row["trailing_median_hit_rate"] == pytest.approx(0.9)
    assert row["alerts"][1] == (f"served model {MODEL} on {SERVED}: hit rate@2 0.667 is 26% below its median "
                                "0.900 of the 7 served days before (limit 20%)")
    rc, err = _feedback(step, str(tmp_path), NEXT)  # the default: at least 100 active learners
    assert rc == 0, err
    row = next(r for r in _serving_rows(bq_client, project, dataset) if r["served_date"] == SERVED)
    assert row["alerts"] == [] and "alerts not checked: 3 active learners" in err


def test_nothing_served_is_skipped_and_an_empty_or_disjoint_next_day_is_a_zero_row(
        step, bq_client, project, dataset, tmp_path):
    load_events(bq_client, project, dataset, HISTORY)  # nothing on the next day yet
    rc, err = _feedback(step, str(tmp_path), NEXT)  # on a fresh dataset: no recommendations at all
    assert rc == 0, err
    assert f"no recommendations were served for {SERVED}: nothing to measure" in err
    assert _serving_rows(bq_client, project, dataset) == []
    skipped = json.loads((tmp_path / "runs" / str(NEXT) / "serving_metrics.json").read_text())
    assert "no recommendations were served" in skipped["skipped"]

    _serve(bq_client, project, dataset, SERVED, SERVED_ITEMS)
    rc, err = _feedback(step, str(tmp_path), NEXT)  # an empty next day
    assert rc == 0, err
    [row] = _serving_rows(bq_client, project, dataset)
    assert (row["users_served"], row["users_returning"], row["users_active"]) == (5, 0, 0)
    assert row["model_hit_rate"] is None and row["popularity_recall"] is None and row["alerts"] == []
    assert "hit rate and recall not defined" in err

    load_events(bq_client, project, dataset, [_event(NEXT, "u8", "i1"), _event(NEXT, "u9", "i2")])
    rc, err = _feedback(step, str(tmp_path), NEXT)  # learners who were not served only
    assert rc == 0, err
    [row] = _serving_rows(bq_client, project, dataset)
    assert (row["users_served"], row["users_returning"], row["users_active"]) == (5, 0, 0)


def test_measuring_or_backfilling_days_twice_leaves_one_row_per_served_day(
        step, bq_client, project, dataset, tmp_path):
    days = [SERVED + dt.timedelta(days=d) for d in range(7)]
    load_events(bq_client, project, dataset, HISTORY + [
        _event(day + dt.timedelta(days=1), user, item) for day in days for user, item in (("u1", "i3"),
                                                                                         ("u4", "i2"))])
    for day in days:
        _serve(bq_client, project, dataset, day, SERVED_ITEMS)
    for order in (days, list(reversed(days))):  # a backfill, then the same one again backwards
        for day in order:
            rc, err = _feedback(step, str(tmp_path), day + dt.timedelta(days=1))
            assert rc == 0, err
    rows = _serving_rows(bq_client, project, dataset)
    assert [r["served_date"] for r in rows] == days
    assert all(r["users_served"] == 5 for r in rows)


def _reference(history: list[dict], following: list[dict], served: dict[str, list[str]]) -> dict:
    """The module docstring's definitions, computed plainly in Python."""
    seen: dict[str, set[str]] = {}
    for e in history:
        seen.setdefault(e["user_id"], set()).add(e["item_id"])
    users_of: dict[str, set[str]] = {}
    for user, items in seen.items():
        for item in items:
            users_of.setdefault(item, set()).add(user)
    ranking = sorted(users_of, key=lambda item: (-len(users_of[item]), item))
    k = max(len(picks) for picks in served.values())
    nxt: dict[str, set[str]] = {}
    for e in following:
        if e["user_id"] in served:
            nxt.setdefault(e["user_id"], set()).add(e["item_id"])
    out = {"users_returning": len(nxt), "users_active": 0, "model_hit_users": 0, "model_recall_sum": 0.0,
           "popularity_hit_users": 0, "popularity_recall_sum": 0.0}
    for user, items in nxt.items():
        relevant = items - seen.get(user, set())
        if not relevant:
            continue
        counterfactual = [item for item in ranking if item not in seen.get(user, set())][:k]
        out["users_active"] += 1
        for name, picks in (("model", served[user]), ("popularity", counterfactual)):
            hits = len(relevant & set(picks))
            out[f"{name}_hit_users"] += hits > 0
            out[f"{name}_recall_sum"] += hits / len(relevant)
    return out


def test_the_query_matches_the_definitions_on_a_random_day_whatever_its_head(bq_client, project, dataset):
    """Random histories, heavy users among them (who have seen most of the popular items), and
    random serving: the query's counts are the definitions', with the popularity head at 0
    (everyone ranked over their whole history), 2 (heavy users reach past it) and the default."""
    import numpy as np

    from trainer.evaluation.served_day import measure

    rng = np.random.default_rng(7)
    items = [f"i{i:02d}" for i in range(30)]
    weights = 1 / np.arange(1, 31) ** 1.1
    popular = weights / weights.sum()
    history = [_event(_days_before(int(rng.integers(0, 5))), f"u{u:02d}", items[i])
               for u in range(40) for i in rng.choice(30, size=int(rng.integers(1, 12)), p=popular)]
    history += [_event(_days_before(1), f"u{u:02d}", item) for u in (0, 1) for item in items[:25]]  # heavy
    following = [_event(NEXT, f"u{u:02d}", items[int(i)]) for u in range(45)
                 for i in rng.choice(30, size=int(rng.integers(0, 4)))]
    served = {f"u{u:02d}": [items[int(i)] for i in rng.choice(30, size=3, replace=False)]
              for u in range(0, 45, 2)}
    load_events(bq_client, project, dataset, history + following)
    _serve(bq_client, project, dataset, SERVED, served)
    expected = _reference(history, following, served)
    assert expected["users_active"] > 10 and expected["popularity_hit_users"] > 0  # the day tests something
    recommendations = tables.table_id(project, dataset, tables.RECOMMENDATIONS)
    events = tables.table_id(project, dataset, tables.EVENTS)
    for head in (0, 2, 64):
        day = measure(bq_client, recommendations, events, SERVED, 5, {"view": 1.0, "start": 2.0,
                                                                     "complete": 4.0}, head=head)
        got = {name: getattr(day, name) for name in expected}
        assert got == pytest.approx(expected), head
        assert (day.k, day.users_served) == (3, len(served))


def test_the_feedback_arguments_are_checked(step, tmp_path):
    common = ("--run-date", str(NEXT), "--artifacts-uri", str(tmp_path), "--validate-only")
    assert step("feedback_task", *common)[0] == 0
    rc, err = step("feedback_task", *common, "--max-drop", "1.5")
    assert rc == 2 and err.strip().endswith("--max-drop must be in (0, 1), got 1.5")
