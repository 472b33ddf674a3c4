"""`make bench`: what train's tuning search costs and what it buys, at 10M events by default.

Seeds the events into emulators of its own (bench_pipeline's), runs create_cf_matrices once,
then train_task twice on the same run date, each as its own process: ``--tune off`` (today's
train step) and ``--tune always`` (the search, then the winner's refit; another model id unless
the search keeps today's settings). Each model then scores the window's users in predict_task
(one shard: staged, not published). Prints today's train step, the search's seconds
(``trials.json``) against it (target: at most 3 times), the winner's refit, predict's scoring for
both models and the trial table; then both models on the evaluation holdout (``matrices.holdout``,
every user with holdout items, the same users for both; evaluate_task's top k): ndcg@k and
recall@k and a 95 % paired bootstrap over users of the relative difference (tuned - default) /
default. The figures go under ``"tuning"`` in ``benchmarks/results.json``, the other keys kept.

Figures, no timing assertion, except the exit status: 1 when the search took more than 3 times
today's train step (the search's stated target).

    .venv/trainer/bin/python benchmarks/bench_tuning.py [--events 10000000] [--log-dir DIR]

Environment: BENCH_EVENTS, BENCH_USERS, BENCH_ITEMS override the generator's sizes (as for
bench_airflow.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from bench_pipeline import RESULTS, emulators, run_measured

from trainer import contract
from trainer.evaluate_task import model_picks
from trainer.evaluation.ranking_metrics import hits_matrix, ranking_metrics
from trainer.model.matrices import load_matrices
from trainer.model.model_artifact import load_model
from trainer.storage import artifacts, layout

PROJECT, DATASET = "bench-project", "bench"
RUN_DATE = dt.date(2026, 11, 29)
PORTS = (9152, 9162, 9127)  # apart from the other benches' emulators
TARGET_RATIO = 3.0  # the search's seconds at most this many times today's train step
MODES = ("off", "always")
LABELS = {"off": "default", "always": "tuned"}


def run_logged(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run a command, its output to ``log``; (wall seconds, peak RSS MiB of that process alone)."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[2:4])} failed (log {log}):\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def step_record(store: artifacts.ArtifactStore, artifacts_uri: str, step: str) -> dict:
    """The status record the step left for the run date (its seconds and phases)."""
    return store.read_json(contract.status_record_uri(artifacts_uri, RUN_DATE.isoformat(), step))


def per_user(picks: np.ndarray, relevant: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """ndcg@k and recall@k of each user (every row has relevant items): ranking_metrics' own
    definitions, before its mean."""
    hits = hits_matrix(picks[:, :k], relevant)
    n_rel = relevant.getnnz(axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(1, k + 1) + 1)
    ideal = np.cumsum(discounts)[np.minimum(k, n_rel).astype(int) - 1]
    return {"ndcg": (hits * discounts).sum(axis=1) / ideal, "recall": hits.sum(axis=1) / n_rel}


def paired_bootstrap(tuned: np.ndarray, default: np.ndarray, resamples: int, seed: int,
                     chunk: int = 50) -> tuple[float, float]:
    """95 % percentile interval of (mean(tuned) - mean(default)) / mean(default) over users
    resampled with replacement, the same users for both in each resample."""
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        rows = rng.integers(0, tuned.size, size=(min(chunk, resamples - start), tuned.size))
        t, d = tuned[rows].mean(axis=1), default[rows].mean(axis=1)
        out[start:start + len(rows)] = (t - d) / np.where(d > 0, d, np.nan)
    low, high = np.nanpercentile(out, [2.5, 97.5])
    return float(low), float(high)


def verdict(tuned: float, default: float, low: float, high: float) -> tuple[str, bool]:
    """What the interval says, and whether the default won (higher, or no significant difference)."""
    if low <= 0 <= high:
        return "no significant difference", True
    return ("tuned better" if low > 0 else "default better"), default > tuned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 10_000_000)))
    parser.add_argument("--users", type=int, default=int(os.environ.get("BENCH_USERS", 200_000)))
    parser.add_argument("--items", type=int, default=int(os.environ.get("BENCH_ITEMS", 50_000)))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=15, help="train_task's (its default)")
    parser.add_argument("--seed", type=int, default=42, help="train_task's --random-seed and the bootstrap's")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the users")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file to add 'tuning' to")
    parser.add_argument("--log-dir", type=Path, help="keep each train and predict step's log here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recsys-bench-tuning-") as tmp, \
            emulators(Path(tmp), PORTS) as env:
        os.environ.update(env)
        log_dir = args.log_dir or Path(tmp) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        uri = str(Path(tmp) / "artifacts")
        store = artifacts.ArtifactStore(PROJECT)
        python = [sys.executable, "-m"]
        common = ["--project", PROJECT, "--dataset", DATASET, "--run-date", str(RUN_DATE),
                  "--artifacts-uri", uri]
        window = ["--lookback-days", str(args.days)]
        print(f"\nbench_tuning: {args.events:,} events, {args.users:,} users, {args.items:,} items, "
              f"{args.days} days; train_task --iterations {args.iterations} --random-seed {args.seed}; "
              f"{os.cpu_count()} CPUs", flush=True)
        seed_s, _ = run_measured([*python, "trainer.seed_events", *common[:4], "--end-date", str(RUN_DATE),
                                  "--days", str(args.days), "--events", str(args.events), "--users",
                                  str(args.users), "--items", str(args.items), "--clusters", "20"], env)
        print(f"seed_events (input, not counted): {seed_s:.1f}s", flush=True)
        matrices_s, matrices_rss = run_measured(
            [*python, "trainer.create_cf_matrices_task", *common, *window], env)
        print(f"create_cf_matrices_task (once): {matrices_s:.1f}s, peak RSS {matrices_rss:,.0f} MiB",
              flush=True)

        train: dict[str, dict] = {}
        for mode in MODES:
            wall, rss = run_logged([*python, "trainer.train_task", *common, "--tune", mode, "--iterations",
                                    str(args.iterations), "--random-seed", str(args.seed)], env,
                                   log_dir / f"train_task-tune-{mode}.log")
            record = step_record(store, uri, "train_task")
            model_uri = store.read_json(layout.candidate_record(uri, RUN_DATE))["model_uri"]
            model = load_model(store, model_uri)
            trials = store.read_json(artifacts.join(model_uri, contract.TRIALS_RECORD))
            train[mode] = {"wall_s": wall, "step_s": record["seconds"], "phases": record["profile"]["phases"],
                           "peak_rss_mib": rss, "model_id": model.model_id, "model_uri": model_uri,
                           "fit_s": model.metadata["fit_seconds"], "settings": trials["settings"],
                           "trials": trials}
            print(f"train_task --tune {mode}: {wall:.1f}s ({record['seconds']:.1f}s in the step), peak RSS "
                  f"{rss:,.0f} MiB, model {model.model_id} ({trials['source']}: "
                  f"{', '.join(f'{k}={v}' for k, v in trials['settings'].items())})", flush=True)

        predict: dict[str, dict] = {}
        for mode in MODES:
            wall, rss = run_logged([*python, "trainer.predict_task", *common, *window, "--model-uri",
                                    train[mode]["model_uri"], "--shard", "0", "--n-shards", "1"], env,
                                   log_dir / f"predict_task-{LABELS[mode]}.log")
            record = step_record(store, uri, "predict_task")
            predict[mode] = {"wall_s": wall, "step_s": record["seconds"], "peak_rss_mib": rss,
                             "factors": train[mode]["settings"]["factors"],
                             "score_s": record["profile"]["phases"].get("score"),
                             "rows_out": record["profile"]["counts"].get("rows_out")}

        # Both models on the evaluation holdout, in this process.
        started = time.perf_counter()
        matrices, _ = load_matrices(store, uri, RUN_DATE)
        users = np.flatnonzero(matrices.holdout.getnnz(axis=1) > 0)
        relevant = matrices.holdout[users]
        holdout: dict[str, dict] = {}
        for mode in MODES:
            t = time.perf_counter()
            picks = model_picks(load_model(store, train[mode]["model_uri"]), matrices, users, args.k)
            seconds = time.perf_counter() - t
            figures = ranking_metrics(picks, relevant, args.k)
            each = per_user(picks, relevant, args.k)
            for metric, values in each.items():
                if not np.isclose(values.mean(), figures[metric]):
                    raise SystemExit(f"per-user {metric} {values.mean()} differs from ranking_metrics' "
                                     f"{figures[metric]}")
            holdout[mode] = {"ndcg": figures["ndcg"], "recall": figures["recall"], "users": figures["users"],
                             "picks_s": seconds, "per_user": each}
        comparison = {}
        for metric in ("ndcg", "recall"):
            tuned, default = holdout["always"][metric], holdout["off"][metric]
            low, high = paired_bootstrap(holdout["always"]["per_user"][metric],
                                         holdout["off"]["per_user"][metric], args.resamples, args.seed)
            said, default_won = verdict(tuned, default, low, high)
            comparison[metric] = {"relative": (tuned - default) / default if default else None,
                                  "ci95": [low, high], "verdict": said, "default_won": default_won}
        evaluation_s = time.perf_counter() - started

    off, tuned = train["off"], train["always"]
    trials = tuned["trials"]
    search_s = float(trials["search_seconds"])
    ratio = search_s / off["step_s"]
    refit_s, step_minus_search = tuned["fit_s"], tuned["step_s"] - search_s

    print(f"\n{'':<44}{'default (tune off)':>20}{'tuned (tune always)':>21}")
    for label, key in (("train step wall s", "wall_s"), ("train step s (in the step)", "step_s"),
                       ("train peak RSS MiB", "peak_rss_mib")):
        print(f"{label:<44}{off[key]:>20,.1f}{tuned[key]:>21,.1f}")
    print(f"{'fit phase s (search + refit when tuned)':<44}{off['phases'].get('fit', 0):>20.1f}"
          f"{tuned['phases'].get('fit', 0):>21.1f}")
    print(f"{'ALS fit of the saved model s (model.json)':<44}{off['fit_s']:>20.1f}{refit_s:>21.1f}")
    print(f"{'predict_task s (1 shard, staged)':<44}{predict['off']['step_s']:>20.1f}"
          f"{predict['always']['step_s']:>21.1f}")
    print(f"{'predict scoring s':<44}{predict['off']['score_s']:>20.1f}{predict['always']['score_s']:>21.1f}")
    print(f"{'factors':<44}{predict['off']['factors']:>20}{predict['always']['factors']:>21}")

    note = f" ({trials['note']})" if trials.get("note") else ""
    print(f"\nsearch: source={trials['source']}{note}; {search_s:.1f}s (budget "
          f"{trials['budget_s'] if trials['budget_s'] is not None else 'none'}s, rungs {trials['rungs']} "
          f"iterations) = {ratio:.2f} x today's train step of {off['step_s']:.1f}s (target <= "
          f"{TARGET_RATIO:g}); {search_s / off['fit_s']:.2f} x its ALS fit of {off['fit_s']:.1f}s")
    print(f"winner's refit: {refit_s:.1f}s (the ALS fit of the saved model, model.json's fit_seconds); "
          f"the tuned step minus the search: {step_minus_search:.1f}s")
    print(f"predict's scoring: {predict['always']['score_s']:.1f}s at the winner's "
          f"{predict['always']['factors']} factors against {predict['off']['score_s']:.1f}s at "
          f"{predict['off']['factors']} ({predict['always']['rows_out']:,} rows)")
    validation = trials.get("validation") or {}
    if validation:
        print(f"validation: {validation.get('start')}..{validation.get('end')}, {validation.get('users'):,} "
              f"users, {validation.get('nnz'):,} target non-zeros, fit on {validation.get('fit_nnz'):,}")

    k = trials["k"]
    print(f"\n{'trial':>5}{'factors':>8}{'reg':>9}{'alpha':>7}{'weighting':>10}{'status':>12}{'rung':>5}"
          f"{'iters':>6}{f'ndcg@{k}':>9}{f'recall@{k}':>10}{'seconds':>9}  winner / note")
    for t in trials["trials"]:
        ndcg, recall = t.get(f"ndcg_at_{k}"), t.get(f"recall_at_{k}")
        print(f"{t['trial']:>5}{t['factors']:>8}{t['regularization']:>9.3g}{t['alpha']:>7.3g}"
              f"{t['weighting']:>10}{t['status']:>12}{t['rung']:>5}{t['iterations']:>6}"
              f"{'' if ndcg is None else f'{ndcg:.4f}':>9}{'' if recall is None else f'{recall:.4f}':>10}"
              f"{t['seconds']:>9.2f}  {'WINNER ' if t['winner'] else ''}{t.get('note') or ''}")

    print(f"\nevaluation holdout: {holdout['off']['users']:,} users with holdout items, the same for both "
          f"(top {args.k}: {holdout['off']['picks_s']:.1f}s default, {holdout['always']['picks_s']:.1f}s "
          f"tuned; {args.resamples} paired bootstrap resamples of the users, seed {args.seed})")
    for metric in ("ndcg", "recall"):
        c = comparison[metric]
        relative = "n/a" if c["relative"] is None else f"{c['relative']:+.2%}"
        print(f"{metric}@{args.k}: tuned {holdout['always'][metric]:.4f}, default "
              f"{holdout['off'][metric]:.4f}; "
              f"(tuned - default) / default {relative}, 95 % interval [{c['ci95'][0]:+.2%}, "
              f"{c['ci95'][1]:+.2%}]: {c['verdict']}; default won: {'yes' if c['default_won'] else 'no'}")

    figures = {
        "events": args.events, "users": args.users, "items": args.items, "days": args.days,
        "iterations": args.iterations, "seed": args.seed, "k": args.k, "cpus": os.cpu_count(),
        "measured": dt.date.today().isoformat(),
        "create_cf_matrices_s": round(matrices_s, 2),
        "train": {LABELS[mode]: {
            "wall_s": round(train[mode]["wall_s"], 2), "step_s": train[mode]["step_s"],
            "fit_s": train[mode]["fit_s"], "peak_rss_mib": round(train[mode]["peak_rss_mib"]),
            "model_id": train[mode]["model_id"], "settings": train[mode]["settings"]} for mode in MODES},
        "search": {"source": trials["source"], "note": trials.get("note"), "seconds": search_s,
                   "budget_s": trials["budget_s"], "rungs": trials["rungs"],
                   "ratio_vs_train_step": round(ratio, 3), "target_ratio": TARGET_RATIO,
                   "refit_s": refit_s, "tuned_step_minus_search_s": round(step_minus_search, 3),
                   "costs": trials["costs"], "validation": trials.get("validation"),
                   "trials": trials["trials"]},
        "predict": {LABELS[mode]: {"step_s": predict[mode]["step_s"], "score_s": predict[mode]["score_s"],
                                   "factors": predict[mode]["factors"],
                                   "peak_rss_mib": round(predict[mode]["peak_rss_mib"])} for mode in MODES},
        "holdout": {"users": holdout["off"]["users"], "resamples": args.resamples,
                    "evaluation_s": round(evaluation_s, 2),
                    **{LABELS[mode]: {"ndcg": round(holdout[mode]["ndcg"], 5),
                                      "recall": round(holdout[mode]["recall"], 5)} for mode in MODES},
                    "relative": {metric: {"value": None if c["relative"] is None else round(c["relative"], 5),
                                          "ci95": [round(v, 5) for v in c["ci95"]], "verdict": c["verdict"],
                                          "default_won": c["default_won"]}
                                 for metric, c in comparison.items()}},
    }
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    results["tuning"] = figures
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.results} (\"tuning\")")
    if ratio > TARGET_RATIO:
        print(f"the search took {ratio:.2f} x today's train step, over the target of {TARGET_RATIO:g} x")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
