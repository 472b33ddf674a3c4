"""One factory for every trainer step, whatever the runtime (``RECSYS_RUNTIME``).

The step's module and arguments are the same everywhere; only the launcher differs:

* ``vertex``: Vertex AI custom container training job (deferrable, stock operator)
* ``docker``: a sibling container through the Docker socket (stock DockerOperator)
* ``local``:  a subprocess with the trainer's own virtualenv (no Docker, no cloud)

Provider modules are imported only for the runtime in use, so DAG files parse fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from operators.config import RecsysConfig
from operators.macros import recsys_label

IMAGE_FROM_XCOM = "{{ ti.xcom_pull(task_ids='resolve_image') }}"


def trainer_command(step: str, arguments: Sequence[str]) -> list[str]:
    """What the container (or subprocess) runs: identical in every runtime."""
    return ["python", "-m", f"trainer.{step}", *arguments]


def default_task_id(step: str) -> str:
    return step.removesuffix("_task")


def trainer_task(step: str, arguments: Sequence[str], *, config: RecsysConfig,
                 image: str = IMAGE_FROM_XCOM, task_id: str | None = None, **kwargs: Any) -> BaseOperator:
    """The task that runs ``python -m trainer.<step> <arguments>`` in the configured runtime."""
    task_id = task_id or default_task_id(step)
    command = trainer_command(step, arguments)
    if config.runtime == "vertex":
        from operators.vertex import TemplatedImageCustomContainerTrainingJobOperator

        return TemplatedImageCustomContainerTrainingJobOperator(
            task_id=task_id,
            project_id=config.project,
            region=config.region,
            staging_bucket=config.staging_bucket,
            service_account=config.service_account,
            display_name=f"recsys-{{{{ dag.dag_id }}}}-{task_id}-{{{{ recsys_label(run_id) }}}}"
            "-try{{ ti.try_number }}",
            container_uri=image,
            command=command,
            machine_type=config.machine_type(step),
            accelerator_count=0,  # the image is CPU-only (implicit.cpu)
            replica_count=1,
            labels={"app": "recsys", "dag": "{{ recsys_label(dag.dag_id) }}",
                    "task": recsys_label(task_id), "run": "{{ recsys_label(run_id) }}"},
            environment_variables={k: v for k, v in config.passthrough_env().items()
                                   if k == "RECSYS_LOG_LEVEL"},
            gcp_conn_id=config.gcp_conn_id,
            deferrable=True,
            poll_interval=30,
            **kwargs,
        )
    if config.runtime == "docker":
        from airflow.providers.docker.operators.docker import DockerOperator

        return DockerOperator(
            task_id=task_id,
            image=image,
            command=command,
            environment=config.passthrough_env(),
            docker_url=config.docker_url,
            network_mode=config.docker_network,
            auto_remove="success",
            mount_tmp_dir=False,
            tty=False,
            **kwargs,
        )
    from operators.local_trainer import LocalTrainerOperator

    return LocalTrainerOperator(
        task_id=task_id, step=step, arguments=arguments, python=config.trainer_python,
        env=config.passthrough_env(), **kwargs,
    )
