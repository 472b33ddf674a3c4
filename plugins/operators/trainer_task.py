"""One factory for every trainer step, whatever the runtime (``RECSYS_RUNTIME``).

The step's module and arguments are the same everywhere; only the launcher differs:

* ``vertex``: Vertex AI custom container training job (deferrable, the stock operator made
  to cancel its pipeline when the task stops waiting, and not to submit a duplicate)
* ``docker``: a sibling container through the Docker socket (the stock DockerOperator)
* ``local``:  a subprocess with the trainer's own virtualenv (no Docker, no cloud)

All three run the image ``resolve_image`` pinned for the run, apply the trainer's exit-code
contract (2 fails at once, 75 and crashes are retried) and report the step's own error line
(:mod:`operators.trainer_exit`). Provider modules are imported only for the runtime in use,
so DAG files parse fast. Given ``shards`` (an XComArg of shard indexes), the step becomes a
mapped task: one task instance, hence one job, container or process, per shard, each with its
index as ``{{ task.shard }}`` in its arguments (:mod:`operators.sharding`). Every step takes a
slot of the trainer pool (``RECSYS_TRAINER_POOL``), unless it names another (the writers' pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from operators.config import RecsysConfig
from operators.macros import recsys_label
from operators.trainer_exit import attempt_env

IMAGE_FROM_XCOM = "{{ ti.xcom_pull(task_ids='resolve_image') }}"


# Steps that estimate their own run time before the work (trainer/preflight.py): told their
# task's timeout, they refuse a run that cannot finish in it instead of being killed at its end.
# An environment variable, not a flag: an image from before the pre-flight ignores it.
TIME_BUDGETED_STEPS = frozenset({"train_task"})
TIME_BUDGET_ENV = "RECSYS_TIME_BUDGET_S"


def step_env(step: str, image: str, execution_timeout: timedelta | None) -> dict[str, str]:
    """What every runtime tells the step about its attempt (and its time budget, where it uses one)."""
    env = attempt_env(image)
    if step in TIME_BUDGETED_STEPS and execution_timeout:
        env[TIME_BUDGET_ENV] = str(int(execution_timeout.total_seconds()))
    return env


def trainer_command(step: str, arguments: Sequence[str]) -> list[str]:
    """What the container (or subprocess) runs: identical in every runtime."""
    return ["python", "-m", f"trainer.{step}", *arguments]


def default_task_id(step: str) -> str:
    return step.removesuffix("_task")


def trainer_task(step: str, arguments: Sequence[str], *, config: RecsysConfig,
                 image: str = IMAGE_FROM_XCOM, task_id: str | None = None, shards: Any = None,
                 extra_links: Sequence[BaseOperatorLink] = (), **kwargs: Any) -> Any:
    """The task that runs ``python -m trainer.<step> <arguments>`` in the configured runtime;
    mapped over ``shards`` when given. ``extra_links`` join the runtime operator's own links."""
    task_id = task_id or default_task_id(step)
    # One slot each of the pool that bounds the environment's trainer jobs, unless the step runs
    # in the writers' pool (a task has one pool; that one admits a single job at a time anyway).
    kwargs.setdefault("pool", config.trainer_pool)
    operator, arguments = _operator(step, arguments, config=config, image=image, task_id=task_id,
                                    mapped=shards is not None, **kwargs)
    if shards is None:
        task = operator(**arguments)
        if extra_links:
            task.operator_extra_links = (*operator.operator_extra_links, *extra_links)
        return task
    if extra_links:
        raise ValueError("extra_links are not supported on a mapped step")
    return operator.partial(**arguments).expand(shard=shards)


def _operator(step: str, arguments: Sequence[str], *, config: RecsysConfig, image: str, task_id: str,
              mapped: bool, **kwargs: Any) -> tuple[type[BaseOperator], dict[str, Any]]:
    """The runtime's operator class and its arguments."""
    command = trainer_command(step, arguments)
    attempt = step_env(step, image, kwargs.get("execution_timeout"))
    if config.runtime == "vertex":
        from operators.vertex import TrainerVertexJobOperator

        # One pipeline per shard: the shard is part of the name and the labels; a retry adopts
        # a running pipeline by a key label of the exact task instance (operators/vertex.py).
        shard = {"shard": "{{ task.shard }}"} if mapped else {}
        return TrainerVertexJobOperator, dict(
            task_id=task_id,
            step=step,
            project_id=config.project,
            region=config.region,
            staging_bucket=config.staging_bucket,
            allowlist=config.image_allowlist,
            service_account=config.service_account,
            display_name=f"recsys-{{{{ dag.dag_id }}}}-{task_id}{'-{{ task.shard }}' if mapped else ''}"
            "-{{ recsys_label(run_id) }}-try{{ ti.try_number }}",
            container_uri=image,
            command=command,
            machine_type=config.machine_type(step),
            accelerator_count=0,  # the image is CPU-only (implicit.cpu)
            replica_count=1,
            labels={"app": "recsys", "dag": "{{ recsys_label(dag.dag_id) }}",
                    "task": recsys_label(task_id), "run": "{{ recsys_label(run_id) }}",
                    "try": "{{ ti.try_number }}", **shard},
            # Not the emulator hosts: a Vertex job reaches the real services.
            environment_variables={**{k: v for k, v in config.passthrough_env().items()
                                      if k in ("RECSYS_LOG_LEVEL", "RECSYS_TODAY")}, **attempt},
            gcp_conn_id=config.gcp_conn_id,
            deferrable=True,
            poll_interval=30,
            **kwargs,
        )
    if config.runtime == "docker":
        from operators.docker_trainer import TrainerDockerOperator

        return TrainerDockerOperator, dict(
            task_id=task_id,
            step=step,
            image=image,
            command=command,
            allowlist=config.image_allowlist,
            environment={**config.passthrough_env(), **attempt},
            docker_url=config.docker_url,
            network_mode=config.docker_network,
            auto_remove="success",
            mount_tmp_dir=False,
            tty=False,
            **kwargs,
        )
    from operators.local_trainer import LocalTrainerOperator

    return LocalTrainerOperator, dict(
        task_id=task_id, step=step, arguments=arguments, python=config.trainer_python,
        trainer_source=config.trainer_source, image=image,
        env={**config.passthrough_env(), **attempt}, **kwargs,
    )
