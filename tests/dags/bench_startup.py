"""Start-up time of the processes every run starts (a benchmark, run by `make bench`; not a test).

Each trainer step is a fresh `python -m trainer.<step>` process (in every runtime), and Airflow's
CLI and task processes start fresh interpreters that parse DAG files. What they cost before doing
any work depends on compiled bytecode: environments that set PYTHONDONTWRITEBYTECODE=1 (this
machine, many CI systems and containers) compile every import from source in every process
unless the virtualenv was installed with bytecode, as `make venvs` does. Median of ``--repeat``
runs, printed per command.

    .venv/airflow/bin/python tests/dags/bench_startup.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAINER_PY = REPO / ".venv" / "trainer" / "bin" / "python"


def timed(argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        out.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return out


# What a task process does when it builds its template context: Airflow's plugin loader runs
# over the plugins folder (plugins/.airflowignore keeps it out of operators/). Timed inside the
# process, after Airflow's own import.
PLUGIN_LOAD = """
import time
from airflow.sdk.execution_time import task_runner
start = time.perf_counter()
try:
    from airflow.sdk.plugins_manager import integrate_macros_plugins
except ImportError:  # Airflow 3.1
    from airflow.plugins_manager import integrate_macros_plugins
integrate_macros_plugins()
print(time.perf_counter() - start)
"""


def probed(code: str, env: dict[str, str], repeat: int) -> list[float]:
    """Seconds that ``code`` prints on its last line, one fresh interpreter per repeat."""
    out = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"probe failed:\n{done.stderr[-2000:]}")
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


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
        seconds = probed(PLUGIN_LOAD, {**env, "RECSYS_RUNTIME": "vertex"}, args.repeat)
        print(f"  {'a task: plugin load for its context':42s} {statistics.median(seconds):6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
