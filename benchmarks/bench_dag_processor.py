"""Steady-state parse time of each DAG file under a real `airflow dag-processor` (a benchmark,
run by `make bench`; not a test).

Production (Cloud Composer) parses every DAG file again every `min_file_process_interval` in a
fresh child process, so what a file costs there is its parse in that child, over and over. This
starts `airflow dag-processor` on a throwaway home and SQLite DB with this checkout's DAGs in
the chosen runtime (the Vertex API is not called at parse), lets it re-parse each file several
times, and prints the durations it recorded per file (its stats table's "Last Duration": from
the fork of the file's child until the manager collects its result).

Two figures, each file's (``--mode both``, the default):

* all files in one processor, as deployed: two children at a time on the machine's cores, and
  a manager that collects finished children one after the other, writing each one's DAG to the
  DB before it looks at the next; a file that finishes while another file's result is being
  written waits, and the wait is in its figure;
* each file in a processor of its own: the file's own parse, nothing queued before it.

    .venv/airflow/bin/python benchmarks/bench_dag_processor.py [--runtime vertex] [--mode both]

Beside the project's files it parses a control: a one-task DAG that imports only ``airflow.sdk``,
whose figure is what the processor costs per file whatever the file holds (fork, DB writes,
reporting); each file's own cost is what it takes beyond that.

BENCH_PLUGINS_FOLDER=DIR uses another plugins folder (a copy of plugins/ without its
``.airflowignore`` shows what Airflow's plugin loader cost when it imported ``operators/`` into
the processor's parent); KEEP_LOG=FILE keeps the processors' logs.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTROL = "control_one_task.py"
CONTROL_DAG = '''"""Control for the parse benchmark: one task, nothing imported beyond airflow.sdk."""
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="control_one_task", schedule=None, start_date=datetime(2026, 1, 1)):
    EmptyOperator(task_id="only")
'''
# A row of the processor's stats table: "<bundle> <file> [<pid> <current duration>] <# dags>
# <# errors> <last duration> <last run at>". The last duration is the whole child process: fork,
# parse, serialization, sending the result.
ROW = re.compile(r"^\S+\s+(?P<file>\S+\.py)\s+(?:\d+\s+)?(?:[\d.]+s\s+)?\d+\s+\d+\s+"
                 r"(?P<last>[\d.]+)s\s+(?P<at>\S+)", re.M)


def run_processor(files: dict[str, str], runtime: str, seconds: int, interval: int) -> dict[str, list[float]]:
    """Run ``airflow dag-processor`` over ``files`` (name -> source) for ``seconds``; return the
    "Last Duration" of each parse it reported, per file, in seconds."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    with tempfile.TemporaryDirectory(prefix="recsys-parse-bench-") as home:
        dags = Path(home) / "dags"
        dags.mkdir()
        for name, source in files.items():
            (dags / name).write_text(source)
        env = {**os.environ, "AIRFLOW_HOME": home, "RECSYS_RUNTIME": runtime,
               "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
               "AIRFLOW__CORE__PLUGINS_FOLDER": os.environ.get("BENCH_PLUGINS_FOLDER", str(REPO / "plugins")),
               "PYTHONPATH": str(REPO / "plugins"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
               "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(interval),
               # The stats table is where the durations come from: print it at each round of parses.
               "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": str(interval),
               "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
               "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        log_path = Path(home) / "dag-processor.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen([airflow, "dag-processor"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                time.sleep(seconds)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
        text = log_path.read_text()
        if os.environ.get("KEEP_LOG"):
            with open(os.environ["KEEP_LOG"], "a") as kept:
                kept.write(text)
    durations: dict[str, list[float]] = {}
    seen = set()
    for match in ROW.finditer(text):
        if (match.group("file"), match.group("at")) not in seen:  # a parse shows in several reports
            seen.add((match.group("file"), match.group("at")))
            durations.setdefault(match.group("file"), []).append(float(match.group("last")))
    missing = sorted(set(files) - set(durations))
    if missing:
        print(text[-3000:])
        raise SystemExit(f"no parse statistics for {', '.join(missing)} in the dag-processor's log")
    # The first parse also pays the processor's own warm-up; steady state is the rest.
    return {name: values[1:] or values for name, values in durations.items()}


def report(title: str, steady: dict[str, list[float]]) -> None:
    """Print each file's median and worst duration, and its median beyond the control's."""
    print(title)
    control = statistics.median(steady[CONTROL]) * 1000 if CONTROL in steady else None
    for name, values in sorted(steady.items()):
        median, worst = statistics.median(values) * 1000, max(values) * 1000
        beyond = f", {median - control:+5.0f} ms beyond the control" if control and name != CONTROL else ""
        print(f"  {name:24s} median {median:6.0f} ms, max {worst:6.0f} ms "
              f"over {len(values):2d} parses{beyond}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="vertex", choices=["vertex", "docker", "local"])
    parser.add_argument("--mode", default="both", choices=["together", "alone", "both"])
    parser.add_argument("--seconds", type=int, default=90, help="how long the processor runs (together)")
    parser.add_argument("--interval", type=int, default=5, help="min_file_process_interval (together)")
    parser.add_argument("--alone-seconds", type=int, default=40,
                        help="how long each file's own processor runs")
    args = parser.parse_args()
    files = {path.name: path.read_text() for path in sorted((REPO / "dags").glob("*.py"))}
    files[CONTROL] = CONTROL_DAG
    if args.mode in ("together", "both"):
        report(f"dag-processor steady-state parse, runtime {args.runtime}, all files in one processor "
               f"(min_file_process_interval {args.interval}s, {args.seconds}s; a file's figure includes "
               "waiting while the manager writes the other files' results to the DB):",
               run_processor(files, args.runtime, args.seconds, args.interval))
    if args.mode in ("alone", "both"):
        alone = {name: run_processor({name: source}, args.runtime, args.alone_seconds, 2)[name]
                 for name, source in files.items()}
        report(f"dag-processor steady-state parse, runtime {args.runtime}, each file in a processor of its "
               f"own (min_file_process_interval 2s, {args.alone_seconds}s each):", alone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
