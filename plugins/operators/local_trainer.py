"""Run a trainer step as a local subprocess (``RECSYS_RUNTIME=local``).

Own operator because the stock ones don't fit: BashOperator goes through a shell (we pass an
argument list, never a shell string), and ExternalPythonOperator runs a pickled callable, not
``python -m trainer.<step> ARGS``, which is the contract the image has in every runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from operators.image_refs import ImageRef, trainer_fingerprint
from operators.trainer_exit import IMAGE_ENV, TrainerStepFailed, last_error_line, raise_for_exit

KILL_GRACE_S = 10


class LocalTrainerOperator(BaseOperator):
    """``<python> -m trainer.<step> <arguments>``: output streamed into the task log, the exit
    code applied as in every runtime (:mod:`operators.trainer_exit`), the child dies with the
    task. ``image`` is the run's pinned reference: the step refuses to run if the trainer
    sources no longer match its fingerprint (someone changed the checkout mid-run)."""

    template_fields: Sequence[str] = ("arguments", "env", "image")
    ui_color = "#fdf6e3"

    def __init__(self, *, step: str, arguments: Sequence[str], python: str, trainer_source: str,
                 image: str, env: dict[str, str] | None = None, shard: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.shard = step, shard
        self.arguments = list(arguments)
        self.python = python
        self.trainer_source = trainer_source
        self.image = image
        self.env = env or {}
        self._proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [self.python, "-m", f"trainer.{self.step}", *map(str, self.arguments)]

    def _check_pinned_sources(self) -> None:
        pinned = ImageRef.parse(self.image).digest
        current = trainer_fingerprint(Path(self.trainer_source))
        if pinned != current:
            raise TrainerStepFailed(
                f"trainer sources changed since resolve_image pinned {self.image} (now {current}): "
                "clear the whole run to run the new code")

    def execute(self, context: Context) -> None:
        if not os.path.exists(self.python):
            raise AirflowException(f"trainer interpreter {self.python} not found "
                                   "(run `make venvs` or set RECSYS_TRAINER_PYTHON)")
        self._check_pinned_sources()
        self.log.info("running %s (trainer %s)", " ".join(self.command), self.image)
        lines: list[str] = []
        self._proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env, IMAGE_ENV: self.image, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group, so on_kill reaches grandchildren too
            text=True, bufsize=1,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self.log.info("%s", line)
            if line.startswith("ERROR:"):
                lines.append(line)
        code = self._proc.wait()
        if code != 0:
            raise_for_exit(self.step, code, last_error_line(lines))

    def on_kill(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.log.warning("killing trainer.%s (pid %d)", self.step, proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
