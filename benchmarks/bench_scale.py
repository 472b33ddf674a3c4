"""`make bench-scale`: the pipeline benchmark (bench_airflow.py) at 1, 3, 10 and 100 million
events, then predict in 1, 2 and 4 shards at 10 million, one fresh run each. Prints time against
events (seconds per million events should stay flat if growth is linear), every size's peak RSS
per step, and each shard's time and peak RSS; for 2 and 4 shards also predict with its shard
steps started all at once (bench_airflow.py ``--shards-at-once``) against the 1-shard predict.

    .venv/airflow/bin/python benchmarks/bench_scale.py [--max-events 10000000]

``--max-events`` leaves out the larger sizes (the 100M point takes about 25 minutes of the run's
hour on 2 cores and needs about 10 GB of free memory for the emulator and a step side by side)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = ((1_000_000, 50_000, 10_000), (3_000_000, 100_000, 25_000), (10_000_000, 200_000, 50_000),
         (100_000_000, 1_000_000, 200_000))
SHARDS_AT = SIZES[2]


def bench(events: int, users: int, items: int, shards: int = 1) -> dict:
    at_once = ["--shards-at-once"] if shards > 1 else []
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, str(HERE / "bench_airflow.py"), "--events", str(events), "--users",
                        str(users), "--items", str(items), "--n-shards", str(shards), *at_once,
                        "--json", out.name], check=True)
        return json.loads(Path(out.name).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-events", type=int, default=SIZES[-1][0])
    args = parser.parse_args()
    sizes = [size for size in SIZES if size[0] <= args.max_events]
    results = [bench(*size) for size in sizes]
    print(f"\n{'events':>12}{'users':>10}{'items':>8}{'total s':>10}{'floor s':>10}{'ratio':>8}"
          f"{'s per M events':>16}{'peak RSS GB':>13}  largest step")
    for (events, users, items), r in zip(sizes, results, strict=True):
        largest = max(r["tasks"], key=lambda t: t.get("peak_rss_mib", 0))
        print(f"{events:>12,}{users:>10,}{items:>8,}{r['total']:>10.1f}{r['floor']['floor']:>10.1f}"
              f"{r['ratio']:>8.2f}{r['total'] / (events / 1e6):>16.1f}"
              f"{largest.get('peak_rss_mib', 0) / 1024:>13.2f}  {largest['task']}")
    by_events = {size[0]: r for size, r in zip(sizes, results, strict=True)}
    if 10_000_000 in by_events and 100_000_000 in by_events:
        growth = by_events[100_000_000]["total"] / by_events[10_000_000]["total"]
        print(f"total(100M) / total(10M) = {growth:.2f}")
    if SHARDS_AT not in sizes:
        return 0
    print("\npredict at 10M events by number of shards (dag.test runs them one after another; then the "
          "same shard steps all at once, as an executor with free slots runs them)")
    one_shard = None
    for shards in (1, 2, 4):
        r = by_events[SHARDS_AT[0]] if shards == 1 else bench(*SHARDS_AT, shards=shards)
        parts = [t for t in r["tasks"] if t["task"].startswith("predict[")]
        wall = {t["task"]: t["wall"] for t in r["tasks"]}
        publish = next(t for t in r["tasks"] if t["task"] == "publish_predictions")
        figures = (f"{t['task']} {t['step']:.1f}s {t.get('peak_rss_mib', 0):,.0f} MiB" for t in parts)
        print(f"{shards} shard(s): " + ", ".join(figures)
              + f"; publish {publish['step']:.1f}s; slowest shard {max(t['step'] for t in parts):.1f}s")
        billed = r["predict_bytes"]
        print(f"  predict's reads of events: {billed['event_scans']} scan(s) of the window, "
              f"{billed['billed_bytes']:,} bytes a real BigQuery would bill")
        around = wall["predict_window"] + wall["plan_shards"] + wall["publish_predictions"]
        if shards == 1:
            one_shard = around + sum(t["wall"] for t in parts)
            print(f"  predict (plan + shard + publish, wall): {one_shard:.1f}s")
        for name, batch in (r.get("shards_at_once") or {}).items():
            at_once = around + batch["wall"]
            cpus = "CPUs split between shards" if name == "split" else "every shard on every CPU"
            print(f"  at once, {cpus}: "
                  f"plan + shards + publish {at_once:.1f}s = {at_once / one_shard:.2f} x one shard; shards "
                  + ", ".join(f"{s['seconds']:.1f}s {s['peak_rss_mib']:,.0f} MiB" for s in batch["shards"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
