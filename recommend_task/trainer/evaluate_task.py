"""Evaluate a run's candidate model on the holdout against popularity and the published model.

Computes precision/recall/MAP/NDCG@k and catalog coverage for the candidate, a popularity
baseline and (if one is published) the currently published model, all on the same holdout.
Writes ``evaluation.json`` and its HTML report (``report.html``, :mod:`trainer.evaluation.html_report`)
beside the model and one row per model to BigQuery ``model_metrics`` (replaced, never
duplicated, on a re-run), and records the verdict that promote_model_task enforces. A failed
verdict is not a failed step: the metrics are the result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from typing import Any

import numpy as np

from trainer import contract
from trainer.core import profile
from trainer.core.errors import TrainerError
from trainer.evaluation import html_report
from trainer.evaluation.promotion_rule import decide
from trainer.evaluation.ranking_metrics import popularity_ranking, ranking_metrics
from trainer.model.matrices import CFMatrices, load_matrices
from trainer.model.model_artifact import ModelArtifact, load_model
from trainer.step import cli
from trainer.storage import artifacts, layout, retention, tables
from trainer.storage.clients import bigquery_client
from trainer.storage.model_pointer import read_pointer
from trainer.storage.partitions import replace_with_row, replace_with_rows

log = logging.getLogger("trainer.evaluate_task")

METRICS = ("precision", "recall", "map", "ndcg")
REPORT_FILE = contract.REPORT_PAGE


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    retention.add_table_arguments(parser)
    parser.add_argument("--model-uri", help="model to evaluate (default: the run's candidate)")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the @k metrics")
    parser.add_argument("--primary-metric", choices=METRICS, default="recall",
                        help="metric the verdict is based on")
    parser.add_argument("--min-lift", type=float, default=0.05,
                        help="required relative improvement over popularity (0.05 = 5%%)")
    parser.add_argument("--max-regression", type=float, default=0.02,
                        help="tolerated relative drop against the published model")
    parser.add_argument("--max-eval-users", type=int, default=20_000,
                        help="score at most this many holdout users, a fixed random sample (0 = all): "
                        "scoring costs a pass over every item per user and model")
    return parser


def model_picks(model: ModelArtifact, matrices: CFMatrices, users: np.ndarray, k: int) -> np.ndarray:
    """``model``'s top k for ``users`` from their training interactions, in the matrices' item
    space (-1 where it recommends an item the matrices don't have: it can't be hit)."""
    interactions = model.reindex(matrices.train[users], matrices.items)
    picks, _ = model.recommend(interactions, k, matrices.users.ids[users])
    as_matrix_items = np.full(picks.shape, -1, dtype=np.int64)
    valid = picks >= 0
    as_matrix_items[valid] = matrices.items.index_of(model.items.id_of(picks[valid]))
    return as_matrix_items


def metrics_row(run_date: dt.date, model: ModelArtifact, model_uri: str, k: int,
                results: dict[str, dict[str, float] | None], published_id: str | None,
                primary: str, verdict, evaluated_at: dt.datetime) -> dict:
    row = {
        "model_id": model.model_id, "run_date": run_date, "evaluated_at": evaluated_at,
        "model_uri": model_uri, "k": k, "eval_users": int(results["model"]["users"]),
        "published_model_id": published_id, "primary_metric": primary,
        "verdict": verdict.verdict, "reasons": "; ".join(verdict.reasons),
        "params": json.dumps(model.params, sort_keys=True),
    }
    for rec in tables.RECOMMENDERS:
        for metric in tables.METRIC_NAMES:
            values = results.get(rec)
            row[f"{rec}_{metric}"] = float(values[metric]) if values else None
    return row


def lineage(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``model_metrics`` lineage columns: the run and image evaluating the model (the same
    run trained it) and the window and counts of its matrices."""
    window, counts = manifest.get("window", {}), manifest.get("counts", {})
    return {
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
        "image": os.environ.get(contract.IMAGE_ENV) or None,
        "window_start": dt.date.fromisoformat(window["start"]) if window.get("start") else None,
        "train_end": dt.date.fromisoformat(window["train_end"]) if window.get("train_end") else None,
        "events_rows_read": manifest.get("quality", {}).get("rows_read"),
        "train_users": counts.get("users"), "train_items": counts.get("items"),
        "train_interactions": counts.get("train_nnz"),
    }


