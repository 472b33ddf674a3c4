"""Publish a sharded prediction: check every shard's staged part together, swap the day in once.

Each ``predict_task --shard I --n-shards N`` staged its users' rows in a part table and
recorded it under ``runs/<run_date>/predict-parts/``. This step refuses to publish unless all N
parts are there, come from one model and, together, pass the same validation as an unsharded
prediction (every user once, ranks 1..k, no duplicates, no nulls). Then it replaces the run
date's rows with the union of the parts in one transaction: readers see the old day or the
whole new day, never some shards of it. A re-run publishes the same parts again (idempotent);
parts expire by themselves a day after they were staged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys

from google.api_core.exceptions import NotFound

from trainer import contract
from trainer.core import profile
from trainer.core.errors import TrainerError, ValidationError
from trainer.data.shards import MAX_SHARDS, Shard, all_shards
from trainer.predict_task import validate_staged
from trainer.step import cli
from trainer.storage import artifacts, layout, tables
from trainer.storage.clients import bigquery_client, bq_retry
from trainer.storage.partitions import swap_days

log = logging.getLogger("trainer.publish_predictions_task")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    parser.add_argument("--n-shards", type=int, required=True,
                        help=f"how many shards predict_task staged (1..{MAX_SHARDS})")
    parser.add_argument("--n-recommendations", type=int, default=10,
                        help="items per user the shards were asked for")
    return parser


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    if not 1 <= args.n_recommendations <= 1000:
        raise TrainerError(f"--n-recommendations must be in [1, 1000], got {args.n_recommendations}")
    Shard(0, args.n_shards)


def read_parts(store: artifacts.ArtifactStore, args: argparse.Namespace) -> list[dict]:
    """Every shard's part record; one missing or from another model / request is an error."""
    parts, missing = [], []
    for shard in all_shards(args.n_shards):
        try:
            parts.append(store.read_json(shard.record_uri(args.artifacts_uri, args.run_date)))
        except FileNotFoundError:
            missing.append(str(shard.index))
    if missing:
        raise TrainerError(f"no staged part for shard(s) {', '.join(missing)} of {args.n_shards} "
                           f"for {args.run_date}: run their predict_task --shard first; nothing published")
    models = sorted({p["model_id"] for p in parts})
    if len(models) > 1:
        raise ValidationError(f"the {args.n_shards} parts for {args.run_date} come from different models "
                              f"({', '.join(models)}): re-run every shard; nothing published")
    asked = sorted({int(p["n_recommendations"]) for p in parts})
    if asked != [args.n_recommendations]:
        raise ValidationError(f"parts for {args.run_date} were staged with --n-recommendations {asked}, "
                              f"publishing expects {args.n_recommendations}; nothing published")
    return parts


def check_tables_exist(client, parts: list[dict]) -> None:
    for part in parts:
        try:
            client.get_table(part["table"], retry=bq_retry())
        except NotFound:
            raise TrainerError(f"part table {part['table']} of shard {part['shard']} no longer exists "
                               "(parts expire a day after staging): re-run the predict shards; "
                               "nothing published") from None


def main(args: argparse.Namespace) -> None:
    validate(args)
    store = artifacts.ArtifactStore(args.project)
    parts = read_parts(store, args)
    client = bigquery_client(args.project, args.location)
    check_tables_exist(client, parts)
    target = tables.table_id(args.project, args.dataset, tables.RECOMMENDATIONS)
    staged = [p["table"] for p in parts]
    rows, users = sum(p["rows"] for p in parts), sum(p["users"] for p in parts)
    log.info("publishing %d parts of model %s for %s: %d rows for %d users (%s)", len(parts),
             parts[0]["model_id"], args.run_date, rows, users,
             ", ".join(f"shard {p['shard']}: {p['users']} users" for p in parts))
    profile.count("rows_in", rows)
    with profile.phase("write", "validating the parts together and swapping the day"):
        validate_staged(client, staged, args.run_date, users, rows, args.n_recommendations)
        swap_days(client, target, staged, "run_date", args.run_date, args.run_date)
    log.info("rows written=%d to %s for run_date %s", rows, target, args.run_date)
    profile.count("rows_out", rows)
    store.write_json(artifacts.join(layout.run_prefix(args.artifacts_uri, args.run_date),
                                    contract.PREDICTIONS_RECORD), {
        "run_date": args.run_date.isoformat(), "model_id": parts[0]["model_id"],
        "model_uri": parts[0]["model_uri"], "rows_written": rows, "users": users,
        "cold_users": sum(p["cold_users"] for p in parts), "table": target,
        "n_shards": args.n_shards,
        "shards": [{k: p[k] for k in ("shard", "rows", "users", "table", "generated_at")} for p in parts],
        "generated_at": min(p["generated_at"] for p in parts),
        "published_at": dt.datetime.now(dt.UTC).isoformat(),
        "image": os.environ.get(contract.IMAGE_ENV) or None,  # what served the day (feedback_task)
        # the Recommender page's lineage
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
    })


if __name__ == "__main__":
    sys.exit(cli.run_step("publish_predictions_task", main, build_parser(), validate=validate))
