"""The docker runtime's container never outlives a dead worker (operators/lifeline.py).

Real: the trainer image, a real step in it (held mid-step by a BigQuery endpoint on loopback that
answers 503 to everything, which it retries for minutes), the Docker engine, and the project's
TrainerStepOperator (docker runtime). Standing in for Airflow: the process tree of
tests/dags/support/process_tree.py (a supervisor that forks the task process and owns its log
channel, the task's SIGTERM handler calling on_kill, logging that raises once the supervisor is
gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from dags_conftest import REPO
from support.process_tree import SUPERVISOR, TASK_PRELUDE

STOPPED_WITHIN_S = 60  # on_kill's `docker stop`: SIGTERM, then SIGKILL after the engine's 10 s
STARTED_WITHIN_S = 180  # the container's first line; the supervisor outlives a crashed task
ARGUMENTS = ["--project", "p", "--artifacts-uri", "/tmp/artifacts", "--run-date", "2026-11-29"]
# An image whose `python` writes lines as fast as the pipe takes them: the step's command is
# always `python -m trainer.<step>`, so the flood replaces the interpreter.
FLOOD = ("USER root\nRUN mkdir /flood && printf '%s\\n' '#!/bin/sh' "
         "'echo \"step create_cf_matrices_task starting\"' "
         "'while :; do echo \"trainer output line that fills the log pipe\"; done' > /flood/python "
         "&& chmod +x /flood/python\nENV PATH=/flood:$PATH\nUSER trainer\n")


TASK = TASK_PRELUDE + textwrap.dedent("""
    sys.path.insert(0, {plugins!r})
    from operators.trainer_step import TrainerStepOperator

    op = TrainerStepOperator(
        task_id="create_cf_matrices", step="create_cf_matrices_task", image={image!r}, runtime="docker",
        arguments={arguments!r}, allowlist=("recsys-trainer:",), run_date="2026-11-29",
        artifacts_uri="/tmp/artifacts",
        environment={{"BIGQUERY_EMULATOR_HOST": {bigquery!r}, "RECSYS_BQ_RETRY_DEADLINE_S": "600"}},
        launch={{"container_name": {name!r}, "docker_url": "unix:///var/run/docker.sock",
                 "network_mode": "host", "auto_remove": "never"}})
    run(op)
""")


def _image_id(image: str) -> str:
    """What resolve_image pins a Docker-runtime step to: the engine's image ID."""
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _container(name: str) -> dict | None:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except FileNotFoundError:
        return ""


def test_a_dead_worker_stops_its_trainer_container(trainer_image, unavailable_bigquery):
    """SIGKILL the supervisor while the step runs in its container: the task process gets
    SIGTERM, on_kill stops the container, and the task process ends. Without the lifeline the
    container would retry BigQuery for ten minutes beside the task's retry."""
    name = f"recsys-lifeline-test-{os.getpid()}"
    task = TASK.format(plugins=str(REPO / "plugins"), image=_image_id(trainer_image),
                       bigquery=unavailable_bigquery, name=name, arguments=ARGUMENTS)
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR.format(task=task)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
    try:
        # The container's log, streamed by the operator. Read by a thread, so that a task that
        # crashed before starting it (the supervisor keeps its stdout open) fails the test.
        lines, stream = [], queue.Queue()
        threading.Thread(target=lambda: [stream.put(line) for line in supervisor.stdout], daemon=True).start()
        deadline = time.monotonic() + STARTED_WITHIN_S
        while not (lines and "step create_cf_matrices_task starting" in lines[-1]):
            try:
                lines.append(stream.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                raise AssertionError(f"the step did not start within {STARTED_WITHIN_S}s: "
                                     f"{''.join(lines)[-3000:]}") from None
        assert _container(name)["State"]["Running"]
        task_pids = [int(p) for p in subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True,
                                                    text=True).stdout.split()]
        assert len(task_pids) == 1, task_pids

        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=30)
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while (_container(name)["State"]["Running"] or _alive(task_pids[0])) and time.monotonic() < deadline:
            time.sleep(0.5)
        state = _container(name)["State"]
        assert not state["Running"], f"the container outlived the dead worker: {state}"
        assert not _alive(task_pids[0]), "the task process outlived its supervisor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(supervisor.pid, signal.SIGKILL)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_a_kill_while_the_task_log_is_backed_up_stops_the_container_and_the_task_ends(
        trainer_image, unavailable_bigquery):
    """SIGTERM the task process while it is blocked writing a container line into a full log
    pipe, holding its log writer's lock (Airflow 3.3's structlog writer uses a plain lock): on_kill,
    run from inside that write, stops the container without logging (the stock one logs first and
    would wait on that lock forever); once the log drains, the task process ends. The container
    runs the trainer image with a shell writing lines as fast as the pipe takes them."""
    name = f"recsys-lifeline-flood-{os.getpid()}"
    flood_tag = f"recsys-trainer:flood-{os.getpid()}"  # allowed, as resolve_image would have pinned it
    subprocess.run(["docker", "build", "-q", "--network", "none", "-t", flood_tag, "-"],
                   input=f"FROM {trainer_image}\n{FLOOD}", capture_output=True, text=True, check=True)
    task = subprocess.Popen([sys.executable, "-c", TASK.format(
        plugins=str(REPO / "plugins"), image=_image_id(flood_tag), bigquery=unavailable_bigquery,
        name=name, arguments=ARGUMENTS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        for line in task.stdout:  # then read nothing more: the pipe to this test fills
            if b"step create_cf_matrices_task starting" in line:
                break
        deadline = time.monotonic() + STARTED_WITHIN_S
        while "pipe" not in _wchan(task.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "pipe" in _wchan(task.pid), f"the task never blocked on its log ({_wchan(task.pid)})"

        os.kill(task.pid, signal.SIGTERM)
        # Drained from now on, as a live supervisor would: the engine's own stream to the task
        # holds up the container's exit (and `docker inspect`) while nobody reads it.
        try:
            task.communicate(timeout=STOPPED_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the task process hung in on_kill ({_wchan(task.pid)})") from None
        assert not _container(name)["State"]["Running"], "on_kill did not stop the container"
        assert task.returncode != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task.pid, signal.SIGKILL)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", flood_tag], capture_output=True)
