"""Run a trainer step as a local subprocess (``RECSYS_RUNTIME=local``).

Built on the standard provider's ``SubprocessHook`` (an argument list, never a shell; output
streamed into the task log; the child in its own session). What this operator adds: the
trainer's exit-code contract, the pinned-sources check, a kill that escalates to SIGKILL (the
hook only sends SIGTERM), and the step dying with the task even when a worker dies
(operators/lifeline.py). Not BashOperator (a shell string) nor ExternalPythonOperator (a
pickled callable, not ``python -m trainer.<step> ARGS``, the image's contract in every runtime).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from operators.config import PASS_THROUGH_ENV
from operators.image_refs import ImageRef, trainer_fingerprint
from operators.lifeline import LAUNCHER_PID_ENV, task_dies_with_supervisor
from operators.trainer_exit import IMAGE_ENV, TrainerStepFailed, last_error_line, raise_for_exit

if TYPE_CHECKING:
    from airflow.providers.standard.hooks.subprocess import SubprocessHook

KILL_GRACE_S = 10
# What a local step inherits from the worker's environment: the trainer's own settings (every
# RECSYS_* variable) and what a process and Google's clients need. Nothing else: a worker's
# environment holds Airflow's secrets (AIRFLOW_CONN_*, the API server's JWT secret, the metadata
# DB's URL, the Fernet key), and the trainer runs whatever image or code a run was given.
INHERITED_PREFIX = "RECSYS_"
INHERITED_ENV = frozenset({
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    # Google's clients: credentials (a key file, or gcloud's user login under CLOUDSDK_CONFIG),
    # project, and a CA bundle where outbound TLS is re-signed by a local CA.
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    *PASS_THROUGH_ENV,  # the emulators' hosts (config.py)
})


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` a local trainer step may see (:data:`INHERITED_ENV`)."""
    return {k: v for k, v in environ.items() if k in INHERITED_ENV or k.startswith(INHERITED_PREFIX)}


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
        self._hook: SubprocessHook | None = None
        self._killed = False

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
        # Imported here, like the Docker and Vertex launchers: only a running step needs the hook.
        from airflow.providers.standard.hooks.subprocess import SubprocessHook

        self._check_pinned_sources()
        self._hook = SubprocessHook()
        env = {**inherited_env(os.environ), **self.env, IMAGE_ENV: self.image, "PYTHONUNBUFFERED": "1",
               LAUNCHER_PID_ENV: str(os.getpid())}  # the step dies with this process (lifeline.py)
        with task_dies_with_supervisor():
            # The step prints its one-line error last (trainer/cli.py), the one line the hook keeps.
            result = self._hook.run_command(self.command, env=env)
        if self._killed:
            self.log.warning("killed trainer.%s (pid %d)", self.step, self._hook.sub_process.pid)
        if result.exit_code != 0:
            raise_for_exit(self.step, result.exit_code, last_error_line([result.output]))

    def on_kill(self) -> None:
        """Stop the trainer: SIGTERM to its process group, SIGKILL after ``KILL_GRACE_S``.

        Runs in Airflow's SIGTERM handler, on the main thread, which may be interrupted while it
        holds the task log's writer lock (a plain lock): logging here would wait on it forever,
        so nothing here logs (nor the hook's ``send_sigterm``, which logs first) and nothing
        waits without a timeout (the interrupted thread may be inside ``Popen.wait``).
        :meth:`execute` says what happened once the step has ended."""
        proc = self._hook.sub_process if self._hook is not None else None
        if proc is None or proc.poll() is not None:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the child leads its own session's group
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
