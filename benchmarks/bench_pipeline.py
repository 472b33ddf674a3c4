"""Speed and memory of each trainer step on synthetic data (run by `make bench`).

Starts its own emulators, seeds ``--events`` events, then runs every step as its own process
(as in production) and prints wall time and peak resident memory per step. Figures only: no
pass/fail thresholds here, targets are read off this table. The figures are also written to
``benchmarks/results.json``: the DAGs' time budgets are checked against them (every step's
``execution_timeout`` at least 3 times its time here; tests/dags/test_dag_integrity.py), so
commit the file after a run at the scale you budget for.

    python benchmarks/bench_pipeline.py --events 1000000 --users 50000 --items 3000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMULATORS = REPO / "docker" / "emulators" / "emulators.py"
RESULTS = Path(__file__).resolve().parent / "results.json"


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MiB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[2:4])} failed:\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


@contextlib.contextmanager
def emulators(tmp: Path, ports: tuple[int, int, int] = (9150, 9160, 9125)) -> Iterator[dict[str, str]]:
    """Emulators of their own under ``tmp`` (BigQuery REST, gRPC and GCS ports); yields the
    environment a step needs to reach them."""
    data_dir = tmp / "emulators"
    env = {**os.environ, "RECSYS_BQ_EMULATOR_PORT": str(ports[0]),
           "RECSYS_BQ_EMULATOR_GRPC_PORT": str(ports[1]), "RECSYS_GCS_EMULATOR_PORT": str(ports[2]),
           "RECSYS_GCP_PROJECT": "bench-project"}
    subprocess.run([sys.executable, str(EMULATORS), "start", "--data-dir", str(data_dir)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        out = subprocess.run([sys.executable, str(EMULATORS), "env"], env=env, check=True,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        yield env
    finally:
        subprocess.run([sys.executable, str(EMULATORS), "stop", "--data-dir", str(data_dir)],
                       env=env, check=False, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=3_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp, emulators(Path(tmp)) as env:
        artifacts = Path(tmp) / "artifacts"
        run_date, next_day = "2026-11-29", "2026-11-30"
        common = ["--project", "bench-project", "--dataset", "bench", "--run-date", run_date,
                  "--artifacts-uri", str(artifacts), "--lookback-days", str(args.days)]
        seed = ["--project", "bench-project", "--dataset", "bench", "--users", str(args.users),
                "--items", str(args.items), "--clusters", "20"]
        # (label, step, arguments); the next day's events are what feedback_task measures.
        steps = [
            ("seed_events", "seed_events", [*seed, "--end-date", run_date, "--days", str(args.days),
                                            "--events", str(args.events)]),
            ("create_cf_matrices_task", "create_cf_matrices_task", common),
            ("train_task", "train_task", [*common[:-2], "--factors", str(args.factors),
                                          "--iterations", str(args.iterations), "--tune", "off"]),
            ("evaluate_task", "evaluate_task", common[:-2]),
            ("promote_model_task", "promote_model_task", common[:-2]),
            ("predict_window_task", "predict_window_task", common),
            ("predict_task", "predict_task", [*common, "--shard", "0", "--n-shards", "1"]),
            ("publish_predictions_task", "publish_predictions_task", [*common[:-2], "--n-shards", "1"]),
            ("seed_events (next day)", "seed_events", [*seed, "--end-date", next_day, "--days", "1",
                                                       "--events", str(args.events // args.days)]),
            ("feedback_task", "feedback_task", [*common[:4], "--run-date", next_day, *common[6:]]),
        ]
        print(f"\nbenchmark: {args.events:,} events, {args.users:,} users, {args.items:,} items, "
              f"{args.days} days, ALS factors={args.factors} iterations={args.iterations}, "
              f"{os.cpu_count()} CPUs")
        print(f"{'step':<26}{'seconds':>10}{'peak RSS MiB':>15}{'events/s':>14}")
        total = 0.0
        figures = {}
        for label, name, argv in steps:
            seconds, rss = run_measured([sys.executable, "-m", f"trainer.{name}", *argv], env)
            total += seconds
            figures[label] = {"seconds": round(seconds, 2), "peak_rss_mib": round(rss)}
            rate = f"{args.events / seconds:,.0f}" if label in ("seed_events", "create_cf_matrices_task",
                                                                 "predict_task") else ""
            print(f"{label:<26}{seconds:>10.2f}{rss:>15.0f}{rate:>14}", flush=True)
        print(f"{'total':<26}{total:>10.2f}")
        RESULTS.write_text(json.dumps({
            "events": args.events, "users": args.users, "items": args.items, "days": args.days,
            "factors": args.factors, "iterations": args.iterations, "cpus": os.cpu_count(),
            "steps": figures}, indent=2) + "\n")
        print(f"figures written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
