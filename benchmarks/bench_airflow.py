"""`make bench`: N synthetic events through recommend_train and recommend_predict (real Airflow,
local runtime, the BigQuery and GCS emulators), against the floor measured in the same run on
the same matrix with the same parameters (benchmarks/floor.py); then the next
day's events and recommend_feedback measuring the served day, its step's cost next to train's.
A benchmark that prints its figures, not a test: no thresholds here.

    .venv/airflow/bin/python benchmarks/bench_airflow.py [--events 10000000] [--n-shards 1]

Environment: BENCH_EVENTS, BENCH_USERS, BENCH_ITEMS override the generator's sizes. The event
seeder is reported on its own line and left out of the total and of peak_rss_gb (it makes the
input; it is not the pipeline). The last line is exactly
``ratio_vs_floor=R peak_rss_gb=G events=N``. ``--json FILE`` also writes every figure.

Before the measured runs a one-task DAG (its own bundle in the temporary home) runs once through
``dag.test()``: the first task of a process starts the in-process execution API and parses the
bundles (about 7-10 s here), which a scheduler and its workers pay when they start, not per run.
Its time is printed on its own line and not counted.

``--shards-at-once`` (with ``--n-shards`` > 1): ``dag.test()`` runs mapped tasks one after another,
where an executor with free slots (LocalExecutor under ``make up``, Celery or Vertex on Composer)
runs predict's shards at once. After the measured runs the bench therefore starts each shard's
trainer step again, all at the same time, with the arguments and environment Airflow rendered
for it (its rendered fields), first with the CPUs split between them (each process's affinity;
the scoring runs one thread per CPU it may use), then sharing every CPU, and prints the wall time
of each batch and each shard's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER_PY = REPO / ".venv" / "trainer" / "bin" / "python"
EMULATORS = REPO / "docker" / "emulators" / "emulators.py"
PROJECT, DATASET, BUCKET = "bench-project", "bench", "recsys-bench"
LOGICAL = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
RUN_DATE = LOGICAL.date() - dt.timedelta(days=1)
PHASES = ("check", "read", "build", "fit", "score", "write")
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
WARM_UP_DAG = """
import datetime as dt

from airflow.sdk import DAG, task

