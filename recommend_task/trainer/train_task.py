"""Fit an implicit-feedback ALS model on a run's training matrix and save the model artifact.

The model id is derived from the matrices' checksum and the parameters, so re-running the
same training writes the same model and never overwrites a different (e.g. published) one.
``runs/<run_date>/candidate.json`` records the model for evaluate_task and promote_model_task.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import sys
import time

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares, calculate_loss
from threadpoolctl import threadpool_limits

from trainer.core import profile
from trainer.core.errors import TrainerError
from trainer.model.matrices import load_matrices
from trainer.model.model_artifact import ModelArtifact
from trainer.step import cli, preflight
from trainer.storage import artifacts, layout

log = logging.getLogger("trainer.train_task")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    parser.add_argument("--factors", type=int, default=64, help="latent factors")
    parser.add_argument("--regularization", type=float, default=0.05, help="L2 regularization")
    parser.add_argument("--alpha", type=float, default=2.0, help="confidence scaling of weights")
    parser.add_argument("--iterations", type=int, default=15, help="ALS sweeps")
    parser.add_argument("--random-seed", type=int, default=42, help="factor initialisation seed")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="threads for ALS (0 = all cores); BLAS is always pinned to 1")
    preflight.add_time_budget(parser)
    return parser


def validate_params(args: argparse.Namespace) -> dict:
    checks = {
        "factors": (args.factors, 1, 1024), "iterations": (args.iterations, 1, 500),
        "regularization": (args.regularization, 0.0, 1e3), "alpha": (args.alpha, 1e-6, 1e4),
        "num_threads": (args.num_threads, 0, 1024), "time_budget_s": (args.time_budget_s, 0, 1e7),
    }
    for name, (value, low, high) in checks.items():
        if not low <= value <= high:
            raise TrainerError(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {value}")
    return {
        "factors": args.factors, "regularization": args.regularization, "alpha": args.alpha,
        "iterations": args.iterations, "random_seed": args.random_seed,
        "num_threads": args.num_threads,
    }


def model_id_for(run_date: dt.date, matrices_sha: str, params: dict) -> str:
    """Content-addressed id: same data + same parameters -> same id."""
    fingerprint = {k: v for k, v in params.items() if k != "num_threads"}
    digest = hashlib.sha256((matrices_sha + json.dumps(fingerprint, sort_keys=True)).encode())
    return f"als-{run_date:%Y%m%d}-{digest.hexdigest()[:10]}"


def fit(train, params: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit ALS on ``train`` (users x items weights); returns factors and the final loss."""

    def progress(iteration: int, elapsed: float, _loss: float | None) -> None:
        log.info("ALS iteration %d/%d (%.2fs)", iteration + 1, params["iterations"], elapsed)

    # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params["factors"], regularization=params["regularization"],
            alpha=params["alpha"], iterations=params["iterations"],
            random_state=params["random_seed"], num_threads=params["num_threads"],
            # Once at the end, below: per iteration it costs about a fifth of the fit.
            calculate_training_loss=False,
        )
        model.fit(train, show_progress=False, callback=progress)
        loss = calculate_loss((params["alpha"] * train).astype(np.float32).tocsr(), model.user_factors,
                              model.item_factors, params["regularization"],
                              num_threads=params["num_threads"])
    log.info("ALS final training loss=%.6f", loss)
    return np.asarray(model.user_factors), np.asarray(model.item_factors), float(loss)


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "artifacts_uri")
    validate_params(args)


def main(args: argparse.Namespace) -> None:
    validate(args)
    params = validate_params(args)
    store = artifacts.ArtifactStore(args.project)
    with profile.phase("read", "reading matrices"):
        matrices, manifest = load_matrices(store, args.artifacts_uri, args.run_date)
    profile.count("rows_in", matrices.train.nnz)
    log.info("training on %s: users=%d items=%d nnz=%d", manifest["matrices_uri"],
             len(matrices.users), len(matrices.items), matrices.train.nnz)
    machine = preflight.Machine.detect()
    if params["num_threads"]:
        machine = dataclasses.replace(machine, vcpus=min(machine.vcpus, params["num_threads"]))
    preflight.check("train_task", preflight.train_estimate(
        nnz=matrices.train.nnz, users=len(matrices.users), items=len(matrices.items),
        factors=params["factors"], iterations=params["iterations"]), machine, args.time_budget_s)

    started = time.perf_counter()
    with profile.phase("fit", "ALS fit"):
        user_factors, item_factors, loss = fit(matrices.train, params)
    model_id = model_id_for(args.run_date, manifest["sha256"], params)
    popularity = np.asarray((matrices.train > 0).sum(axis=0)).ravel().astype(np.float32)
    artifact = ModelArtifact(
        model_id=model_id, users=matrices.users, items=matrices.items,
        user_factors=user_factors, item_factors=item_factors, item_popularity=popularity,
        params=params,
        metadata={
            "run_date": args.run_date.isoformat(), "window": manifest["window"],
            "matrices_uri": manifest["matrices_uri"], "matrices_sha256": manifest["sha256"],
            "event_weights": manifest["event_weights"], "final_loss": loss,
            "fit_seconds": round(time.perf_counter() - started, 3),
            "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        },
    )
    uri = layout.model_prefix(args.artifacts_uri, model_id)
    with profile.phase("write", "writing the model"):
        artifact.save(store, uri)
    profile.count("rows_out", len(user_factors) + len(item_factors))
    store.write_json(layout.candidate_record(args.artifacts_uri, args.run_date),
                     {"model_id": model_id, "model_uri": uri, "run_date": args.run_date.isoformat()})
    log.info("saved model %s to %s", model_id, uri)


if __name__ == "__main__":
    sys.exit(cli.run_step("train_task", main, build_parser(), validate=validate))
