"""Start-up time of the processes every run starts (a benchmark, run by `make bench`; not a test).

Each trainer step is a fresh `python -m trainer.<step>` process (in every runtime), and Airflow's
CLI and task processes start fresh interpreters that parse DAG files. What they cost before doing
any work depends on compiled bytecode: environments that set PYTHONDONTWRITEBYTECODE=1 (this
machine, many CI systems and containers) compile every import from source in every process
unless the virtualenv was installed with bytecode, as `make venvs` does. Median of ``--repeat``
runs, printed per command.

With lineage on (an OpenLineage file transport configured; the provider stays disabled without
one) the same parse and plugin load are timed again, and one trainer step (``predict_task
--help`` in the local runtime, through ``airflow dags test``) with lineage off and on: the
provider's listener forks a process per event, START and COMPLETE.

    .venv/airflow/bin/python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER_PY = REPO / ".venv" / "trainer" / "bin" / "python"
TESTS = REPO / "tests" / "dags"


def timed(argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        out.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return out


def plugin_load_seconds(env: dict[str, str], repeat: int) -> list[float]:
    """What Airflow's plugin loader takes in a fresh task process (tests/dags/support/plugin_load.py):
    ``plugins/.airflowignore`` keeps it out of ``operators/``. One interpreter per repeat."""
    out = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, str(TESTS / "support" / "plugin_load.py"),
                               env["AIRFLOW__CORE__PLUGINS_FOLDER"]], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"plugin load probe failed:\n{done.stderr[-2000:]}")
        out.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    return out


STEP_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from operators.trainer_step import TrainerStepOperator

with DAG("bench_lineage_step", schedule=None, start_date=datetime(2026, 1, 1)):
    TrainerStepOperator(task_id="predict", step="predict_task", arguments=["--help"], image=%r,
                        runtime="local", environment={}, run_date="2026-11-29", artifacts_uri=%r,
                        allowlist=["recsys-trainer:"],
                        launch={"python": %r, "trainer_source": %r})
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    airflow = str(Path(sys.executable).with_name("airflow"))
    with tempfile.TemporaryDirectory(prefix="recsys-startup-bench-") as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
               "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
               "PYTHONPATH": str(REPO / "plugins"),
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        step = [str(TRAINER_PY), "-m", "trainer.predict_task", "--help"]
        step_env = {**env, "PYTHONPATH": str(REPO / "recommend_task")}
        cases = [("python -m trainer.predict_task --help", step, step_env)]
        for runtime in ("local", "vertex"):
            cases.append((f"airflow dags list --local ({runtime})", [airflow, "dags", "list", "--local"],
                          {**env, "RECSYS_RUNTIME": runtime}))
        print(f"start-up, median of {args.repeat} fresh processes "
              f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}):")
        for name, argv, case_env in cases:
            seconds = timed(argv, case_env, args.repeat)
            print(f"  {name:42s} {statistics.median(seconds):6.2f} s")
        seconds = plugin_load_seconds({**env, "RECSYS_RUNTIME": "vertex"}, args.repeat)
        print(f"  {'a task: plugin load for its context':42s} {statistics.median(seconds):6.3f} s")

        events = Path(home) / "lineage.jsonl"
        lineage = {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True})}
        print("with lineage on (OpenLineage file transport):")
        seconds = timed([airflow, "dags", "list", "--local"], {**env, **lineage, "RECSYS_RUNTIME": "vertex"},
                        args.repeat)
        print(f"  {'airflow dags list --local (vertex)':42s} {statistics.median(seconds):6.2f} s")
        seconds = plugin_load_seconds({**env, **lineage, "RECSYS_RUNTIME": "vertex"}, args.repeat)
        print(f"  {'a task: plugin load for its context':42s} {statistics.median(seconds):6.3f} s")
        dags = Path(home) / "step-dags"
        dags.mkdir()
        sys.path.insert(0, str(REPO / "plugins"))
        from operators.image_pinning import local_fingerprint  # what resolve_image pins locally

        image = local_fingerprint("recsys-trainer:dev", REPO / "recommend_task")
        # Records on local disk: the figure is the provider's, not a Cloud Storage round trip's.
        dag = STEP_DAG % (image, str(Path(home) / "artifacts"), str(TRAINER_PY), str(REPO / "recommend_task"))
        (dags / "bench_lineage_step.py").write_text(dag)
        step_env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "RECSYS_RUNTIME": "local"}
        test = [airflow, "dags", "test", "bench_lineage_step", "2026-11-30"]
        off = statistics.median(timed(test, step_env, args.repeat))
        on = statistics.median(timed(test, {**step_env, **lineage}, args.repeat))
        emitted = len(events.read_text().splitlines()) if events.exists() else 0
        print(f"  {'a trainer step (dags test), lineage off':42s} {off:6.2f} s")
        print(f"  {'a trainer step (dags test), lineage on':42s} {on:6.2f} s  ({on - off:+.2f} s, "
              f"{emitted} events in {args.repeat} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
