"""``local`` runtime: the step as a subprocess of the trainer's own virtualenv (no Docker, no cloud).

Through the standard provider's ``SubprocessHook`` (an argument list, never a shell; output
streamed into the task log; the child in its own session). What this adds: the trainer's
exit-code contract, the pinned-sources check, a kill that escalates to SIGKILL (the hook only
sends SIGTERM), and the step dying with the task even when a worker dies (operators/lifeline.py).
Not BashOperator (a shell string) nor ExternalPythonOperator (a pickled callable, not
``python -m trainer.<step> ARGS``, the image's contract in every runtime).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException

from operators import contract
from operators.config import PASS_THROUGH_ENV
from operators.image_pinning import check_pinned
from operators.image_references import ImageRef, trainer_fingerprint
from operators.launchers.base import Launcher
from operators.lifeline import task_dies_with_supervisor
from operators.trainer_exit import TrainerStepFailed, last_error_line, raise_for_exit

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


class LocalLauncher(Launcher):
    """``<python> -m trainer.<step> ARGS`` in the trainer sources' folder. The run's image is
    ``<tag>@sha256:<fingerprint of the sources>``: the step refuses to run if the sources no
    longer match it (someone changed the checkout mid-run)."""

    runtime = "local"

    def __init__(self, operator: Any) -> None:
        super().__init__(operator)
        self.python = operator.launch["python"]
        self.trainer_source = operator.launch["trainer_source"]
        self.hook: Any = None
        self.killed = False

    def check_image(self, image: str) -> str:
        check_pinned(image, self.operator.allowlist)
        current = trainer_fingerprint(Path(self.trainer_source))
        if ImageRef.parse(image).digest != current:
            raise TrainerStepFailed(
                f"trainer sources changed since resolve_image pinned {image} (now {current}): "
                "clear the whole run to run the new code")
        return image

    def launch(self, context: Any) -> None:
        if not os.path.exists(self.python):
            raise AirflowException(f"trainer interpreter {self.python} not found "
                                   "(run `make venvs` or set RECSYS_TRAINER_PYTHON)")
        from airflow.providers.standard.hooks.subprocess import SubprocessHook

        op = self.operator
        self.hook = SubprocessHook()
        env = {**inherited_env(os.environ), **op.environment, contract.IMAGE_ENV: op.image,
               "PYTHONUNBUFFERED": "1",
               contract.LAUNCHER_PID_ENV: str(os.getpid())}  # the step dies with this process
        command = [self.python, *op.command[1:]]
        with task_dies_with_supervisor():
            # The step prints its one-line error last (trainer/step/cli.py), the one line the hook
            # keeps. Run in the sources' folder: `-m` imports the trainer that was fingerprinted.
            result = self.hook.run_command(command, env=env, cwd=self.trainer_source)
        if self.killed:
            self.log.warning("killed trainer.%s (pid %d)", op.step, self.hook.sub_process.pid)
        if result.exit_code != 0:
            raise_for_exit(op.step, result.exit_code, last_error_line([result.output]))

    def kill(self) -> None:
        """SIGTERM to the step's process group, SIGKILL after ``KILL_GRACE_S``. Nothing here logs
        (nor the hook's ``send_sigterm``, which logs first) and nothing waits without a timeout:
        see :class:`operators.launchers.base.Launcher`."""
        proc = self.hook.sub_process if self.hook is not None else None
        if proc is None or proc.poll() is not None:
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the child leads its own session's group
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
