"""The run date's event statistics and the anomaly rules: figures of a hand-made day against
values worked out by hand, each rule on a synthetic day crafted to break it, the operator's
acceptance, and one row per day however often a day is checked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import pytest
from scipy.spatial.distance import jensenshannon
from trainer_support.helpers import load_events, query

from trainer.data.anomaly_rules import Rules, check
from trainer.data.event_stats import DayStats

DAY = dt.date(2026, 6, 10)
SEED = ("--users", "600", "--items", "120", "--events", "40000", "--days", "20", "--clusters", "6")


def _at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _event(day: dt.date, user: str | None, item: str | None, kind: str, when: dt.datetime | None = None):
    return {"user_id": user, "item_id": item, "event_type": kind, "event_timestamp": when or _at(day),
            "event_date": day}


HAND_MADE = [
    # Five days before: 4 events (view 2, start 1, complete 1); two days before: 2 views.
    _event(DAY - dt.timedelta(days=5), "u1", "i1", "view"),
    _event(DAY - dt.timedelta(days=5), "u1", "i2", "start"),
    _event(DAY - dt.timedelta(days=5), "u2", "i1", "view"),
    _event(DAY - dt.timedelta(days=5), "u2", "i1", "complete"),
    _event(DAY - dt.timedelta(days=2), "u1", "i1", "view"),
    _event(DAY - dt.timedelta(days=2), "u3", "i3", "view"),
    # The day: 6 valid events (view 3, start 2, complete 1), u4 and i4, i5 new.
    _event(DAY, "u1", "i1", "view"), _event(DAY, "u1", "i1", "view"), _event(DAY, "u1", "i2", "start"),
    _event(DAY, "u1", "i4", "complete"), _event(DAY, "u4", "i1", "view"), _event(DAY, "u2", "i5", "start"),
    # And 3 invalid rows in its partition.
    _event(DAY, None, "i1", "view"), _event(DAY, "u2", "i1", "share"),
    _event(DAY, "u2", "i1", "view", when=_at(DAY - dt.timedelta(days=40))),
    # Outside the 7 trailing days: not compared with.
    _event(DAY - dt.timedelta(days=9), "u9", "i9", "view"),
]


def test_the_statistics_of_a_hand_made_day_are_the_hand_computed_ones(step, bq_client, project, dataset,
                                                                      tmp_path):
    load_events(bq_client, project, dataset, HAND_MADE)
    rc, err = step("create_cf_matrices_task", "--run-date", str(DAY), "--lookback-days", "20",
                   "--max-bad-fraction", "0.5", "--artifacts-uri", str(tmp_path))
    assert rc == 0, err
    [row] = query(bq_client, f"SELECT * FROM `{project}.{dataset}.event_stats`")
    assert row["run_date"] == DAY and row["status"] == "unchecked"  # 6 events: fewer than 1000
    assert {t["event_type"]: (t["events"], t["trailing_median"]) for t in row["events_by_type"]} == {
        "view": (3, 2.0), "start": (2, 0.5), "complete": (1, 0.5)}
    assert (row["events"], row["trailing_days"], row["trailing_median_events"]) == (6, 2, 3.0)
    assert (row["active_users"], row["active_items"]) == (3, 4)
    # Per user 4, 1, 1: median 1, nearest-rank p99 the 3rd smallest of 3.
    per_user = (row["events_per_user_median"], row["events_per_user_p99"], row["events_per_user_max"])
    assert per_user == (1.0, 4, 4)
    assert (row["top_user_id"], row["top_user_share"]) == ("u1", pytest.approx(4 / 6))
    assert (row["new_users"], row["new_user_event_share"]) == (1, pytest.approx(1 / 6))  # u4
    assert (row["new_items"], row["new_item_event_share"]) == (2, pytest.approx(2 / 6))  # i4, i5
    # Items i1..i5 on the day [3, 1, 0, 1, 1] against the trailing days [4, 1, 1, 0, 0]; types
    # (complete, start, view) [1, 2, 3] against [1, 1, 4]. scipy's implementation, not ours.
    assert row["item_drift"] == pytest.approx(jensenshannon([3, 1, 0, 1, 1], [4, 1, 1, 0, 0], base=2))
    assert row["type_drift"] == pytest.approx(jensenshannon([1, 2, 3], [1, 1, 4], base=2))
    assert row["rows_read"] == 9
    assert {b["reason"]: b["rows"] for b in row["bad_rows"]} == {
        "null_user_id": 1, "null_item_id": 0, "unknown_event_type": 1, "timestamp_outside_window": 1,
        "null_event_id": 0, "id_too_long": 0, "control_character_in_id": 0}
    assert row["anomalies"] == [] and row["accepted"] is False
    assert json.loads(row["rules"])["min_events"] == 1000
    record = json.loads((tmp_path / "runs" / str(DAY) / "event_stats.json").read_text())
    assert record["events"] == 6 and len(record["summary"]) == 2


@pytest.mark.parametrize(("anomaly", "rule", "line"), [
    ("drop-type=complete", "event_type_drop",
     r"event type 'complete' vanished \(limit 50 %\): 0 events against a trailing median of [\d,]+"),
    ("bot=0.5", "bot_user", r"user 'bot' made 50 % of the day's events \(limit 10 %\)"),
    ("renumber-items", "new_items", r"100 % of the day's events are on items unseen in the trailing days "
                                    r"\(limit 50 %\)"),
])
def test_a_day_crafted_for_a_rule_is_refused_with_its_line_then_accepted_once(
        step, bq_client, project, dataset, tmp_path, anomaly, rule, line):
    import re

    rc, err = step("seed_events", "--end-date", str(DAY), *SEED, "--anomaly", anomaly)
    assert rc == 0, err
    common = ("--run-date", str(DAY), "--lookback-days", "20", "--artifacts-uri", str(tmp_path))
    rc, err = step("create_cf_matrices_task", *common)
    last = err.strip().splitlines()[-1]
    assert rc == 2, err  # permanent: a retry reads the same day
    assert last.startswith(f"ERROR: create_cf_matrices_task: events of {DAY} look wrong, nothing trained: ")
    assert re.search(line + rf" \[rule {rule}\]", last), last
    assert last.endswith("(to train on them anyway, run with accept_anomalies)")
    assert not (tmp_path / "runs" / str(DAY) / "manifest.json").exists()
    [refused] = query(bq_client, f"SELECT * FROM `{project}.{dataset}.event_stats`")
    assert (refused["status"], refused["accepted"]) == ("anomaly", False)
    assert any(f"[rule {rule}]" in a for a in refused["anomalies"])

    rc, err = step("create_cf_matrices_task", *common, "--accept-anomalies", "true")
    assert rc == 0, err
    assert (tmp_path / "runs" / str(DAY) / "manifest.json").exists()
    [accepted] = query(bq_client, f"SELECT * FROM `{project}.{dataset}.event_stats`")  # replaced
    assert (accepted["status"], accepted["accepted"]) == ("accepted", True)
    assert accepted["anomalies"] == refused["anomalies"] and accepted["computed_at"] > refused["computed_at"]
    manifest = json.loads((tmp_path / "runs" / str(DAY) / "manifest.json").read_text())
    assert manifest["event_stats"]["status"] == "accepted"


def test_the_data_check_alone_leaves_an_anomalous_day_to_a_person_who_is_recorded(
        step, bq_client, project, dataset, tmp_path, monkeypatch):
    """recommend_train's check_events: RECSYS_DATA_CHECK=decide records an anomalous day and ends
    0 without building (the approval task reads the record); refuse (backfills) ends 2. The
    approver's name, time and reason reach event_stats with the acceptance."""
    from trainer import contract

    rc, err = step("seed_events", "--end-date", str(DAY), *SEED, "--anomaly", "drop-type=complete")
    assert rc == 0, err
    common = ("--run-date", str(DAY), "--lookback-days", "20", "--artifacts-uri", str(tmp_path))
    run = tmp_path / "runs" / str(DAY)
    monkeypatch.setenv(contract.DATA_CHECK_ENV, "refuse")
    rc, err = step("create_cf_matrices_task", *common)
    assert rc == 2 and "look wrong, nothing trained" in err.strip().splitlines()[-1], err
    monkeypatch.setenv(contract.DATA_CHECK_ENV, "decide")
    rc, err = step("create_cf_matrices_task", *common)
    assert rc == 0 and f"data check of {DAY}: anomaly" in err, err
    assert "event type 'complete' vanished" in err
    assert not (run / "manifest.json").exists() and not (run / "matrices.npz").exists()
    record = json.loads((run / "event_stats.json").read_text())
    assert (record["status"], record["accepted"], record["accepted_by"]) == ("anomaly", False, None)
    assert record["anomalies"] and record["summary"]
    monkeypatch.setenv(contract.DATA_CHECK_ENV, "bogus")
    rc, err = step("create_cf_matrices_task", *common)
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "RECSYS_DATA_CHECK='bogus' is not one of decide, refuse" in last, err

    monkeypatch.delenv(contract.DATA_CHECK_ENV)
    monkeypatch.setenv(contract.ACCEPTED_BY_ENV, "ana")
    monkeypatch.setenv(contract.ACCEPTED_AT_ENV, "2026-06-11T09:30:00+00:00")
    monkeypatch.setenv(contract.ACCEPT_REASON_ENV, "the app's <new> release dropped 'complete' events")
    rc, err = step("create_cf_matrices_task", *common, "--accept-anomalies", "true")
    assert rc == 0 and (run / "manifest.json").exists(), err
    [row] = query(bq_client, f"SELECT * FROM `{project}.{dataset}.event_stats`")
    assert (row["status"], row["accepted"], row["accepted_by"]) == ("accepted", True, "ana")
    assert row["accepted_at"] == dt.datetime(2026, 6, 11, 9, 30, tzinfo=dt.UTC)
    assert row["accept_reason"] == "the app's <new> release dropped 'complete' events"