def tuning_columns(model: ModelArtifact) -> dict[str, Any]:
    """The ``model_metrics`` columns saying where the model's settings came from (train_task's
    tuning; a model trained before it records none)."""
    tuning = model.metadata.get("tuning") or {}
    return {"tuning_source": tuning.get("source"),
            "tuned_on": dt.date.fromisoformat(tuning["tuned_on"]) if tuning.get("tuned_on") else None,
            "tuned_model_id": tuning.get("tuned_model_id"), "tuning_note": tuning.get("note")}


def trial_rows(trials: dict[str, Any], loaded_at: dt.datetime) -> list[dict[str, Any]]:
    """``tuning_trials`` rows of a ``trials.json``."""
    k = trials["k"]
    return [{"run_date": dt.date.fromisoformat(trials["run_date"]), "model_id": trials["model_id"],
             "trial": t["trial"], "factors": t["factors"], "regularization": t["regularization"],
             "alpha": t["alpha"], "weighting": t["weighting"], "status": t["status"], "rung": t["rung"],
             "iterations": t["iterations"], "k": k, "validation_ndcg": t.get(f"ndcg_at_{k}"),
             "validation_recall": t.get(f"recall_at_{k}"), "seconds": t["seconds"],
             "winner": bool(t["winner"]), "note": t.get("note"), "seed": trials.get("seed"),
             "loaded_at": loaded_at} for t in trials["trials"]]


def write_trials(client, project: str, dataset: str, store: artifacts.ArtifactStore, model_uri: str,
                 run_date: dt.date, loaded_at: dt.datetime) -> int:
    """Load the model's ``trials.json`` into ``tuning_trials``, replacing this run's rows for the
    model (a re-run never duplicates them); returns the rows written."""
    try:
        trials = store.read_json(artifacts.join(model_uri, contract.TRIALS_RECORD))
    except FileNotFoundError:
        return 0  # a model trained before tuning existed
    rows = trial_rows(trials, loaded_at)
    if rows:
        replace_with_rows(client, tables.table_id(project, dataset, tables.TUNING_TRIALS),
                          tables.TUNING_TRIALS_SPEC.schema, rows,
                          "run_date = @run_date AND model_id = @model_id",
                          {"run_date": run_date, "model_id": trials["model_id"]})
    return len(rows)


def write_metrics_row(client, project: str, dataset: str, row: dict) -> None:
    """Replace this model's row for this run date (a re-run never duplicates it)."""
    replace_with_row(client, tables.table_id(project, dataset, tables.MODEL_METRICS),
                     tables.MODEL_METRICS_SPEC.schema, row, "model_id = @model_id AND run_date = @run_date")


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    retention.table_retention(args)
    if args.k < 1:
        raise TrainerError(f"--k must be >= 1, got {args.k}")
    if args.max_eval_users < 0:
        raise TrainerError(f"--max-eval-users must be >= 0, got {args.max_eval_users}")