with DAG("bench_warm_up", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
    @task
    def noop() -> None:
        return None

    noop()
"""


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command; (wall seconds, peak RSS MiB of that process alone, its stdout)."""
    return measured_at_once([(argv, env, None)])[0]


def measured_at_once(commands: list[tuple[list[str], dict[str, str], list[int] | None]]
                     ) -> list[tuple[float, float, str]]:
    """Start every (argv, env, CPUs to pin it to or None) at the same time; per command, in order:
    (seconds from the common start until it ended, its own peak RSS MiB, its stdout)."""
    with contextlib.ExitStack() as stack:
        started, by_pid = [], {}
        start = time.perf_counter()
        for i, (argv, env, cpus) in enumerate(commands):
            out, err = (stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
            pin = (lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True, preexec_fn=pin)
            started.append((out, err))
            by_pid[proc.pid] = i
        results: list[tuple[float, float, str]] = [(0.0, 0.0, "")] * len(commands)
        while by_pid:
            pid, status, usage = os.wait4(-1, 0)
            if pid not in by_pid:  # not one of these commands
                continue
            i = by_pid.pop(pid)
            out, err = started[i]
            if os.waitstatus_to_exitcode(status):
                for other in by_pid:
                    os.kill(other, signal.SIGKILL)
                err.seek(0)
                raise SystemExit(f"{' '.join(commands[i][0][:4])} failed:\n{err.read()[-3000:]}")
            out.seek(0)
            results[i] = (time.perf_counter() - start, usage.ru_maxrss / 1024, out.read())
        return results


def start_emulators(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    subprocess.run([sys.executable, str(EMULATORS), "start", "--data-dir", str(data_dir), "--bucket", BUCKET],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([sys.executable, str(EMULATORS), "env"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line)


def task_instances(run) -> list:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return sorted(((ti.task_id, ti.map_index, ti.start_date, ti.end_date, str(ti.state)) for ti in tis),
                      key=lambda t: t[2])


def status_record(dag_id: str, task_id: str, map_index: int, run_date: dt.date) -> dict | None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    name = f"{dag_id}.{task_id}" + (f".{map_index}" if map_index >= 0 else "")
    blob = client.bucket(BUCKET).blob(f"recsys/runs/{run_date}/status/{name}.json")
    return json.loads(blob.download_as_bytes()) if blob.exists() else None


def cpu_shares(n: int) -> list[list[int]]:
    """This process's CPUs split into ``n`` shares; with more shares than CPUs, one CPU each, in turn."""
    cpus = sorted(os.sched_getaffinity(0))
    if n >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(n)]
    size = len(cpus) // n
    return [cpus[i * size:(i + 1) * size] for i in range(n)]


def predict_shards_at_once(dag_id: str, env: dict[str, str], split_cpus: bool) -> dict:
    """Start every predict shard of the last ``dag_id`` run again, all at once, from the fields
    Airflow rendered for each; (wall seconds of the batch, each shard's seconds and peak RSS)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from operators.contract import IMAGE_ENV

    with create_session() as session:
        tis = (session.query(TaskInstance)
               .filter(TaskInstance.dag_id == dag_id, TaskInstance.task_id == "predict",
                       TaskInstance.map_index >= 0)
               .order_by(TaskInstance.map_index).all())
        rendered = [RenderedTaskInstanceFields.get_templated_fields(ti, session=session) for ti in tis]
    shares = cpu_shares(len(rendered)) if split_cpus else [None] * len(rendered)
    start = time.perf_counter()
    ended = measured_at_once([
        ([str(TRAINER_PY), "-m", "trainer.predict_task", *map(str, fields["arguments"])],
         {**env, **fields["environment"], IMAGE_ENV: fields["image"]}, share)
        for fields, share in zip(rendered, shares, strict=True)])
    return {"wall": time.perf_counter() - start,
            "shards": [{"seconds": seconds, "peak_rss_mib": rss, "cpus": share}
                       for (seconds, rss, _), share in zip(ended, shares, strict=True)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 10_000_000)))
    parser.add_argument("--users", type=int, default=int(os.environ.get("BENCH_USERS", 200_000)))
    parser.add_argument("--items", type=int, default=int(os.environ.get("BENCH_ITEMS", 50_000)))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--n-shards", type=int, default=1)
    parser.add_argument("--shards-at-once", action="store_true",
                        help="then run predict's shards again, all at once (see above)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recsys-airflow-bench-") as tmp:
        home = Path(tmp)
        os.environ.update({
            "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",  # the figures, not every task's log
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            # Today's train step, as the floor measures it: the tuned one is bench_tuning.py's.
            "RECSYS_TUNE": "off",
            "RECSYS_RUNTIME": "local", "RECSYS_GCP_PROJECT": PROJECT, "RECSYS_BQ_DATASET": DATASET,
            "RECSYS_ARTIFACTS_URI": f"gs://{BUCKET}/recsys", "RECSYS_TRAINER_PYTHON": str(TRAINER_PY),
            "AIRFLOW_VAR_RECSYS_TRAINER_IMAGE": "recsys-trainer:dev",
            "RECSYS_BQ_EMULATOR_PORT": "9450", "RECSYS_BQ_EMULATOR_GRPC_PORT": "9460",
            "RECSYS_GCS_EMULATOR_PORT": "9425",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
                {"name": name, "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(path)}}
                for name, path in (("dags-folder", REPO / "dags"), ("bench-warm-up", home / "warm_up"))
            ]),
        })
        (home / "warm_up").mkdir()
        (home / "warm_up" / "bench_warm_up.py").write_text(WARM_UP_DAG)
        sys.path[:0] = [str(REPO / "plugins"), str(REPO / "tests" / "dags")]
        os.environ.update(start_emulators(home / "emulators", dict(os.environ)))
        os.environ["RECSYS_GCP_PROJECT"] = PROJECT
        try:
            return run(args, home)
        finally:
            subprocess.run([sys.executable, str(EMULATORS), "stop", "--data-dir", str(home / "emulators")],
                           env=dict(os.environ), check=False, stdout=subprocess.DEVNULL)


def run_dag(bag, dag_id: str, logical: dt.datetime, conf: dict, runs: dict) -> list[dict]:
    """One run through dag.test(); its span goes into ``runs``, a figure row per task back."""
    run = bag.dags[dag_id].test(logical_date=logical, run_conf=conf)
    if str(run.state) != "success":
        raise SystemExit(f"{dag_id} run {run.run_id} ended {run.state}: {task_instances(run)}")
    tis = task_instances(run)
    runs[dag_id] = (tis[0][2], max(t[3] for t in tis))
    rows = []
    for task_id, map_index, start, end, _ in tis:
        record = status_record(dag_id, task_id, map_index, logical.date() - dt.timedelta(days=1))
        rows.append({"dag": dag_id, "task": task_id + (f"[{map_index}]" if map_index >= 0 else ""),
                     "wall": (end - start).total_seconds(), "step": record["seconds"] if record else None,
                     **((record or {}).get("profile") or {})})
    return rows


def run(args: argparse.Namespace, home: Path) -> int:
    env = dict(os.environ)
    print(f"\nbench: {args.events:,} events, {args.users:,} users, {args.items:,} items, {args.days} days; "
          f"ALS factors={args.factors} iterations={args.iterations}; n_shards={args.n_shards}; "
          f"{os.cpu_count()} CPUs", flush=True)
    seed = [str(TRAINER_PY), "-m", "trainer.seed_events", "--project", PROJECT, "--dataset", DATASET,
            "--end-date", str(RUN_DATE), "--days", str(args.days), "--events", str(args.events),
            "--users", str(args.users), "--items", str(args.items), "--clusters", "20",
            "--log-level", "WARNING"]
    seed_s, seed_rss, _ = measured(seed, env)
    print(f"seed_events (input, not counted): {seed_s:.1f}s, peak RSS {seed_rss:,.0f} MiB", flush=True)

    from airflow.utils import db
    from support.dagbag_loader import bundle_dagbag

    db.resetdb()
    started = time.perf_counter()
    warm_up = bundle_dagbag(home / "warm_up").dags["bench_warm_up"].test()
    print(f"dag.test() warm-up, once per process (not counted): {time.perf_counter() - started:.1f}s "
          f"({warm_up.state})", flush=True)
    bag = bundle_dagbag(REPO / "dags")
    conf = {"recommend_train": {"lookback_days": args.days, "factors": args.factors,
                                "iterations": args.iterations},
            "recommend_predict": {"lookback_days": args.days, "n_shards": args.n_shards}}
    rows, runs = [], {}
    for dag_id in ("recommend_train", "recommend_predict"):
        rows += run_dag(bag, dag_id, LOGICAL, conf[dag_id], runs)

    # The day after: its events arrive, and recommend_feedback measures what was served.
    next_day = [*seed[:seed.index("--end-date")], "--end-date", str(RUN_DATE + dt.timedelta(days=1)),
                "--days", "1", "--events", str(args.events // args.days), "--users", str(args.users),
                "--items", str(args.items), "--clusters", "20", "--log-level", "WARNING"]
    measured(next_day, env)
    feedback = run_dag(bag, "recommend_feedback", LOGICAL + dt.timedelta(days=1, minutes=30),
                       {"lookback_days": args.days}, {})

    at_once = {}
    if args.shards_at_once and args.n_shards > 1:
        for name, split in (("split", True), ("shared", False)):
            at_once[name] = predict_shards_at_once("recommend_predict", env, split_cpus=split)

    floor_s, _, out = measured([str(TRAINER_PY), str(REPO / "benchmarks" / "floor.py"),
                                "--project", PROJECT, "--dataset", DATASET, "--run-date", str(RUN_DATE),
                                "--lookback-days", str(args.days), "--factors", str(args.factors),
                                "--iterations", str(args.iterations)], env)
    floor = json.loads(out)

    total = sum((end - start).total_seconds() for start, end in runs.values())
    steps = sum(r["step"] or 0 for r in rows)
    print(f"\n{'task':<32}{'wall s':>8}{'step s':>8}{'RSS MiB':>9}{'rows in':>12}{'rows out':>12}  "
          + "  ".join(f"{p:>6}" for p in PHASES))
    for r in rows + feedback:
        phases = r.get("phases") or {}
        counts = r.get("counts") or {}
        print(f"{r['task']:<32}{r['wall']:>8.1f}{(r['step'] or 0):>8.1f}{r.get('peak_rss_mib', 0):>9,.0f}"
              f"{counts.get('rows_in', 0):>12,}{counts.get('rows_out', 0):>12,}  "
              + "  ".join(f"{phases.get(p, 0):>6.1f}" for p in PHASES))
    print(f"\nAirflow overhead (runs' wall time not spent inside a trainer step): {total - steps:.1f}s")
    for dag_id, (start, end) in runs.items():
        print(f"{dag_id} run: {(end - start).total_seconds():.1f}s")
    print(f"total (both runs): {total:.1f}s")
    s = floor["seconds"]
    print(f"floor: {floor['floor']:.1f}s = data {floor['data_floor']:.1f}s (query + Arrow read "
          f"{s['query_and_read']:.1f}, Parquet load {s['parquet_load']:.1f}) + compute "
          f"{floor['compute_floor']:.1f}s (CSR {s['csr']:.1f}, fit {s['fit']:.1f}, recommend "
          f"{s['recommend']:.1f}) on {floor['interactions']:,} interactions, {floor['users']:,} users x "
          f"{floor['items']:,} items; measured in {floor_s:.1f}s")
    d = floor["deduplication"]
    print(f"de-duplication by event_id: aggregation + read {d['query_and_read_s']:.2f}s against "
          f"{d['without_s']:.2f}s without (+{d['extra_s']:.2f}s, in the pipeline, not in the floor); "
          f"a real BigQuery would bill {d['billed_bytes_extra']:,} more bytes for the event_id column "
          f"(+{d['billed_extra_fraction']:.1%} of {d['billed_bytes_without']:,})")
    [train] = [r for r in rows if r["task"] == "train"]
    [measure] = [r for r in feedback if r["task"] == "feedback"]
    print(f"feedback step (not in the total): {measure['step']:.1f}s = {measure['step'] / train['step']:.0%} "
          f"of train's {train['step']:.1f}s")
    for name, batch in at_once.items():
        cpus = "each on its own CPUs" if name == "split" else "sharing every CPU"
        each = ", ".join(f"{s['seconds']:.1f}s {s['peak_rss_mib']:,.0f} MiB" for s in batch["shards"])
        print(f"predict's {args.n_shards} shards at once, {cpus}: {batch['wall']:.1f}s ({each})")
    # Every read of events scans the window's checked columns in every partition (BigQuery bills
    # those whatever rows a WHERE keeps); the floor computed one scan's bytes (the emulator bills 0).
    scan_bytes = d["billed_bytes_without"] + d["billed_bytes_extra"]
    predict_scans = sum((r.get("counts") or {}).get("event_scans", 0) for r in rows
                        if r["dag"] == "recommend_predict")
    predict_bytes = {"event_scans": predict_scans, "scan_bytes": scan_bytes,
                     "billed_bytes": predict_scans * scan_bytes}
    print(f"predict's reads of events with n_shards={args.n_shards}: {predict_scans} scan(s) of the "
          f"window, {predict_scans * scan_bytes:,} bytes a real BigQuery would bill "
          f"({scan_bytes:,} per scan)")
    peak_gb = max(r.get("peak_rss_mib", 0) for r in rows) / 1024
    ratio = total / floor["floor"]
    if args.json:
        figures = {"args": vars(args), "seed": {"seconds": seed_s, "rss_mib": seed_rss}, "tasks": rows,
                   "feedback": feedback,
                   "runs": {k: (end - start).total_seconds() for k, (start, end) in runs.items()},
                   "total": total, "floor": floor, "ratio": ratio, "shards_at_once": at_once,
                   "predict_bytes": predict_bytes}
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    print(f"ratio_vs_floor={ratio:.2f} peak_rss_gb={peak_gb:.2f} events={args.events}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