def test_a_normal_day_passes_every_rule_and_a_rerun_keeps_one_row(step, bq_client, project, dataset,
                                                                   tmp_path):
    rc, err = step("seed_events", "--end-date", str(DAY), *SEED)
    assert rc == 0, err
    common = ("--run-date", str(DAY), "--lookback-days", "20", "--artifacts-uri", str(tmp_path))
    for _ in range(2):
        rc, err = step("create_cf_matrices_task", *common)
        assert rc == 0, err
    rows = query(bq_client, f"SELECT status, anomalies, events FROM `{project}.{dataset}.event_stats`")
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["anomalies"] == []
    assert 1500 < rows[0]["events"] < 2500  # 40,000 events over 20 days


def _stats(**changes) -> DayStats:
    base = DayStats(
        run_date=DAY, events=2000, events_by_type={"complete": 300, "start": 500, "view": 1200},
        trailing_median_by_type={"complete": 300.0, "start": 500.0, "view": 1200.0}, trailing_days=7,
        trailing_median_events=2000.0, active_users=900, active_items=100, events_per_user_median=2.0,
        events_per_user_p99=9, events_per_user_max=12, top_user_id="u1", top_user_share=0.006,
        new_users=10, new_user_event_share=0.01, new_items=0, new_item_event_share=0.0,
        item_drift=0.1, type_drift=0.01, rows_read=2000, bad_rows={"null_user_id": 0})
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("changes", "rules"), [
    ({"events_by_type": {"complete": 150, "start": 500, "view": 1200}}, []),  # at 50 %: the limit
    ({"events_by_type": {"complete": 149, "start": 500, "view": 1200}}, ["event_type_drop"]),
    ({"top_user_share": 0.1}, []), ({"top_user_share": 0.1001}, ["bot_user"]),
    ({"item_drift": 0.5}, []), ({"item_drift": 0.51}, ["item_drift"]),
    ({"type_drift": 0.2}, []), ({"type_drift": 0.21}, ["type_drift"]),
    ({"new_item_event_share": 0.5}, []), ({"new_item_event_share": 0.51}, ["new_items"]),
    ({"trailing_days": 0, "trailing_median_by_type": None, "item_drift": None, "type_drift": None,
      "new_item_event_share": None}, []),  # a first day: nothing to compare with
    ({"events": 999, "top_user_share": 0.9}, []),  # too few events to judge
])
def test_each_rule_breaks_only_beyond_its_limit(changes, rules):
    assert [a.rule for a in check(_stats(**changes), Rules())] == rules


