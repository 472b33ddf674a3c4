"""A local trainer step never outlives its task process, however a worker dies (operators/lifeline.py).

The processes are real: the trainer runs as the local runtime runs it (its own session, its own
virtualenv), held mid-step by a BigQuery endpoint that answers 503 to everything (it retries for
minutes). What stands in for Airflow is the process tree around it (tests/dags/support/process_tree.py:
a supervisor that forks the task process and owns its log channel, the task's SIGTERM handler
calling ``on_kill``, logging that raises once the supervisor is gone). The same faults with a
real scheduler and worker: tests/local/test_browser.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO
from support.process_tree import SUPERVISOR, TASK_PRELUDE

TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
GONE_WITHIN_S = 30  # a parent-death signal is immediate; on_kill's SIGTERM is answered at once

TASK = TASK_PRELUDE + textwrap.dedent("""
    from pathlib import Path
    sys.path.insert(0, {plugins!r})
    from operators.image_pinning import local_fingerprint
    from operators.trainer_step import TrainerStepOperator

    op = TrainerStepOperator(
        task_id="create_cf_matrices", step="create_cf_matrices_task", runtime="local",
        arguments=["--project", "p", "--artifacts-uri", {artifacts!r}, "--run-date", "2026-11-29"],
        launch={{"python": {python!r}, "trainer_source": {source!r}}}, environment={{}},
        run_date="2026-11-29", artifacts_uri={artifacts!r}, allowlist=("recsys-trainer:",),
        image=local_fingerprint("recsys-trainer:dev", Path({source!r})))
    run(op)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has stopped; only its parent's wait is missing


def _trainer_pids(marker: str) -> list[int]:
    """Trainer processes whose command line carries this test's artifacts path."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and b"trainer.create_cf_matrices_task" in cmdline and \
                marker.encode() in cmdline:
            found.append(int(proc.name))
    return [pid for pid in found if _alive(pid)]


def _start(script: str, unavailable_bigquery: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Start the process tree; return it once the trainer step has started (and so tied itself
    to its launcher), with the trainer's pid."""
    env = {**os.environ, "BIGQUERY_EMULATOR_HOST": unavailable_bigquery, "RECSYS_BQ_RETRY_DEADLINE_S": "600",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:  # the step's own log, streamed by the operator
        lines.append(line)
        if "step create_cf_matrices_task starting" in line:
            break
    else:
        pytest.fail(f"the step never started: {''.join(lines)[-3000:]}")
    [trainer] = _trainer_pids(str(tmp_path))
    return proc, trainer


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _described(pids: list[int]) -> str:
    """What each process is doing (state, kernel wait channel, signals pending, blocked, caught),
    for a failure message: a process that outlived its supervisor says why."""
    out = []
    for pid in pids:
        try:
            status = dict(line.split(":\t", 1) for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
            wchan = Path(f"/proc/{pid}/wchan").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120].decode()
        except OSError:
            continue
        out.append(f"{pid} {status.get('State')} ppid={status.get('PPid')} wchan={wchan} "
                   f"SigPnd={status.get('ShdPnd')} SigBlk={status.get('SigBlk')} "
                   f"SigCgt={status.get('SigCgt')} threads={status.get('Threads')} {cmdline!r}")
    return "; ".join(out)


def _script(tmp_path: Path, python: str = TRAINER_PY) -> str:
    return TASK.format(plugins=str(REPO / "plugins"), artifacts=str(tmp_path / "artifacts"),
                       python=python, source=str(REPO / "recommend_task"))


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except FileNotFoundError:
        return ""


def test_a_killed_task_process_takes_its_trainer_with_it(unavailable_bigquery, tmp_path):
    """SIGKILL the task process (no handler runs): the trainer, in its own session, dies by the
    parent-death signal it asked for, instead of retrying BigQuery for ten minutes."""
    task, trainer = _start(_script(tmp_path), unavailable_bigquery, tmp_path)
    try:
        os.kill(task.pid, signal.SIGKILL)
        task.wait(timeout=GONE_WITHIN_S)
        alive = _wait_gone([trainer])
        assert alive == [], f"the trainer outlived its killed task process: {_described(alive)}"
    finally:
        for pid in [task.pid, *_trainer_pids(str(tmp_path))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_supervisor_gets_its_task_process_to_kill_the_trainer(unavailable_bigquery, tmp_path):
    """SIGKILL the supervisor: the task process gets SIGTERM (operators/lifeline.py), Airflow's
    handler calls on_kill, which kills the trainer's process group; then the task process ends."""
    supervisor, trainer = _start(SUPERVISOR.format(task=_script(tmp_path)), unavailable_bigquery, tmp_path)
    task = int(Path(f"/proc/{trainer}/stat").read_text().rsplit(") ", 1)[1].split()[1])  # its parent
    assert task != supervisor.pid and _alive(task)
    try:
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=GONE_WITHIN_S)
        alive = _wait_gone([trainer, task])
        assert alive == [], f"the trainer or its task process outlived the supervisor: {_described(alive)}"
    finally:
        for pid in [supervisor.pid, task, *_trainer_pids(str(tmp_path))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_kill_while_the_task_log_is_backed_up_still_stops_the_trainer(tmp_path):
    """SIGTERM the task process while it is blocked writing a trainer line into a full log pipe,
    holding its log writer's lock (Airflow 3.3's structlog writer uses a plain lock): on_kill,
    run from inside that write, must kill the trainer without logging, or it waits on that lock
    forever. Once the log drains, the task ends saying it killed the step. The "trainer" here is
    a script standing in for the interpreter, writing lines as fast as the pipe takes them."""
    flood = tmp_path / "python"
    flood.write_text("#!/bin/sh\necho 'step create_cf_matrices_task starting'\n"
                     "while :; do echo 'trainer output line that fills the log pipe'; done\n")
    flood.chmod(0o755)
    task = subprocess.Popen([sys.executable, "-c", _script(tmp_path, python=str(flood))],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for line in task.stdout:  # then read nothing more: the pipe to this test fills
            if b"step create_cf_matrices_task starting" in line:
                break
        [trainer] = _trainer_pids(str(tmp_path))
        deadline = time.monotonic() + GONE_WITHIN_S
        while "pipe" not in _wchan(task.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "pipe" in _wchan(task.pid), f"the task never blocked on its log: {_described([task.pid])}"

        os.kill(task.pid, signal.SIGTERM)
        alive = _wait_gone([trainer])
        assert alive == [], f"on_kill did not stop the trainer: {_described([task.pid, *alive])}"
        out, _ = task.communicate(timeout=GONE_WITHIN_S)
        assert task.returncode != 0
        assert b"killed trainer.create_cf_matrices_task" in out, out[-2000:]
    finally:
        for pid in [task.pid, *_trainer_pids(str(tmp_path))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
