"""The task that runs a trainer step in a sibling container (``RECSYS_RUNTIME=docker``).

A thin operator, like the Vertex one (:mod:`operators.vertex`): it holds the container's
arguments (the run's pinned image, command and environment are template fields) and builds the
container operator (:class:`operators.docker_container.TrainerContainer`, the stock
DockerOperator made to apply the exit-code contract, run a pinned image ID and stop with a dead
worker) only when it executes. The Docker provider's module imports the Docker SDK: imported at
parse time, it cost each fresh parse of a DAG file in this runtime 0.3-0.45 s, and each parse
under the dag-processor (every file, every 30 s) 0.1-0.17 s (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

# The arguments handed to the container operator; its own defaults where the task sets none.
CONTAINER_ARGUMENTS = ("image", "command", "environment", "container_name", "docker_url",
                       "network_mode", "auto_remove", "mount_tmp_dir", "tty")
# What a run renders: the stock operator's template fields among these.
TEMPLATED = ("image", "command", "environment", "container_name")


class TrainerDockerOperator(BaseOperator):
    """Run ``python -m trainer.<step>`` in a container of the run's pinned image; see the module
    docstring. Its return value (the container's last log line) is the task's XCom, as the stock
    operator's is."""

    template_fields = TEMPLATED

    def __init__(self, *, step: str, image: str, command: list[str], allowlist: Sequence[str],
                 environment: dict[str, str] | None = None, container_name: str | None = None,
                 docker_url: str | None = None, network_mode: str | None = None,
                 auto_remove: str = "never", mount_tmp_dir: bool = True, tty: bool = False,
                 shard: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step, self.shard = step, shard
        self.allowlist = tuple(allowlist)
        self.image, self.command, self.environment = image, command, environment or {}
        self.container_name, self.docker_url, self.network_mode = container_name, docker_url, network_mode
        self.auto_remove, self.mount_tmp_dir, self.tty = auto_remove, mount_tmp_dir, tty
        self._container: Any = None

    def container(self) -> Any:
        """A container operator with this task's arguments as they are now (rendered, when
        executing)."""
        from operators.docker_container import TrainerContainer

        return TrainerContainer(task_id=self.task_id, step=self.step, do_xcom_push=self.do_xcom_push,
                                **{name: getattr(self, name) for name in CONTAINER_ARGUMENTS})

    def execute(self, context: Any) -> Any:
        from operators.images import check_docker_image

        # The image comes from resolve_image's XCom, which a user who may edit XCom can change.
        check_docker_image(self.image, self.allowlist, self.docker_url or "")
        self._container = self.container()
        return self._container.execute(context)

    def on_kill(self) -> None:
        # Airflow's SIGTERM handler calls the task's on_kill: the container operator stops the
        # container (operators/docker_container.py).
        if self._container is not None:
            self._container.on_kill()