def test_the_rules_limits_are_arguments_and_checked(step, tmp_path):
    common = ("--run-date", str(DAY), "--artifacts-uri", str(tmp_path), "--validate-only")
    rc, err = step("create_cf_matrices_task", *common, "--max-user-share", "0.3",
                   "--accept-anomalies", "TRUE")
    assert rc == 0, err
    rc, err = step("create_cf_matrices_task", *common, "--max-item-drift", "1.5")
    assert rc == 2 and err.strip().endswith("--max-item-drift must be in [0, 1], got 1.5")
    rc, err = step("create_cf_matrices_task", *common, "--accept-anomalies", "yes")
    assert rc == 2 and "expected true or false" in err


def test_seeding_in_chunks_writes_every_event_once_and_keeps_the_days_anomaly(
        step, bq_client, project, dataset, tmp_path, monkeypatch):
    from trainer.data import synthetic

    monkeypatch.setattr(synthetic, "CHUNK_EVENTS", 9000)  # the 40,000 events in 5 chunks
    rc, err = step("seed_events", "--end-date", str(DAY), *SEED, "--anomaly", "bot=0.5")
    assert rc == 0, err
    assert "generated 36000 of 40000 events" in err, err
    [row] = query(bq_client, f"""
        SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS ids, COUNTIF(user_id = 'bot') AS bots,
               COUNTIF(event_date = DATE '{DAY}') AS on_day
        FROM `{project}.{dataset}.events`""")
    assert row["n"] == row["ids"] == 40000 + row["bots"], row
    assert abs(row["bots"] / row["on_day"] - 0.5) < 0.005, row  # each chunk's bot share adds up

    rc, err = step("create_cf_matrices_task", "--run-date", str(DAY), "--lookback-days", "20",
                   "--artifacts-uri", str(tmp_path))
    assert rc == 2, err
    assert re.search(r"user 'bot' made 50 % of the day's events \(limit 10 %\) \[rule bot_user\]", err), err
