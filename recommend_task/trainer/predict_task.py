"""Write top-N recommendations for every user active in the window to BigQuery.

Loads the published model (or ``--model-uri``), recomputes each active user's factors from
their interactions in the window ending at ``--run-date`` (the window predict_window_task
prepared for the run, else read here: :mod:`trainer.predict_window_task`), recommends ``--n-recommendations``
unseen items per user (popular items for users with no known item), then:

1. stages the rows in a temporary table (load job),
2. validates them there (every active user once, ranks 1..n, no duplicates, no nulls),
3. swaps them in with DELETE + INSERT for ``run_date`` inside one transaction.

Readers never see a partial day, a re-run replaces the day instead of duplicating it, and a
failure at any point leaves the previous recommendations untouched.

With ``--shard I --n-shards N`` it scores only the users of shard I (:mod:`trainer.data.shards`)
and stops after staging them in the shard's own part table: publish_predictions_task
validates all N parts together and swaps the day in once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys

import numpy as np
import pyarrow as pa

from trainer import contract
from trainer.core import profile
from trainer.core.errors import TrainerError, ValidationError, VerdictFailedError
from trainer.data.date_windows import lookback
from trainer.data.events import EventSource, add_window_args, check_window_args
from trainer.data.shards import MAX_SHARDS, Shard
from trainer.model.idmap import IdMap
from trainer.model.model_artifact import ModelArtifact, load_model
from trainer.predict_window_task import load_prepared, read_window
from trainer.step import cli
from trainer.storage import artifacts, bq, layout, retention, tables
from trainer.storage.clients import bigquery_client
from trainer.storage.model_pointer import published_model_uri
from trainer.storage.partitions import staging_table, swap_days, union_of, write_part_table

log = logging.getLogger("trainer.predict_task")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    retention.add_table_arguments(parser)
    add_window_args(parser)
    parser.add_argument("--model-uri", help="model to use (default: the published one)")
    parser.add_argument("--n-recommendations", type=int, default=10, help="items per user")
    parser.add_argument("--shard", type=int, help="score only this shard's users and stage them "
                        "for publish_predictions_task (0-based; needs --n-shards)")
    parser.add_argument("--n-shards", type=int, help=f"number of shards (1..{MAX_SHARDS})")
    return parser


def recommendations_table(model: ModelArtifact, users: IdMap, ids: np.ndarray, scores: np.ndarray,
                          run_date: dt.date, generated_at: dt.datetime) -> pa.Table:
    """One row per (user, rank) for the filled slots (filled slots always come first), in the
    recommendations table's column order and types."""
    user_idx, slot = np.nonzero(ids >= 0)
    rows = len(user_idx)
    return pa.table({
        "run_date": pa.repeat(pa.scalar(run_date, pa.date32()), rows),
        "user_id": pa.array(users.ids.astype(object), pa.string()).take(user_idx),
        "rank": pa.array((slot + 1).astype(np.int64)),
        "item_id": pa.array(model.items.ids.astype(object), pa.string()).take(ids[user_idx, slot]),
        "score": pa.array(scores[user_idx, slot].astype(np.float64)),
        "model_id": pa.repeat(pa.scalar(model.model_id, pa.string()), rows),
        "generated_at": pa.repeat(pa.scalar(generated_at, pa.timestamp("us", tz="UTC")), rows),
    })


def validate_staged(client, staging: str | list[str], run_date: dt.date, expected_users: int,
                    expected_rows: int, n: int) -> None:
    """Check the staged rows (one table, or all the parts of a sharded run together) in
    BigQuery itself: what will be published, not what we meant to publish. Raise
    ValidationError naming every violated rule; a user in two parts fails the user count."""
    sql = f"""
        WITH staged AS (SELECT * FROM {union_of(staging)}),
        per_user AS (
          SELECT user_id, COUNT(*) AS n_rows, COUNT(DISTINCT item_id) AS n_items,
                 COUNT(DISTINCT rank) AS n_ranks, MIN(rank) AS min_rank, MAX(rank) AS max_rank
          FROM staged GROUP BY user_id
        )
        SELECT
          (SELECT COUNT(*) FROM staged) AS total_rows,
          (SELECT COUNT(*) FROM per_user) AS users,
          (SELECT COUNT(*) FROM staged WHERE run_date IS NULL OR run_date != @run_date
             OR user_id IS NULL OR item_id IS NULL OR rank IS NULL OR score IS NULL
             OR model_id IS NULL OR generated_at IS NULL) AS bad_rows,
          (SELECT COUNT(*) FROM per_user WHERE n_rows > @n OR n_items != n_rows
             OR n_ranks != n_rows OR min_rank != 1 OR max_rank != n_rows) AS bad_users
    """
    row = next(iter(bq.run(client, sql, {"run_date": run_date, "n": n})))
    problems = []
    if row["total_rows"] != expected_rows:
        problems.append(f"{row['total_rows']} rows staged, expected {expected_rows}")
    if row["users"] != expected_users:
        problems.append(f"{row['users']} users staged, expected {expected_users}")
    if row["bad_rows"]:
        problems.append(f"{row['bad_rows']} rows with nulls or another run_date")
    if row["bad_users"]:
        problems.append(f"{row['bad_users']} users without ranks 1..k of distinct items (k <= {n})")
    if problems:
        raise ValidationError(f"staged recommendations for {run_date} rejected, nothing published: "
                              + "; ".join(problems))


