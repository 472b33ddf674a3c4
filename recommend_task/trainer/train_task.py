"""Fit an implicit-feedback ALS model on a run's training matrix and save the model artifact.

With ``--tune`` the settings (factors, regularization, alpha, weighting) come from a search on
the training part's last days (:mod:`trainer.tuning`), run here rather than in a step of its
own: it needs the same matrices and machine as the refit, and a step more would cost a job
start and a hand-off file. ``trials.json`` beside the model records every trial and where the
chosen settings came from.

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
import os
import sys
import time
from typing import Any

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares, calculate_loss
from threadpoolctl import threadpool_limits

from trainer import contract
from trainer.core import profile
from trainer.core.errors import TrainerError
from trainer.model import weighting
from trainer.model.matrices import CFMatrices, load_matrices
from trainer.model.model_artifact import ModelArtifact
from trainer.step import cli, preflight
from trainer.storage import artifacts, layout
from trainer.tuning import schedule, settings, validation_split
from trainer.tuning.successive_halving import Budget, Costs, Search, SearchResult, plan

log = logging.getLogger("trainer.train_task")

SCALE_EVENTS = 100_000_000  # the scale a candidate's refit and predict must stay affordable at


def optional(kind: type) -> Any:
    """An argument type where an empty value means "not given" (the DAG renders a null param so)."""

    def parse(value: str) -> Any:
        return None if value.strip() == "" else kind(value)

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    parser.add_argument("--factors", type=optional(int), default=None,
                        help=f"latent factors (default {settings.DEFAULTS.factors}; given, the search "
                        "keeps it)")
    parser.add_argument("--regularization", type=optional(float), default=None,
                        help=f"L2 regularization (default {settings.DEFAULTS.regularization}; given, "
                        "the search keeps it)")
    parser.add_argument("--alpha", type=optional(float), default=None,
                        help=f"confidence scaling of weights (default {settings.DEFAULTS.alpha}; given, "
                        "the search keeps it)")
    parser.add_argument("--weighting", type=optional(str), default=None,
                        help="input weighting: raw summed weights or log1p of them (default raw; given, "
                        "the search keeps it)")
    parser.add_argument("--iterations", type=int, default=15, help="ALS sweeps")
    parser.add_argument("--random-seed", type=int, default=42,
                        help="factor initialisation seed, and the search's")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="threads for ALS (0 = all cores); BLAS is always pinned to 1")
    parser.add_argument("--tune", choices=schedule.MODES,
                        default=os.environ.get(contract.TUNE_ENV, "").strip() or "off",
                        help="search the settings: off, always, or weekly (reuse the newest settings "
                        f"tuned on or before the last training day, search when they are a week old); "
                        f"default: ${contract.TUNE_ENV}, else off")
    parser.add_argument("--tune-trials", type=int, default=9, help="candidates, today's settings included")
    parser.add_argument("--tune-budget-ratio", type=float, default=3.0,
                        help="the search's seconds at most this many times the refit's")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the search's ndcg@k and recall@k")
    parser.add_argument("--max-regression", type=float, default=0.02,
                        help="the gate's tolerated relative recall drop: a candidate whose validation "
                        "recall is lower than today's settings' by more is not chosen")
    parser.add_argument("--train-limit-s", type=int, default=contract.STEP_TIMEOUT_S["train_task"],
                        help="the train step's timeout: a candidate whose refit at 100M events would "
                        "take more than a third of it is not tried")
    parser.add_argument("--predict-limit-s", type=int, default=contract.STEP_TIMEOUT_S["predict_task"],
                        help="the predict step's timeout: the same for its scoring")
    preflight.add_time_budget(parser)
    return parser


def fixed_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The dimensions the run's arguments fix (None: free for the search)."""
    return {"factors": args.factors, "regularization": args.regularization, "alpha": args.alpha,
            "weighting": args.weighting}


