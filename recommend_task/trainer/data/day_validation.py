"""Validate the run date's events before training on them: compute the day's statistics
(:mod:`trainer.data.event_stats`), judge them by the anomaly rules (:mod:`trainer.data.anomaly_rules`), record
both (an ``event_stats`` row, replaced on a re-run, and ``runs/<run_date>/event_stats.json``),
then refuse the day if it broke a rule and nobody accepted it.

The record is written before the refusal: a day that was not trained on still shows why. A day
whose partition holds no row is not recorded (the window read then fails naming it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

from trainer import contract
from trainer.data import anomaly_rules, event_stats
from trainer.data.anomaly_rules import Anomaly, Rules
from trainer.data.event_stats import DayStats
from trainer.storage import artifacts, tables
from trainer.storage.layout import run_prefix
from trainer.storage.partitions import upsert_row

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.day_validation")

STATS_FILE = contract.EVENT_STATS_RECORD


def stats_row(stats: DayStats, rules: Rules, found: list[Anomaly], accepted: bool,
              computed_at: dt.datetime) -> dict[str, Any]:
    """The ``event_stats`` row of the day."""
    figures = stats.to_dict()
    trailing = stats.trailing_median_by_type or {}
    return {
        "run_date": stats.run_date, "computed_at": computed_at,
        "status": anomaly_rules.status_of(stats, rules, found, accepted),
        "anomalies": [str(a) for a in found], "accepted": bool(accepted and found),
        "events_by_type": [{"event_type": t, "events": n, "trailing_median": trailing.get(t)}
                           for t, n in stats.events_by_type.items()],
        "bad_rows": [{"reason": reason, "rows": n} for reason, n in stats.bad_rows.items()],
        **{k: figures[k] for k in (
            "events", "trailing_days", "trailing_median_events", "active_users", "active_items",
            "events_per_user_median", "events_per_user_p99", "events_per_user_max", "top_user_id",
            "top_user_share", "new_users", "new_user_event_share", "new_items", "new_item_event_share",
            "item_drift", "type_drift", "rows_read", "duplicate_rows", "conflicting_rows")},
        "rules": json.dumps(rules.to_dict(), sort_keys=True),
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
        "image": os.environ.get(contract.IMAGE_ENV) or None,
        **acceptance(bool(accepted and found)),
    }


def acceptance(accepted: bool) -> dict[str, Any]:
    """Who accepted the day in Airflow's approval, when and why (None where not accepted, or
    accepted with the ``accept_anomalies`` param, which names nobody)."""
    env = {k: (os.environ.get(v) or "").strip() or None for k, v in (
        ("accepted_by", contract.ACCEPTED_BY_ENV), ("accepted_at", contract.ACCEPTED_AT_ENV),
        ("accept_reason", contract.ACCEPT_REASON_ENV))}
    if not accepted:
        return dict.fromkeys(env)
    at = env["accepted_at"]
    return {**env, "accepted_at": dt.datetime.fromisoformat(at) if at else None}


def validate_day(client, store: artifacts.ArtifactStore, *, project: str, dataset: str, events_table: str,
                 run_date: dt.date, weights: dict[str, float], max_id_bytes: int, valid_from: dt.date,
                 rules: Rules, accept: bool, artifacts_uri: str, metrics_retention_days: int,
                 refuse: bool = True) -> dict[str, Any]:
    """Check the run date's events; returns what was recorded, raises AnomalyError for a day
    that broke a rule without ``accept`` (unless not ``refuse``: a person decides on it)."""
    stats = event_stats.read_day_stats(client, events_table, run_date, weights, valid_from, max_id_bytes)
    for line in event_stats.summary_lines(stats):
        log.info("%s", line)
    if stats.rows_read == 0:  # nothing to describe; the window read names the empty window
        log.warning("no events in the partition of %s: no statistics recorded", run_date)
        return {"status": anomaly_rules.UNCHECKED, "anomalies": [], "accepted": False, "table": None}
    found = anomaly_rules.check(stats, rules)
    if stats.events < rules.min_events:
        log.warning("anomaly rules not checked: %d valid events on %s, fewer than --anomaly-min-events %d",
                    stats.events, run_date, rules.min_events)
    for anomaly in found:
        log.warning("anomaly%s: %s", " (accepted)" if accept else "", anomaly)
    row = stats_row(stats, rules, found, accept, dt.datetime.now(dt.UTC))
    target = tables.ensure_table(client, project, dataset, tables.EVENT_STATS_SPEC, metrics_retention_days)
    upsert_row(client, target, tables.EVENT_STATS_SPEC.schema, row, key=("run_date",))
    record = {**stats.to_dict(), "status": row["status"], "anomalies": row["anomalies"],
              "accepted": row["accepted"], "rules": rules.to_dict(),
              "summary": event_stats.summary_lines(stats), "table": target,
              "computed_at": row["computed_at"].isoformat(), "airflow_run_id": row["airflow_run_id"],
              "accepted_by": row["accepted_by"], "accept_reason": row["accept_reason"],
              "accepted_at": row["accepted_at"].isoformat() if row["accepted_at"] else None}
    store.write_json(artifacts.join(run_prefix(artifacts_uri, run_date), STATS_FILE), record)
    log.info("event statistics of %s recorded in %s (status %s)", run_date, target, row["status"])
    if found and not accept and refuse:
        raise anomaly_rules.refusal(stats, found)
    return record
