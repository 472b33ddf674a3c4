"""``docker`` runtime: the step in a sibling container, through the Docker socket.

The Docker provider's ``DockerHook`` gives the engine's API client; this launcher makes the
calls the provider's ``DockerOperator`` makes (create, attach, start, stream the logs, wait for
the exit code, remove; stop on kill) plus what it cannot do: run the image the run was pinned to
by its ID (the engine lists images by name; the stock operator would try to pull
``sha256:...``), apply the trainer's exit-code contract with the step's own ``ERROR:`` line (the
stock operator raises one retriable error for every non-zero exit), and stop the container when
the worker running the task dies (operators/lifeline.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from operators import contract
from operators.image_pinning import check_docker_image
from operators.image_references import DIGEST
from operators.launchers.base import Launcher
from operators.lifeline import task_dies_with_supervisor
from operators.trainer_exit import last_error_line, raise_for_exit


def log_lines(stream: Iterable[bytes | str]) -> Iterator[str]:
    """Whole lines of a container's output stream (its chunks split lines anywhere)."""
    buffer = ""
    for chunk in stream:
        buffer += chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else chunk
        *lines, buffer = buffer.split("\n")
        yield from (line.rstrip() for line in lines)
    if buffer.rstrip():
        yield buffer.rstrip()


class DockerLauncher(Launcher):
    """``python -m trainer.<step> ARGS`` in a container of the run's pinned image. Returns the
    container's last log line (the task's XCom, as the stock operator's)."""

    runtime = "docker"

    def __init__(self, operator: Any) -> None:
        super().__init__(operator)
        self.docker_url = operator.launch.get("docker_url") or ""
        self.network_mode = operator.launch.get("network_mode")
        self.container_name = operator.launch.get("container_name")  # the engine names it otherwise
        self.remove = operator.launch.get("auto_remove", "success") != "never"
        self.client: Any = None
        self.container_id: str | None = None

    def check_image(self, image: str) -> str:
        return check_docker_image(image, self.operator.allowlist, self.docker_url)

    def _client(self) -> Any:
        from airflow.providers.docker.hooks.docker import DockerHook

        return DockerHook(docker_conn_id=None, base_url=self.docker_url).api_client

    def _ensure_image(self, image: str) -> None:
        from docker.errors import ImageNotFound

        try:
            self.client.inspect_image(image)
        except ImageNotFound:
            if DIGEST.fullmatch(image):  # an image ID: resolve_image saw it; nothing to pull
                raise
            self.log.info("pulling %s", image)  # a registry reference pinned by digest
            self.client.pull(image)

    def launch(self, context: Any) -> str | None:
        op = self.operator
        self.client = self._client()
        self._ensure_image(op.image)
        container = self.client.create_container(
            image=op.image, command=op.command, environment={**op.environment, contract.IMAGE_ENV: op.image},
            host_config=self.client.create_host_config(auto_remove=False, network_mode=self.network_mode),
            name=self.container_name, tty=False)
        self.container_id = container["Id"]
        lines: list[str] = []
        try:
            # A dead worker must not leave the container running beside the retry: the task
            # process gets SIGTERM, Airflow's handler calls on_kill, which stops it.
            with task_dies_with_supervisor():
                stream = self.client.attach(container=self.container_id, stdout=True, stderr=True,
                                            stream=True)
                self.client.start(self.container_id)
                for line in log_lines(stream):
                    self.log.info("%s", line)
                    lines.append(line)
                code = int(self.client.wait(self.container_id)["StatusCode"])
        finally:
            if self.remove:  # whatever the outcome, as the stock operator's "success" does
                with contextlib.suppress(Exception):  # already gone (removed by a kill)
                    self.client.remove_container(self.container_id)
        if code != 0:
            raise_for_exit(op.step, code, last_error_line(lines))
        return lines[-1] if lines else None

    def kill(self) -> None:
        """``docker stop`` (SIGTERM, SIGKILL after the engine's grace) from a thread of its own,
        returning at once: this runs in Airflow's SIGTERM handler, maybe on the thread that reads
        the log stream the engine waits on. Not a daemon thread: a task process ending waits for
        the stop."""
        if self.client is None or self.container_id is None:
            return
        threading.Thread(target=self.client.stop, args=(self.container_id,),
                         name=f"stop-{self.operator.step}").start()
