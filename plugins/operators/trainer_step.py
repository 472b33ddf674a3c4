"""The one operator of every trainer step, whatever the runtime, and the factory the DAGs call.

``python -m trainer.<step> ARGS`` with the run's pinned image: :class:`TrainerStepOperator` holds
what a run renders (arguments, image, environment, run date) and hands the try to its runtime's
launcher (:mod:`operators.launchers`), which calls that runtime's stock hook. ``execute``,
``execute_complete`` and ``on_kill`` live here only; no launcher builds an operator.
:func:`trainer_task` builds the task of a step in the configured runtime (``RECSYS_RUNTIME``):

* ``vertex``: a Vertex AI custom container training job (deferrable; cancelled when the task
  stops waiting; a retry adopts its running pipeline instead of submitting another)
* ``docker``: a sibling container through the Docker socket
* ``local``:  a subprocess with the trainer's own virtualenv (no Docker, no cloud)

All three run the image ``resolve_image`` pinned for the run, apply the trainer's exit-code
contract (2 fails at once, 75 and crashes are retried) and report the step's own error line
(:mod:`operators.trainer_exit`). Given ``shards`` (an XComArg of shard indexes), the step
becomes a mapped task: one task instance, hence one job, container or process, per shard, each
with its index as ``{{ task.shard }}`` in its arguments (:mod:`operators.sharding`). Every step
takes a slot of the trainer pool (``RECSYS_TRAINER_POOL``), unless it names another (the
writers' pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from operators import contract
from operators.config import RecsysConfig
from operators.macros import RUN_DATE

if TYPE_CHECKING:
    from operators.launchers.base import Launcher


class VertexTrainingLink(BaseOperatorLink):
    """The stock "Vertex AI Training" link, built when the link is (at the end of a try, on the
    worker): its module imports the Google hooks, about 1 s more at every parse. Empty outside
    the vertex runtime (nothing persists its key there)."""

    name = "Vertex AI Training"
    xcom_key = "training_conf"  # the stock link's key, which the Vertex launcher persists to

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        if getattr(operator, "runtime", "vertex") != "vertex":  # no pipeline, and no import to pay
            return ""
        from airflow.providers.google.cloud.links.vertex_ai import VertexAITrainingLink

        return VertexAITrainingLink().get_link(operator, ti_key=ti_key)


class TrainerStepOperator(BaseOperator):
    """Run one trainer step in ``runtime`` (``vertex``, ``docker`` or ``local``).

    :param step: the trainer module (``train_task``), run as ``python -m trainer.<step>``
    :param arguments: its arguments (templated)
    :param image: the run's pinned image (templated: ``resolve_image``'s XCom)
    :param environment: what the step is told (templated: its attempt, emulator hosts)
    :param run_date: the run's date (templated), where the step leaves its status record
    :param artifacts_uri: the artifacts root the step writes under
    :param allowlist: the registry allowlist the image is checked against at launch
    :param launch: the runtime's own settings (Vertex project, region and machine; the Docker
        URL and network; the local interpreter and trainer sources)
    :param shard: a mapped step's shard index (``{{ task.shard }}`` in its arguments)
    """

    template_fields: Sequence[str] = ("arguments", "image", "environment", "run_date")
    operator_extra_links = (VertexTrainingLink(),)
    ui_color = "#fdf6e3"

    def __init__(self, *, step: str, arguments: Sequence[str], image: str, runtime: str,
                 environment: dict[str, str], run_date: str, artifacts_uri: str,
                 allowlist: Sequence[str], gcp_conn_id: str = "google_cloud_default",
                 launch: dict[str, Any] | None = None, shard: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step, self.arguments, self.image, self.runtime = step, list(arguments), image, runtime
        self.environment, self.run_date, self.artifacts_uri = dict(environment), run_date, artifacts_uri
        self.allowlist, self.gcp_conn_id = tuple(allowlist), gcp_conn_id
        self.launch, self.shard = dict(launch or {}), shard
        self._launcher: Launcher | None = None

    @property
    def command(self) -> list[str]:
        """What the container (or subprocess) runs: identical in every runtime. An argument
        ``--name=`` left empty (a null param, :func:`operators.macros.recsys_optional`) is not
        passed: the step's own default applies, and an image older than the option still runs."""
        return ["python", "-m", f"trainer.{self.step}",
                *(a for a in map(str, self.arguments) if not (a.startswith("--") and a.endswith("=")))]

    @property
    def extra_links_params(self) -> dict[str, Any]:
        """What the stock Vertex link formats its URL with, besides the persisted pipeline id."""
        return {"region": self.launch.get("region"), "project_id": self.launch.get("project_id")}

    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            from operators.launchers import launcher_for

            self._launcher = launcher_for(self)
        return self._launcher

    def execute(self, context: Any) -> Any:
        # The image comes from resolve_image's XCom, which a user who may edit XCom can change
        # before clearing a step: checked before anything starts or is adopted.
        self.launcher.check_image(self.image)
        from operators.launchers.base import Deferral

        result = self.launcher.launch(context)
        if isinstance(result, Deferral):
            # Airflow 3 does not apply execution_timeout to a deferred task: the deferral carries it.
            self.defer(trigger=result.trigger, method_name="execute_complete",
                       timeout=self.execution_timeout)
        return result

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        return self.launcher.resume(context, event)

    def on_kill(self) -> None:
        if self._launcher is not None:
            self._launcher.kill()

    # --- OpenLineage (called by the provider's DefaultExtractor where it is enabled) ----------
    def _lineage_run(self, task_instance: Any = None) -> Any:
        from operators.lineage import StepRun

        map_index = getattr(task_instance, "map_index", None)
        return StepRun(step=self.step, arguments=tuple(map(str, self.arguments)),
                       artifacts_uri=self.artifacts_uri, run_date=self.run_date, shard=self.shard,
                       status_name=contract.status_name(self.dag_id, self.task_id, map_index),
                       data_check=bool(self.environment.get(contract.DATA_CHECK_ENV)))

    def _read_record(self, uri: str) -> dict | None:
        from operators.artifacts import ArtifactsHook

        try:
            record = ArtifactsHook(gcp_conn_id=self.gcp_conn_id).read_json(uri)
        except Exception as exc:  # lineage never fails a task: this dataset is left out
            from operators.redaction import error_line

            self.log.warning("lineage: could not read %s (%s)", uri, error_line(exc))
            return None
        return record if isinstance(record, dict) else None

    def get_openlineage_facets_on_start(self) -> Any:
        """The step's datasets known before it runs (operators.lineage)."""
        from operators.lineage import operator_lineage, step_lineage

        return operator_lineage(step_lineage(self._lineage_run(), None))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The step's datasets, with those its records name (the model, the caches it reused),
        and the model's run facet."""
        from operators.lineage import operator_lineage, step_lineage

        return operator_lineage(step_lineage(self._lineage_run(task_instance), self._read_record))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """What the step was to read and write: its records may be another try's."""
        return self.get_openlineage_facets_on_start()


