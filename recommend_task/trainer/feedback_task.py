"""Measure what the recommendations served for the day before ``--run-date`` did on it.

The served day D is ``--run-date`` - 1: its ``recommendations`` rows were served during
``--run-date``, whose events are the outcome. Computes the hit rate and recall of the served
items, and of what the popularity baseline would have served the same learners
(:mod:`trainer.evaluation.served_day`), and replaces the ``serving_metrics`` row of D (a re-run or a backfill
never duplicates it). It raises alerts, without failing, when the served model did worse than
popularity or dropped more than ``--max-drop`` below its median of the 7 served days before;
``runs/<run_date>/serving_metrics.json`` carries them to the DAG's Slack message. A day with
nothing served is skipped; one whose learners did nothing new the next day is recorded with
zero counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import sys
from typing import Any

from trainer import contract
from trainer.core import profile
from trainer.core.errors import TrainerError
from trainer.data.events import (
    DEFAULT_EVENT_WEIGHTS,
    add_max_id_bytes,
    check_max_id_bytes,
    parse_event_weights,
)
from trainer.evaluation.served_day import ServedDay, measure
from trainer.step import cli
from trainer.storage import artifacts, bq, layout, retention, tables
from trainer.storage.clients import bigquery_client
from trainer.storage.partitions import upsert_row

log = logging.getLogger("trainer.feedback_task")

RESULT_FILE = contract.SERVING_METRICS_RECORD
TRAILING_DAYS = 7
MIN_TRAILING = 3  # served days a median needs before a drop below it is alerted on


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    retention.add_table_arguments(parser)
    parser.add_argument("--lookback-days", type=int, default=30,
                        help="days ending at the served day whose items count as seen, and whose "
                        "popularity the baseline ranks by (predict's window)")
    parser.add_argument("--event-weights", type=parse_event_weights,
                        default=",".join(f"{k}={v:g}" for k, v in DEFAULT_EVENT_WEIGHTS.items()),
                        help="the event types that count (their weights are not used here)")
    add_max_id_bytes(parser)
    parser.add_argument("--max-drop", type=float, default=0.2,
                        help="alert when the hit rate falls more than this share below its median of the "
                        f"{TRAILING_DAYS} served days before (needs {MIN_TRAILING} of them)")
    parser.add_argument("--alert-min-users", type=int, default=100,
                        help="alert only when at least this many served learners were active the next day")
    return parser


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    retention.table_retention(args)
    if not 1 <= args.lookback_days <= 365:
        raise TrainerError(f"--lookback-days must be in [1, 365], got {args.lookback_days}")
    check_max_id_bytes(args.max_id_bytes)
    if not 0 < args.max_drop < 1:
        raise TrainerError(f"--max-drop must be in (0, 1), got {args.max_drop}")
    if args.alert_min_users < 1:
        raise TrainerError(f"--alert-min-users must be >= 1, got {args.alert_min_users}")


def trailing_median(client, table: str, served: dt.date) -> float | None:
    """The median model hit rate of the served days in the week before ``served``."""
    rows = bq.run(client, f"""
        SELECT model_hit_rate FROM `{table}`
        WHERE served_date BETWEEN @start AND @end AND model_hit_rate IS NOT NULL""",
                  {"start": served - dt.timedelta(days=TRAILING_DAYS), "end": served - dt.timedelta(days=1)})
    rates = [row["model_hit_rate"] for row in rows]
    return statistics.median(rates) if len(rates) >= MIN_TRAILING else None


def alerts_for(day: ServedDay, model_id: str, median: float | None, args: argparse.Namespace) -> list[str]:
    """Why the served model looks worse, one line each (none below ``--alert-min-users``)."""
    if day.users_active < args.alert_min_users or day.model_hit_rate is None:
        return []
    head = f"served model {model_id} on {day.served_date}: hit rate@{day.k} {day.model_hit_rate:.3f}"
    found = []
    if day.model_hit_rate < day.popularity_hit_rate:
        found.append(f"{head} is below popularity's {day.popularity_hit_rate:.3f} "
                     f"({day.users_active:,} learners active on {args.run_date})")
    if median is not None and day.model_hit_rate < (1 - args.max_drop) * median:
        found.append(f"{head} is {1 - day.model_hit_rate / median:.0%} below its median {median:.3f} of "
                     f"the {TRAILING_DAYS} served days before (limit {args.max_drop:.0%})")
    return found


def _served_by(store: artifacts.ArtifactStore, args: argparse.Namespace,
               day: ServedDay) -> tuple[str, str | None]:
    """The model that served the day (from its rows) and the image that published them (from
    the day's predictions.json, while runs/ keeps it)."""
    model_id = ",".join(day.model_ids)
    try:
        image = store.read_json(artifacts.join(layout.run_prefix(args.artifacts_uri, day.served_date),
                                               contract.PREDICTIONS_RECORD)).get("image")
    except FileNotFoundError:
        image = None
    for served_by in day.model_ids:
        if not store.exists(artifacts.join(layout.model_prefix(args.artifacts_uri, served_by), "model.json")):
            log.warning("model %s that served %s is no longer in %s (deleted by retention): the figures come "
                        "from the served rows alone", served_by, day.served_date, args.artifacts_uri)
    return model_id, image


def row_for(day: ServedDay, args: argparse.Namespace, model_id: str, image: str | None,
            median: float | None, alerts: list[str]) -> dict[str, Any]:
    return {
        "served_date": day.served_date, "run_date": args.run_date, "computed_at": dt.datetime.now(dt.UTC),
        "model_id": model_id or None, "image": image, "k": day.k, "users_served": day.users_served,
        "users_returning": day.users_returning, "users_active": day.users_active,
        "model_hit_rate": day.model_hit_rate, "model_recall": day.model_recall,
        "popularity_hit_rate": day.popularity_hit_rate, "popularity_recall": day.popularity_recall,
        "trailing_median_hit_rate": median, "alerts": alerts, "lookback_days": args.lookback_days,
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
    }


def summary(day: ServedDay) -> str:
    if day.model_hit_rate is None:
        return (f"served {day.served_date}: {day.users_served:,} learners, {day.users_returning:,} back the "
                "next day, none with an item they had not seen: hit rate and recall not defined")
    return (f"served {day.served_date}: hit rate@{day.k} {day.model_hit_rate:.4f} (popularity "
            f"{day.popularity_hit_rate:.4f}), recall@{day.k} {day.model_recall:.4f} (popularity "
            f"{day.popularity_recall:.4f}) over {day.users_active:,} of {day.users_served:,} learners")


def main(args: argparse.Namespace) -> None:
    validate(args)
    served = args.run_date - dt.timedelta(days=1)
    client = bigquery_client(args.project, args.location)
    store = artifacts.ArtifactStore(args.project)
    result_uri = artifacts.join(layout.run_prefix(args.artifacts_uri, args.run_date), RESULT_FILE)
    table = tables.table_id(args.project, args.dataset, tables.SERVING_METRICS)
    with profile.phase("read", f"measuring the recommendations served for {served} on {args.run_date}"):
        tables.ensure_all(client, args.project, args.dataset, args.location, retention.table_retention(args))
        day = measure(client, tables.table_id(args.project, args.dataset, tables.RECOMMENDATIONS),
                      tables.table_id(args.project, args.dataset, tables.EVENTS), served,
                      args.lookback_days, args.event_weights, max_id_bytes=args.max_id_bytes)
    profile.count("rows_in", day.users_served)
    if day.users_served == 0:
        reason = f"no recommendations were served for {served}: nothing to measure, no row written"
        log.warning("%s", reason)
        store.write_json(result_uri, {"served_date": served.isoformat(), "skipped": reason, "alerts": []})
        return
    model_id, image = _served_by(store, args, day)
    median = trailing_median(client, table, served)
    alerts = alerts_for(day, model_id, median, args)
    log.info("%s", summary(day))
    if day.users_active < args.alert_min_users:
        log.info("alerts not checked: %d active learners, fewer than --alert-min-users %d", day.users_active,
                 args.alert_min_users)
    for alert in alerts:
        log.warning("alert: %s", alert)
    row = row_for(day, args, model_id, image, median, alerts)
    with profile.phase("write", f"writing the {tables.SERVING_METRICS} row of {served}"):
        upsert_row(client, table, tables.SERVING_METRICS_SPEC.schema, row, key=("served_date",))
    profile.count("rows_out", 1)
    store.write_json(result_uri, {**row, "summary": summary(day), "table": table})
    log.info("wrote the %s row of %s%s", table, served, f" with {len(alerts)} alert(s)" if alerts else "")


if __name__ == "__main__":
    sys.exit(cli.run_step("feedback_task", main, build_parser(), validate=validate))
