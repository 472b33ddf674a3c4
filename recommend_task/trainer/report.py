"""Print what a run produced, read back from BigQuery: the run date's event statistics and
anomaly verdict, the model's metrics next to the popularity baseline (and the previously
published model), a few users' recommendations from the ``recommendations_latest`` view the
web app reads, and, once measured, what the served recommendations did the next day."""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import sys

from trainer.core.errors import TrainerError
from trainer.step import cli
from trainer.storage import bq, tables
from trainer.storage.clients import bigquery_client

log = logging.getLogger("trainer.report")

# C0 and C1 controls (terminal escapes start with ESC or CSI; CR and BS overwrite what was shown)
# and the bidirectional overrides, which reorder what a terminal shows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(value: object) -> str:
    """``value`` as text safe to print: every control character in Python's escape notation
    (``\\x1b``, ``\\r``, ``\\n``), the rest as it is. Ids, anomalies and alerts come from data."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def _print(text: str = "") -> None:
    """Print a line of the report: its own newlines kept, any other control character escaped
    (every value is already :func:`shown`; this keeps a missed one off the terminal)."""
    print("\n".join(shown(line) for line in text.split("\n")))


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    parser.add_argument("--users", type=int, default=3, help="how many users to show")
    return parser


def main(args: argparse.Namespace) -> None:
    cli.require(args, "project")
    client = bigquery_client(args.project, args.location)
    metrics_table = tables.table_id(args.project, args.dataset, tables.MODEL_METRICS)
    rows = list(bq.run(client, f"""
        SELECT * FROM `{metrics_table}` WHERE run_date = @run_date
        ORDER BY evaluated_at DESC LIMIT 1""", {"run_date": args.run_date}))
    if not rows:
        raise TrainerError(f"no model_metrics row for run date {args.run_date} in {metrics_table}")
    _print_event_stats(client, args)
    m = rows[0]
    _print(f"\nModel {shown(m['model_id'])} evaluated on {m['eval_users']} holdout users "
          f"(k={m['k']}), verdict: {shown(m['verdict']).upper()}")
    _print(f"  {shown(m['reasons'])}")
    header = f"  {'recommender':<36}" + "".join(f"{name + '@k':>13}" for name in tables.METRIC_NAMES)
    _print(header)
    for rec in tables.RECOMMENDERS:
        if m[f"{rec}_{tables.METRIC_NAMES[0]}"] is None:
            continue
        label = rec if rec != "published" else f"published ({shown(m['published_model_id'])})"
        _print(f"  {label:<36}" + "".join(f"{m[f'{rec}_{n}']:>13.4f}" for n in tables.METRIC_NAMES))

    view = tables.table_id(args.project, args.dataset, tables.RECOMMENDATIONS_LATEST)
    recs = list(bq.run(client, f"""
        SELECT run_date, user_id, rank, item_id, score FROM `{view}`
        WHERE user_id IN (SELECT DISTINCT user_id FROM `{view}` ORDER BY user_id LIMIT @n)
        ORDER BY user_id, rank""", {"n": args.users}))
    total = next(iter(bq.run(client, f"SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS u FROM `{view}`")))
    if not recs:
        raise TrainerError(f"{view} is empty")
    _print(f"\nRecommendations in {view}: {total['n']} rows for {total['u']} users, "
          f"run_date {recs[0]['run_date']}")
    for user_id, group in itertools.groupby(recs, key=lambda row: row["user_id"]):
        rows = list(group)
        items = ", ".join(f"{shown(r['item_id'])} ({r['score']:.2f})" for r in rows[:5])
        _print(f"  {shown(user_id)}: {items}{', ...' if len(rows) > 5 else ''}")
    _print_serving(client, args)
    _print()


def _print_event_stats(client, args: argparse.Namespace) -> None:
    table = tables.table_id(args.project, args.dataset, tables.EVENT_STATS)
    rows = list(bq.run(client, f"SELECT * FROM `{table}` WHERE run_date = @run_date",
                       {"run_date": args.run_date}))
    if not rows:
        _print(f"\nNo {tables.EVENT_STATS} row for {args.run_date}")
        return
    s = rows[0]
    types = ", ".join(f"{shown(t['event_type'])} {t['events']:,}" for t in s["events_by_type"])
    bad = sum(r["rows"] for r in s["bad_rows"])
    _print(f"\nEvents of {s['run_date']}: {shown(s['status'])}; {s['events']:,} valid ({types}) from "
          f"{s['active_users']:,} users on {s['active_items']:,} items, "
          f"{bad:,} of {s['rows_read']:,} rows invalid")
    if s["trailing_days"]:
        _print(f"  vs the {s['trailing_days']} days before: drift (Jensen-Shannon) items "
              f"{s['item_drift']:.3f}, types {s['type_drift']:.3f}; new items "
              f"{s['new_item_event_share']:.1%} of events, top user {s['top_user_share']:.1%}")
    for anomaly in s["anomalies"]:
        _print(f"  {'accepted' if s['accepted'] else 'anomaly'}: {shown(anomaly)}")


def _print_serving(client, args: argparse.Namespace) -> None:
    """The served day's row, if recommend_feedback has measured it (the day after its events)."""
    table = tables.table_id(args.project, args.dataset, tables.SERVING_METRICS)
    rows = list(bq.run(client, f"SELECT * FROM `{table}` WHERE served_date = @run_date",
                       {"run_date": args.run_date}))
    if not rows:
        _print(f"\nServed {args.run_date}: not measured yet (recommend_feedback runs once the next "
              "day's events are complete)")
        return
    m = rows[0]
    _print(f"\nServed {m['served_date']} by {shown(m['model_id'])}, measured on {m['run_date']}: "
          f"{m['users_served']:,} learners served, {m['users_active']:,} active the next day")
    if m["model_hit_rate"] is not None:
        _print(f"  {'':<12}{'hit rate@' + str(m['k']):>14}{'recall@' + str(m['k']):>12}")
        for label, prefix in (("model", "model"), ("popularity", "popularity")):
            _print(f"  {label:<12}{m[f'{prefix}_hit_rate']:>14.4f}{m[f'{prefix}_recall']:>12.4f}")
    for alert in m["alerts"]:
        _print(f"  alert: {shown(alert)}")


if __name__ == "__main__":
    sys.exit(cli.run_step("report", main, build_parser()))