IMAGE_FROM_XCOM = "{{ ti.xcom_pull(task_ids='resolve_image') }}"

# Steps that estimate their own run time before the work (trainer's pre-flight): told their
# task's timeout, they refuse a run that cannot finish in it instead of being killed at its end.
# An environment variable, not a flag: an image from before the pre-flight ignores it.
TIME_BUDGETED_STEPS = frozenset({"train_task"})
# What a Vertex job is told of the deployment's environment: not the emulator hosts (a Vertex
# job reaches the real services).
VERTEX_PASSED_ENV = ("RECSYS_LOG_LEVEL", contract.TODAY_ENV)


def attempt_env(image: str) -> dict[str, str]:
    """What a step is told about the Airflow attempt running it (templated)."""
    return {
        # A mapped task (one shard each) has one record per task instance (contract.status_name).
        contract.STATUS_NAME_ENV: "{{ dag.dag_id }}.{{ task.task_id }}"
                                  "{% if ti.map_index|int(-1) >= 0 %}.{{ ti.map_index }}{% endif %}",
        contract.AIRFLOW_RUN_ID_ENV: "{{ run_id }}",
        contract.TRY_NUMBER_ENV: "{{ ti.try_number }}",
        contract.IMAGE_ENV: image,
    }


def step_env(step: str, image: str, execution_timeout: timedelta | None) -> dict[str, str]:
    """What every runtime tells the step about its attempt (and its time budget, where it uses one)."""
    env = attempt_env(image)
    if step in TIME_BUDGETED_STEPS and execution_timeout:
        env[contract.TIME_BUDGET_ENV] = str(int(execution_timeout.total_seconds()))
    return env


def default_task_id(step: str) -> str:
    return step.removesuffix("_task")


def launch_settings(config: RecsysConfig, step: str) -> dict[str, Any]:
    """The runtime's own settings for ``step`` (``TrainerStepOperator.launch``)."""
    if config.runtime == "vertex":
        return {"project_id": config.project, "region": config.region,
                "staging_bucket": config.staging_bucket, "service_account": config.service_account,
                "machine_type": config.machine_type(step), "poll_interval": 30}
    if config.runtime == "docker":
        return {"docker_url": config.docker_url, "network_mode": config.docker_network,
                "auto_remove": "success"}
    return {"python": config.trainer_python, "trainer_source": config.trainer_source}


def trainer_task(step: str, arguments: Sequence[str], *, config: RecsysConfig,
                 image: str = IMAGE_FROM_XCOM, task_id: str | None = None, shards: Any = None,
                 run_date: str = RUN_DATE, extra_links: Sequence[BaseOperatorLink] = (),
                 environment: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """The task that runs ``python -m trainer.<step> <arguments>`` in the configured runtime;
    mapped over ``shards`` when given. ``run_date`` is the date the step's arguments name (its
    status record's folder). ``extra_links`` join the operator's own links; ``environment``
    (templated) joins the step's own variables."""
    # One slot each of the pool that bounds the environment's trainer jobs, unless the step runs
    # in the writers' pool (a task has one pool; that one admits a single job at a time anyway).
    kwargs.setdefault("pool", config.trainer_pool)
    passed = config.passthrough_env()
    if config.runtime == "vertex":
        passed = {k: v for k, v in passed.items() if k in VERTEX_PASSED_ENV}
    arguments = dict(
        task_id=task_id or default_task_id(step), step=step, arguments=list(arguments), image=image,
        runtime=config.runtime,
        environment={**passed, **step_env(step, image, kwargs.get("execution_timeout")),
                     **(environment or {})},
        run_date=run_date, artifacts_uri=config.artifacts_uri, allowlist=config.image_allowlist,
        gcp_conn_id=config.gcp_conn_id, launch=launch_settings(config, step), **kwargs)
    if shards is None:
        task = TrainerStepOperator(**arguments)
        if extra_links:
            task.operator_extra_links = (*TrainerStepOperator.operator_extra_links, *extra_links)
        return task
    if extra_links:
        raise ValueError("extra_links are not supported on a mapped step")
    return TrainerStepOperator.partial(**arguments).expand(shard=shards)
