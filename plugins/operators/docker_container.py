"""The container a docker-runtime trainer task runs (built by
:class:`operators.docker_trainer.TrainerDockerOperator` when it executes).

The stock DockerOperator, plus three things it cannot do: apply the trainer's exit-code contract
(it raises the same retriable error for every non-zero exit) with the step's own ``ERROR:``
line, run the image the run was pinned to by its ID (it would try to pull ``sha256:...``,
since the engine lists images by name only), and stop the container when the worker running
the task dies (operators/lifeline.py). Imports the Docker provider: never at parse time.
"""

from __future__ import annotations

import contextlib
import re
import threading

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from docker.errors import APIError

from operators.image_refs import DIGEST
from operators.lifeline import task_dies_with_supervisor
from operators.trainer_exit import last_error_line, raise_for_exit

# The stock operator removes the container before raising ("Docker container failed:
# {'StatusCode': 2, ...}"), so its message is the one place left holding the exit code.
_STATUS_CODE = re.compile(r"'StatusCode': (\d+)")


class TrainerContainer(DockerOperator):
    """DockerOperator for ``python -m trainer.<step>``; see the module docstring."""

    def __init__(self, *, step: str, shard: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.shard = step, shard

    def execute(self, context):
        # A dead worker must not leave the container running beside the retry: the task process
        # gets SIGTERM, and Airflow's handler calls the stock on_kill, which stops the container.
        with task_dies_with_supervisor():
            return self._execute(context)

    def _execute(self, context):
        if DIGEST.fullmatch(self.image or ""):
            # Pinned by image ID: it must be in the engine already (resolve_image checked), and
            # there is nothing to pull. Same path as the stock execute after its pull.
            self.cli.inspect_image(self.image)
            if hasattr(self, "_normalize_mounts"):  # docker provider >= 4.6
                self._normalize_mounts()
            return self._run_image()
        return super().execute(context)

    def on_kill(self) -> None:
        """Stop the container (``docker stop``: SIGTERM, SIGKILL after the engine's grace) from a
        thread of its own, and return at once.

        Not the stock on_kill, nor the stop done here: this runs in Airflow's SIGTERM handler, on
        the main thread, maybe interrupted while it holds the task log's writer lock (a plain
        lock) or is the reader the engine's log stream waits on. Logging there would wait on the
        lock forever, and a stop there waits on a stream nobody reads. The thread is not a daemon:
        a task process ending (its logging raising once the worker died) waits for the stop."""
        if not self.hook.client_created or self.container is None:
            return
        threading.Thread(target=self._stop_container, args=(self.container["Id"],),
                         name=f"stop-{self.step}").start()

    def _stop_container(self, container_id: str) -> None:
        self.cli.stop(container_id)
        if self.auto_remove == "force":
            with contextlib.suppress(APIError):  # already gone
                self.cli.remove_container(container_id, force=True)

    def _run_image(self):
        try:
            return super()._run_image()
        except DockerContainerFailedException as exc:
            found = _STATUS_CODE.search(str(exc))
            code = int(found.group(1)) if found else 1
            raise_for_exit(self.step, code, last_error_line(exc.logs or []))
