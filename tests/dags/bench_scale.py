"""`make bench-scale`: the pipeline benchmark (bench_airflow.py) at 1, 3 and 10 million events,
then predict in 1, 2 and 4 shards at 10 million, one fresh run each. Prints time against events
(seconds per million events should stay flat if growth is linear) and the per-shard times."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = ((1_000_000, 50_000, 10_000), (3_000_000, 100_000, 25_000), (10_000_000, 200_000, 50_000))


def bench(events: int, users: int, items: int, shards: int = 1) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, str(HERE / "bench_airflow.py"), "--events", str(events), "--users",
                        str(users), "--items", str(items), "--n-shards", str(shards), "--json", out.name],
                       check=True)
        return json.loads(Path(out.name).read_text())


def main() -> int:
    results = [bench(*size) for size in SIZES]
    print(f"\n{'events':>12}{'users':>10}{'items':>8}{'total s':>10}{'floor s':>10}{'ratio':>8}"
          f"{'s per M events':>16}")
    for (events, users, items), r in zip(SIZES, results, strict=True):
        print(f"{events:>12,}{users:>10,}{items:>8,}{r['total']:>10.1f}{r['floor']['floor']:>10.1f}"
              f"{r['ratio']:>8.2f}{r['total'] / (events / 1e6):>16.1f}")
    print("\npredict at 10M events by number of shards (shards run one after another on this machine "
          "under dag.test; on Composer each is its own Vertex job)")
    for shards in (1, 2, 4):
        r = results[-1] if shards == 1 else bench(*SIZES[-1], shards=shards)
        parts = [t for t in r["tasks"] if t["task"].startswith("predict[")]
        publish = next(t for t in r["tasks"] if t["task"] == "publish_predictions")
        print(f"{shards} shard(s): " + ", ".join(f"{t['task']} {t['step']:.1f}s" for t in parts)
              + f"; publish {publish['step']:.1f}s; slowest shard {max(t['step'] for t in parts):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
