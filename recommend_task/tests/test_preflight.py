"""A run that cannot finish on its machine is refused before the work starts (trainer/step/preflight.py).

The form keeps only data-independent maxima (factors <= 1024, iterations <= 200, lookback <= 365
days); whether a run fits depends on the data. create_cf_matrices and train estimate their peak
memory and train its fit time from the real counts (the window's events from the partition
metadata, the matrix's nnz from the manifest) and the per-unit costs measured in
docs/benchmarks.md, and refuse permanently (exit 2: no retry) naming the estimate and the limit.
"""

from __future__ import annotations

import json
import os

import pytest
from trainer_support.helpers import RUN_DATE, seed

GB = 10**9
HOUR = 3600


def test_the_issues_maxima_at_100m_events_are_refused_naming_both_figures():
    """factors=1024, iterations=200 over 100M events' matrix (74M nnz, 1M users, 200k items) is
    about 3.7 h on n1-highmem-8, past train's 3 h timeout; 365 days of 100M events a month does
    not fit create_cf_matrices on n1-standard-4 (15 GB). The defaults fit both."""
    from trainer.core.errors import TrainerError
    from trainer.step import preflight

    highmem8 = preflight.Machine(vcpus=8, memory_bytes=52 * GB)
    counts = {"nnz": 74_000_000, "users": 1_000_000, "items": 200_000}
    slow = preflight.train_estimate(**counts, factors=1024, iterations=200)
    assert 3.4 * HOUR < slow.seconds(highmem8) < 4.0 * HOUR
    with pytest.raises(TrainerError) as refused:
        preflight.check("train_task", slow, highmem8, time_budget_s=3 * HOUR)
    message = str(refused.value)
    assert "3.7 h" in message and "3.0 h" in message, message
    assert "\n" not in message
    preflight.check("train_task", preflight.train_estimate(**counts, factors=64, iterations=15),
                    highmem8, time_budget_s=3 * HOUR)

    standard4 = preflight.Machine(vcpus=4, memory_bytes=15 * GB)
    year = preflight.create_cf_estimate(events=100_000_000 * 365 // 30)
    assert year.peak_bytes > 50 * GB
    with pytest.raises(TrainerError, match=r"GB of memory.* 15\.0 GB"):
        preflight.check("create_cf_matrices_task", year, standard4, time_budget_s=None)
    preflight.check("create_cf_matrices_task", preflight.create_cf_estimate(events=100_000_000),
                    standard4, time_budget_s=None)
    # Memory counts too for train: 1024 factors for 100M users do not fit 52 GB however fast.
    huge = preflight.train_estimate(nnz=1_000_000_000, users=100_000_000, items=1_000_000,
                                    factors=1024, iterations=1)
    with pytest.raises(TrainerError, match=r"GB of memory.* 52\.0 GB"):
        preflight.check("train_task", huge, highmem8, time_budget_s=None)


def test_the_machine_is_what_the_step_runs_on():
    """Memory: the container's cgroup limit, else the machine's; vCPUs: the CPUs the process may
    use (a cgroup CPU quota lowers it), the figure implicit's threads use."""
    from trainer.step import preflight

    with open("/proc/meminfo") as meminfo:
        total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    machine = preflight.Machine.detect({})
    assert 0 < machine.memory_bytes <= total
    assert 1 <= machine.vcpus <= len(os.sched_getaffinity(0))
    assert preflight.Machine.detect({"RECSYS_STEP_MEMORY_GIB": "2"}).memory_bytes == 2 * 2**30


def _matrices(step, artifacts: str) -> None:
    seed(step, RUN_DATE)
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE), "--artifacts-uri",
                   artifacts, "--lookback-days", "20")
    assert rc == 0, err


def test_train_refuses_before_fitting_a_run_its_timeout_cannot_hold(step, tmp_path, monkeypatch):
    _matrices(step, str(tmp_path))
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", str(tmp_path), "--num-threads", "1")
    rc, err = step("train_task", *common, "--factors", "1024", "--iterations", "200",
                   "--time-budget-s", "0.001")
    assert rc == 2, err
    error = [line for line in err.splitlines() if line.startswith("ERROR:")][-1]
    assert "train_task would take about" in error and "timeout" in error, error
    assert "ALS iteration" not in err  # refused before fitting
    run = tmp_path / "runs" / str(RUN_DATE)
    assert not (run / "candidate.json").exists() and not (tmp_path / "models").exists()
    status = json.loads((run / "status" / "train_task.json").read_text())
    assert status["exit_code"] == 2, status  # permanent: Airflow does not retry it

    # The launchers pass the task's timeout in the environment (an older image ignores it).
    monkeypatch.setenv("RECSYS_TIME_BUDGET_S", "0.001")
    rc, err = step("train_task", *common, "--factors", "1024", "--iterations", "200")
    assert rc == 2 and "timeout" in err, err
    monkeypatch.setenv("RECSYS_TIME_BUDGET_S", "600")
    rc, err = step("train_task", *common, "--factors", "8", "--iterations", "2")
    assert rc == 0, err
    assert "pre-flight: train_task" in err  # the estimate is logged when the run goes ahead


def test_create_cf_matrices_refuses_before_reading_a_window_its_machine_cannot_hold(
        step, tmp_path, monkeypatch):
    seed(step, RUN_DATE)
    monkeypatch.setenv("RECSYS_STEP_MEMORY_GIB", "0.01")
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE), "--artifacts-uri",
                   str(tmp_path), "--lookback-days", "20")
    assert rc == 2, err
    error = [line for line in err.splitlines() if line.startswith("ERROR:")][-1]
    assert "create_cf_matrices_task needs about" in error and "0.0 GB" in error, error
    assert "events" in error  # the figure it was estimated from
    assert "aggregated" not in err  # refused before the read
    assert not (tmp_path / "runs" / str(RUN_DATE) / "matrices.npz").exists()
