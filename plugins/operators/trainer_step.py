"""The one operator of every trainer step, whatever the runtime.

``python -m trainer.<step> ARGS`` with the run's pinned image: the operator holds what a run
renders (arguments, image, environment, run date) and hands the try to its runtime's launcher
(:mod:`operators.launchers`), which calls that runtime's stock hook. ``execute``,
``execute_complete`` and ``on_kill`` live here only; no launcher builds an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

if TYPE_CHECKING:
    from operators.launchers.base import Launcher


class VertexTrainingLink(BaseOperatorLink):
    """The stock "Vertex AI Training" link, built when the link is (at the end of a try, on the
    worker): its module imports the Google hooks, about 1 s more at every parse. Empty outside
    the vertex runtime (nothing persists its key there)."""

    name = "Vertex AI Training"
    xcom_key = "training_conf"  # the stock link's key, which the Vertex launcher persists to

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
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
        """What the container (or subprocess) runs: identical in every runtime."""
        return ["python", "-m", f"trainer.{self.step}", *map(str, self.arguments)]

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