def sample_users(users: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``users`` (all if ``limit`` is 0), the same ones for the same input:
    the candidate, popularity and the published model are all judged on this sample."""
    if not limit or users.size <= limit:
        return users
    return np.sort(np.random.default_rng(0).choice(users, size=limit, replace=False))


def main(args: argparse.Namespace) -> None:
    validate(args)
    store = artifacts.ArtifactStore(args.project)
    with profile.phase("read", "reading matrices"):
        matrices, manifest = load_matrices(store, args.artifacts_uri, args.run_date)
    if matrices.holdout is None:
        raise TrainerError(f"run {args.run_date} has no holdout (holdout_days=0): cannot evaluate")
    users = np.flatnonzero(matrices.holdout.getnnz(axis=1) > 0)
    if users.size == 0:
        raise TrainerError(f"no holdout interactions in {manifest['window']['holdout_start']}.."
                           f"{manifest['window']['holdout_end']} from users seen in training: "
                           "cannot evaluate")

    holdout_users = users.size
    users = sample_users(users, args.max_eval_users)
    model_uri = args.model_uri or layout.candidate_model_uri(store, args.artifacts_uri, args.run_date)
    with profile.phase("read", "reading the model"):
        model = load_model(store, model_uri)
    profile.count("rows_in", int(matrices.holdout[users].nnz))
    log.info("evaluating %s on %d of %d holdout users%s (k=%d)", model.model_id, users.size, holdout_users,
             " (a fixed random sample)" if users.size < holdout_users else "", args.k)

    results: dict[str, dict[str, float] | None] = {}
    holdout = matrices.holdout[users]
    picks: dict[str, np.ndarray] = {}
    with profile.phase("score", "scoring model"):
        picks["model"] = model_picks(model, matrices, users, args.k)
        results["model"] = ranking_metrics(picks["model"], holdout, args.k)
    with profile.phase("score", "scoring popularity"):
        picks["popularity"] = popularity_ranking(matrices.train[users], args.k)
        results["popularity"] = ranking_metrics(picks["popularity"], holdout, args.k)
    pointer, _ = read_pointer(store, args.artifacts_uri)
    if pointer and pointer.get("run_date", "") > args.run_date.isoformat():
        # A backfill: the published model trained on this run's holdout days, so comparing
        # with it says nothing. Promotion will not publish an older model anyway.
        log.info("published model %s is newer (run date %s) than this run: not compared",
                 pointer["model_id"], pointer["run_date"])
        pointer = None
    published_id = pointer["model_id"] if pointer else None
    results["published"] = None
    if pointer:
        with profile.phase("score", f"scoring published model {published_id}"):
            picks["published"] = model_picks(load_model(store, pointer["model_uri"]), matrices, users, args.k)
            results["published"] = ranking_metrics(picks["published"], holdout, args.k)
    with profile.phase("score", "per-user recall and popularity bias"):
        item_users = np.asarray((matrices.train > 0).sum(axis=0)).ravel()
        spread = html_report.distributions(picks, holdout, item_users, args.k)

    for name, values in results.items():
        if values:
            log.info("%-10s %s", name, "  ".join(
                f"{m}@{args.k}={values[m]:.4f}" for m in METRICS) + f"  coverage={values['coverage']:.3f}")
    verdict = decide(results["model"], results["popularity"], results["published"],
                     args.primary_metric, args.min_lift, args.max_regression)
    log.info("verdict: %s (%s)", verdict.verdict.upper(), "; ".join(verdict.reasons))

    evaluated_at = dt.datetime.now(dt.UTC)
    evaluation = {
        "model_id": model.model_id, "model_uri": model_uri, "run_date": args.run_date.isoformat(),
        "k": args.k, "eval_users": int(users.size), "holdout_users": int(holdout_users),
        "primary_metric": args.primary_metric, "min_lift": args.min_lift,
        "max_regression": args.max_regression, "metrics": results, "distributions": spread,
        "published_model_id": published_id, "verdict": verdict.verdict,
        "reasons": verdict.reasons, "evaluated_at": evaluated_at.isoformat(),
        "report_uri": artifacts.join(model_uri, REPORT_FILE), "lineage": _json_safe(lineage(manifest)),
    }
    store.write_json(artifacts.join(model_uri, contract.EVALUATION_RECORD), evaluation)
    store.write_bytes(evaluation["report_uri"], html_report.render(evaluation).encode(),
                      content_type="text/html; charset=utf-8")
    client = bigquery_client(args.project, args.location)
    with profile.phase("write", f"writing the {tables.MODEL_METRICS} row"):
        tables.ensure_all(client, args.project, args.dataset, args.location,
                      retention.table_retention(args))
        write_metrics_row(client, args.project, args.dataset, metrics_row(
            args.run_date, model, model_uri, args.k, results, published_id, args.primary_metric,
            verdict, evaluated_at) | lineage(manifest) | tuning_columns(model))
    with profile.phase("write", f"loading the search's trials into {tables.TUNING_TRIALS}"):
        trials = write_trials(client, args.project, args.dataset, store, model_uri, args.run_date,
                              evaluated_at)
    profile.count("rows_out", 1 + trials)
    log.info("wrote evaluation.json, %s, a %s row and %d %s rows", REPORT_FILE, tables.MODEL_METRICS,
             trials, tables.TUNING_TRIALS)


if __name__ == "__main__":
    sys.exit(cli.run_step("evaluate_task", main, build_parser(), validate=validate))