def validate_params(args: argparse.Namespace) -> dict:
    checks = {
        "factors": (args.factors, 1, 1024), "iterations": (args.iterations, 1, 500),
        "regularization": (args.regularization, 0.0, 1e3), "alpha": (args.alpha, 1e-6, 1e4),
        "num_threads": (args.num_threads, 0, 1024), "time_budget_s": (args.time_budget_s, 0, 1e7),
        "tune_trials": (args.tune_trials, 1, 100), "tune_budget_ratio": (args.tune_budget_ratio, 0.0, 100.0),
        "k": (args.k, 1, 1000), "max_regression": (args.max_regression, 0.0, 1.0),
        "train_limit_s": (args.train_limit_s, 1, 1e7), "predict_limit_s": (args.predict_limit_s, 1, 1e7),
    }
    for name, (value, low, high) in checks.items():
        if value is not None and not low <= value <= high:
            raise TrainerError(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {value}")
    if args.weighting is not None and args.weighting not in weighting.WEIGHTINGS:
        raise TrainerError(f"--weighting must be one of {', '.join(weighting.WEIGHTINGS)}, "
                           f"got {args.weighting!r}")
    return {"iterations": args.iterations, "random_seed": args.random_seed, "num_threads": args.num_threads}


def model_params(chosen: settings.Settings, run: dict) -> dict:
    """The model's parameters: the chosen settings and the run's iterations, seed and threads."""
    params = {"factors": chosen.factors, "regularization": chosen.regularization, "alpha": chosen.alpha,
              **run}
    if chosen.weighting != weighting.RAW:  # absent means raw: models saved before it keep their ids
        params["weighting"] = chosen.weighting
    return params


def model_id_for(run_date: dt.date, matrices_sha: str, params: dict) -> str:
    """Content-addressed id: same data + same parameters -> same id."""
    fingerprint = {k: v for k, v in params.items() if k != "num_threads"}
    digest = hashlib.sha256((matrices_sha + json.dumps(fingerprint, sort_keys=True)).encode())
    return f"als-{run_date:%Y%m%d}-{digest.hexdigest()[:10]}"


def fit(train, params: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit ALS on ``train`` (users x items summed weights, taken through the params' weighting);
    returns factors and the final loss."""

    def progress(iteration: int, elapsed: float, _loss: float | None) -> None:
        log.info("ALS iteration %d/%d (%.2fs)", iteration + 1, params["iterations"], elapsed)

    train = weighting.apply(train, weighting.of(params))
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


@dataclasses.dataclass
class Choice:
    """The settings a run trains with and where they came from."""

    settings: settings.Settings
    source: str  # search | reused | default | params
    note: str | None = None  # why no search ran, when one was due
    tuned_on: str | None = None  # run date of the search that chose them
    tuned_model_id: str | None = None  # the model that search trained with them
    search: SearchResult | None = None
    validation: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "note": self.note, "tuned_on": self.tuned_on,
                "tuned_model_id": self.tuned_model_id, "settings": self.settings.to_dict()}


def scale_limits(args: argparse.Namespace, matrices: CFMatrices, events: int, time_left_s: float | None):
    """A candidate is not tried when its refit or predict's scoring at :data:`SCALE_EVENTS`
    (this run's figures scaled, at the costs measured on this machine) would take more than a
    third of its step's timeout, or its refit here more than a third of the step's time left."""
    scale = SCALE_EVENTS / max(1, events)
    nnz, users, items = matrices.train.nnz * scale, len(matrices.users) * scale, len(matrices.items)

    def too_costly(candidate: settings.Settings, costs: Costs) -> str | None:
        here = costs.fit_per_nnz_iteration_factor * matrices.train.nnz * args.iterations * candidate.factors
        if time_left_s is not None and here > time_left_s / 3:
            return f"refit estimated {here:,.1f}s > a third of the step's {time_left_s:,.0f}s left"
        refit = costs.fit_per_nnz_iteration_factor * nnz * args.iterations * candidate.factors
        # predict: one half-step per user (about an iteration's work at most) and the scoring
        predict = (costs.fit_per_nnz_iteration_factor * nnz * candidate.factors
                   + costs.score_per_user_item_factor * users * items * candidate.factors)
        if refit > args.train_limit_s / 3:
            return f"refit at {SCALE_EVENTS:,} events estimated {refit:,.0f}s > a third of train's timeout"
        if predict > args.predict_limit_s / 3:
            return (f"predict at {SCALE_EVENTS:,} events estimated {predict:,.0f}s > a third of "
                    "predict's timeout")
        return None

    return too_costly


def search_settings(args: argparse.Namespace, matrices: CFMatrices, manifest: dict,
                    fixed: dict[str, Any], machine: preflight.Machine, time_left_s: float | None) -> Choice:
    """Run the search, or say in one log line why not and use today's settings."""
    fallback = settings.DEFAULTS.fixing(fixed)
    split = validation_split.carve(matrices, args.k, args.random_seed)
    if isinstance(split, str):
        log.info("no tuning search: %s; training with today's settings (%s)", split, fallback)
        return Choice(fallback, "default", note=split)
    window = manifest.get("window", {})
    validation = {"start": window.get("validation_start"), "end": window.get("train_end"),
                  "users": int(split.users.size), "nnz": int(split.target.nnz),
                  "fit_nnz": int(split.fit.nnz)}
    first_rung = preflight.train_estimate(
        nnz=split.fit.nnz, users=split.fit.shape[0], items=split.fit.shape[1],
        factors=fallback.factors, iterations=1).seconds(machine) or 0.0
    refit = preflight.train_estimate(
        nnz=matrices.train.nnz, users=len(matrices.users), items=len(matrices.items),
        factors=fallback.factors, iterations=args.iterations).seconds(machine) or 0.0
    # The search and the winner's refit both fit in the step's time: the search gets at most two
    # thirds of it (and leaves today's refit twice over), the winner's refit at most a third
    # (scale_limits).
    cap = None if time_left_s is None else min(time_left_s - 2 * refit, time_left_s * 2 / 3)
    if cap is not None and cap < 2 * first_rung:
        note = (f"budget too small for one trial: {max(0.0, cap):.1f}s left of the step's time budget "
                f"after the refit, a trial needs about {first_rung:.1f}s")
        log.info("no tuning search: %s; training with today's settings (%s)", note, fallback)
        return Choice(fallback, "default", note=note, validation=validation)
    candidates = settings.candidates(args.tune_trials, args.random_seed, fixed)
    budget = Budget(ratio=args.tune_budget_ratio, train_nnz=matrices.train.nnz, cap_s=cap)
    planned, _ = plan([c.factors for c in candidates], args.iterations, budget.factor_iterations(
        split.fit.nnz, args.iterations, fallback.factors))
    if planned < 2:
        note = (f"budget too small for one trial: {args.tune_budget_ratio:g} refits cannot fit a "
                "challenger next to today's settings")
        log.info("no tuning search: %s; training with today's settings (%s)", note, fallback)
        return Choice(fallback, "default", note=note, validation=validation)
    log.info("tuning search: %d candidates (seed %d) on %d validation users of %s..%s, fit on %d "
             "non-zeros", len(candidates), args.random_seed, split.users.size, validation["start"],
             validation["end"], split.fit.nnz)
    events = manifest.get("quality", {}).get("valid_rows") or matrices.train.nnz
    result = Search(split, candidates, iterations=args.iterations, k=args.k, seed=args.random_seed,
                    num_threads=args.num_threads, max_regression=args.max_regression,
                    budget=budget,
                    too_costly=scale_limits(args, matrices, events, time_left_s)).run()
    return Choice(result.winner, "search", tuned_on=args.run_date.isoformat(), search=result,
                  validation=validation)


def choose_settings(args: argparse.Namespace, store: artifacts.ArtifactStore, matrices: CFMatrices,
                    manifest: dict, machine: preflight.Machine, time_left_s: float | None) -> Choice:
    """Today's settings, the newest usable tuned ones, or a new search's (``--tune``); the
    run's own arguments fix their dimensions in every case."""
    fixed = fixed_settings(args)
    if args.tune == "off":
        source = "params" if any(v is not None for v in fixed.values()) else "default"
        return Choice(settings.DEFAULTS.fixing(fixed), source)
    train_end = dt.date.fromisoformat(manifest["window"]["train_end"])
    record = schedule.usable_record(store, args.artifacts_uri, train_end)
    if schedule.search_due(args.tune, args.run_date, record):
        return search_settings(args, matrices, manifest, fixed, machine, time_left_s)
    chosen = settings.Settings.from_dict(record["settings"]).fixing(fixed)
    log.info("reusing the settings tuned on %s (model %s): %s", record["run_date"], record["model_id"],
             chosen)
    return Choice(chosen, "reused", tuned_on=record["run_date"], tuned_model_id=record["model_id"])


def trials_record(args: argparse.Namespace, model_id: str, choice: Choice) -> dict[str, Any]:
    """``trials.json``: the search's every trial, or none and why, and the chosen settings."""
    result = choice.search
    return {
        "model_id": model_id, "run_date": args.run_date.isoformat(), "tune": args.tune,
        "seed": args.random_seed, "k": args.k, **choice.record(),
        "validation": choice.validation,
        "rungs": result.rungs if result else [], "budget_s": result.budget_s if result else None,
        "search_seconds": result.seconds if result else 0.0,
        "dropped_numeric": result.dropped_numeric if result else 0,
        "costs": dataclasses.asdict(result.costs) if result and result.costs else None,
        "trials": [t.to_dict(args.k) for t in result.trials] if result else [],
    }


def main(args: argparse.Namespace) -> None:
    validate(args)
    step_started = time.perf_counter()
    run = validate_params(args)
    store = artifacts.ArtifactStore(args.project)
    with profile.phase("read", "reading matrices"):
        matrices, manifest = load_matrices(store, args.artifacts_uri, args.run_date)
    profile.count("rows_in", matrices.train.nnz)
    log.info("training on %s: users=%d items=%d nnz=%d", manifest["matrices_uri"],
             len(matrices.users), len(matrices.items), matrices.train.nnz)
    machine = preflight.Machine.detect()
    if run["num_threads"]:
        machine = dataclasses.replace(machine, vcpus=min(machine.vcpus, run["num_threads"]))
    # Today's (or the given) factors: the search itself never tries a candidate whose refit
    # would not fit in what the step's budget leaves (scale_limits).
    preflight.check("train_task", preflight.train_estimate(
        nnz=matrices.train.nnz, users=len(matrices.users), items=len(matrices.items),
        factors=args.factors or settings.DEFAULTS.factors, iterations=args.iterations),
        machine, args.time_budget_s)

    with profile.phase("fit", "choosing the settings (tuning search)"):
        time_left = (args.time_budget_s - (time.perf_counter() - step_started)
                     if args.time_budget_s else None)  # 0: no limit, as for preflight
        choice = choose_settings(args, store, matrices, manifest, machine, time_left)
    params = model_params(choice.settings, run)
    log.info("training with %s (%s)", choice.settings, choice.source)
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
            "tuning": {**choice.record(), "tune": args.tune, "seed": args.random_seed},
        },
    )
    uri = layout.model_prefix(args.artifacts_uri, model_id)
    with profile.phase("write", "writing the model"):
        artifact.save(store, uri)
        store.write_json(artifacts.join(uri, contract.TRIALS_RECORD), trials_record(args, model_id, choice))
    profile.count("rows_out", len(user_factors) + len(item_factors))
    if choice.source == "search":  # after the model: a record always names a model that exists
        schedule.write_record(store, args.artifacts_uri, args.run_date, choice.settings.to_dict(),
                              model_id, args.random_seed)
    store.write_json(layout.candidate_record(args.artifacts_uri, args.run_date),
                     {"model_id": model_id, "model_uri": uri, "run_date": args.run_date.isoformat()})
    log.info("saved model %s to %s", model_id, uri)


if __name__ == "__main__":
    sys.exit(cli.run_step("train_task", main, build_parser(), validate=validate))
