"""Peak memory of the steps that hold ids, with and without one 100,000-character item id.

Seeds ``--events`` synthetic events, runs create_cf_matrices, train and predict with
``--max-id-bytes`` raised above the long id, then appends one event on a training day whose
item id is ``--id-length`` characters long and runs the same steps again: each step's peak RSS
should stay the same (the id maps hold each id in its own length; fixed-width arrays would
give every id the longest one's width). Prints both and the ratio per step (run by `make bench`).

    python benchmarks/bench_long_id.py --events 10000000 --users 1000000 --items 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from bench_pipeline import emulators, run_measured

RUN_DATE = dt.date(2026, 11, 29)
STEPS = ("create_cf_matrices_task", "train_task", "predict_task")


def _append_long_id_event(env: dict[str, str], length: int) -> None:
    """One complete event on a training day, by a seeded user, on an item with a long id."""
    import os

    os.environ.update(env)
    import pyarrow as pa

    from trainer.storage import bq, tables
    from trainer.storage.clients import bigquery_client

    client = bigquery_client("bench-project")
    when = dt.datetime.combine(RUN_DATE - dt.timedelta(days=5), dt.time(12), tzinfo=dt.UTC)
    row = pa.table({"event_id": ["bench-long-id"], "user_id": ["u0000001"], "item_id": ["i" * length],
                    "event_type": ["complete"],
                    "event_timestamp": pa.array([when], pa.timestamp("us", tz="UTC")),
                    "event_date": pa.array([when.date()], pa.date32())})
    bq.load_table(client, row, tables.table_id("bench-project", "bench", tables.EVENTS),
                  list(tables.EVENTS_SPEC.schema), truncate=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--id-length", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp, \
            emulators(Path(tmp), (9151, 9161, 9126)) as env:
        python = [sys.executable, "-m"]
        dataset = ["--project", "bench-project", "--dataset", "bench"]
        run_measured([*python, "trainer.seed_events", *dataset, "--end-date", str(RUN_DATE), "--days",
                      str(args.days), "--events", str(args.events), "--users", str(args.users),
                      "--items", str(args.items), "--clusters", "20"], env)
        peaks: dict[str, dict[str, float]] = {}
        for label in ("without", "with"):
            if label == "with":
                _append_long_id_event(env, args.id_length)
            artifacts = Path(tmp) / f"artifacts-{label}"
            common = [*dataset, "--run-date", str(RUN_DATE), "--artifacts-uri", str(artifacts)]
            window = ["--lookback-days", str(args.days), "--max-id-bytes", str(args.id_length * 2)]
            model = artifacts / "models"
            for step in STEPS:
                extra = {"create_cf_matrices_task": window, "train_task": ["--iterations", "5"],
                         "predict_task": [*window, "--model-uri", ""]}[step]
                if step == "predict_task":
                    extra[-1] = str(next(model.iterdir()))
                _, rss = run_measured([*python, f"trainer.{step}", *common, *extra], env)
                peaks.setdefault(step, {})[label] = rss
        print(f"\npeak RSS with one {args.id_length:,}-character item id ({args.events:,} events, "
              f"{args.users:,} users, {args.items:,} items; --max-id-bytes above it)")
        print(f"{'step':<26}{'without MiB':>12}{'with MiB':>10}{'ratio':>8}")
        for step, figures in peaks.items():
            print(f"{step:<26}{figures['without']:>12,.0f}{figures['with']:>10,.0f}"
                  f"{figures['with'] / figures['without']:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