def refuse_failed_model(store: artifacts.ArtifactStore, model_uri: str, model_id: str) -> None:
    """An explicitly chosen model that failed its evaluation must not reach users; one never
    evaluated may (trying a candidate is what --model-uri is for), with a warning."""
    try:
        evaluation = store.read_json(artifacts.join(model_uri, contract.EVALUATION_RECORD))
    except FileNotFoundError:
        log.warning("model %s has not been evaluated", model_id)
        return
    if evaluation.get("verdict") != "pass":
        raise VerdictFailedError(f"model {model_id} failed evaluation, not predicting with it: "
                                 + "; ".join(evaluation.get("reasons", [])))


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    retention.table_retention(args)
    if not 1 <= args.n_recommendations <= 1000:
        raise TrainerError(f"--n-recommendations must be in [1, 1000], got {args.n_recommendations}")
    check_window_args(args)
    lookback(args.run_date, args.lookback_days)
    shard_of(args)


def shard_of(args: argparse.Namespace) -> Shard | None:
    """The shard to score, or None to score and publish every user in this process."""
    if args.shard is None and args.n_shards is None:
        return None
    if args.shard is None or args.n_shards is None:
        raise TrainerError("--shard and --n-shards go together")
    return Shard(args.shard, args.n_shards)


def main(args: argparse.Namespace) -> None:
    validate(args)
    shard = shard_of(args)
    store = artifacts.ArtifactStore(args.project)
    model_uri = args.model_uri or published_model_uri(store, args.artifacts_uri)
    with profile.phase("read", "reading the model"):
        model = load_model(store, model_uri)
    refuse_failed_model(store, model_uri, model.model_id)
    log.info("predicting with model %s from %s", model.model_id, model_uri)

    client = bigquery_client(args.project, args.location)
    tables.ensure_all(client, args.project, args.dataset, args.location,
                      retention.table_retention(args))
    window = lookback(args.run_date, args.lookback_days)
    source = EventSource(client, tables.table_id(args.project, args.dataset, tables.EVENTS),
                         args.max_id_bytes)
    with profile.phase("read", "reading events"):
        prepared = load_prepared(store, client, args, source, window, model, shard)
        cache = None  # what the rows came from, for the part record (the step's lineage)
        if prepared is None:
            _, users, interactions, cache = read_window(store, client, args, source, window, model, shard)
        else:
            users, interactions = prepared
    cold = int((interactions.getnnz(axis=1) == 0).sum())
    log.info("active users=%d (of which %d with no item known to the model get popular items), "
             "interaction matrix shape=%s nnz=%d", len(users), cold, interactions.shape,
             interactions.nnz)
    with profile.phase("score", "recommending"):
        ids, scores = model.recommend(interactions, args.n_recommendations, users.ids)
    generated_at = dt.datetime.now(dt.UTC)
    with profile.phase("build", "building the recommendations table"):
        recs = recommendations_table(model, users, ids, scores, args.run_date, generated_at)
    log.info("computed %d recommendations for %d users", len(recs), int((ids[:, 0] >= 0).sum()))

    target = tables.table_id(args.project, args.dataset, tables.RECOMMENDATIONS)
    if shard is not None:
        with profile.phase("write", f"staging {shard}"):
            stage_part(client, store, args, shard, target, model, model_uri, recs, len(users), cold,
                       generated_at, {"prepared": prepared is not None, "window_cache": cache})
        return
    with profile.phase("write", "staging, validating and swapping"), staging_table(
        client, target, recs, list(tables.RECOMMENDATIONS_SPEC.schema)
    ) as staging:
        validate_staged(client, staging, args.run_date, len(users), len(recs), args.n_recommendations)
        swap_days(client, target, staging, "run_date", args.run_date, args.run_date)
    log.info("rows written=%d to %s for run_date %s", len(recs), target, args.run_date)
    profile.count("rows_out", len(recs))

    store.write_json(artifacts.join(layout.run_prefix(args.artifacts_uri, args.run_date),
                                    contract.PREDICTIONS_RECORD), {
        "run_date": args.run_date.isoformat(), "model_id": model.model_id, "model_uri": model_uri,
        "rows_written": len(recs), "users": len(users), "cold_users": cold,
        "table": target, "generated_at": generated_at.isoformat(),
        "image": os.environ.get(contract.IMAGE_ENV) or None,  # what served the day (feedback_task)
        # the Recommender page's lineage
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
    })


def stage_part(client, store: artifacts.ArtifactStore, args: argparse.Namespace, shard: Shard,
               target: str, model: ModelArtifact, model_uri: str, recs: pa.Table, users: int,
               cold: int, generated_at: dt.datetime, read: dict | None = None) -> None:
    """Stage this shard's rows in its part table, then record the part (the record last: a
    record always describes a complete part). Publishing is publish_predictions_task's job."""
    part = shard.part_table(target, args.run_date)
    rows = write_part_table(client, part, recs, list(tables.RECOMMENDATIONS_SPEC.schema))
    if rows != len(recs):
        raise ValidationError(f"{shard}: {rows} rows loaded into {part}, expected {len(recs)}")
    record_uri = shard.record_uri(args.artifacts_uri, args.run_date)
    store.write_json(record_uri, {
        "run_date": args.run_date.isoformat(), "shard": shard.index, "n_shards": shard.count,
        "table": part, "rows": len(recs), "users": users, "cold_users": cold,
        "model_id": model.model_id, "model_uri": model_uri,
        "n_recommendations": args.n_recommendations, "generated_at": generated_at.isoformat(),
        # what the rows were scored from: the prepared window file, else the cache or events
        **(read or {}),
    })
    profile.count("rows_out", len(recs))
    log.info("%s: rows staged=%d for %d users in %s, recorded in %s (not published yet)",
             shard, len(recs), users, part, record_uri)


if __name__ == "__main__":
    sys.exit(cli.run_step("predict_task", main, build_parser(), validate=validate))
