"""trainer.step.lifeline: a step started by a launcher that is already gone does not start.

(That a step dies with a launcher that dies later is shown with the real launcher, in
tests/dags/test_lifeline.py.)"""

from __future__ import annotations

import os
import subprocess
import sys


def _step(env_pid: str | None, wrapper: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_LAUNCHER_PID"}
    if env_pid is not None:
        env["RECSYS_LAUNCHER_PID"] = env_pid
    code = ("from trainer.step.lifeline import die_with_launcher; "
            "print('tied' if die_with_launcher() else 'untied')")
    argv = [sys.executable, "-c", code]
    if wrapper:  # a shell between launcher and step that does not exec: the step is its child
        argv = ["sh", "-c", '"$0" "$@"; exit $?', *argv]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_a_step_tied_to_its_live_launcher_runs_and_one_without_a_launcher_is_untouched():
    assert _step(str(os.getpid())).stdout.strip() == "tied"  # this process launched it
    assert _step(None).stdout.strip() == "untied"
    assert _step(str(os.getpid()), wrapper=True).stdout.strip() == "tied"  # its launcher is an ancestor


def test_a_step_whose_launcher_is_already_gone_exits_naming_it():
    gone = _step("1")  # not its parent: as if the launcher had died and it was re-parented
    assert gone.returncode != 0 and gone.stdout == ""
    assert f"launcher 1 is gone (parent now {os.getpid()}): not starting" in gone.stderr
