"""The task that runs a trainer step as a Vertex AI custom container training job
(``RECSYS_RUNTIME=vertex``).

A thin operator: it holds the job's arguments (the run's pinned image, command, labels and
attempt environment are template fields) and builds the real job operator
(:class:`operators.vertex_job.VertexTrainingJob`, the provider's
``CreateCustomContainerTrainingJobOperator`` made to cancel and not to duplicate pipelines) only
when it executes. The provider's Vertex modules take seconds to import; imported at parse time,
every parse of every DAG file pays them, and Airflow's dag-processor parses each file again
every 30 s in a fresh process (its pre-import only covers ``airflow.*`` imports written at a DAG
file's top level, which would cost every other parse instead). Measured: docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

# The arguments handed to the job operator. Template fields: what a run renders, plus the
# provider's own template fields among these (its list differs between provider versions).
JOB_ARGUMENTS = ("project_id", "region", "staging_bucket", "service_account", "display_name",
                 "container_uri", "command", "machine_type", "accelerator_count", "replica_count",
                 "labels", "environment_variables", "gcp_conn_id", "impersonation_chain",
                 "deferrable", "poll_interval")
TEMPLATED = ("region", "command", "display_name", "gcp_conn_id", "impersonation_chain", "container_uri",
             "labels", "environment_variables")


# The label a try adopts a running pipeline by (operators/vertex_job.py). The readable labels
# (dag, task, run) are lowercased and cut to 63 characters, so two runs can share them: a manual
# run id "backfill__2026-11-01t03-00-00-00-00" labels like the backfill of that date.
PIPELINE_KEY_LABEL = "key"


def pipeline_key(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """A label value naming exactly one task instance: 252 bits of the sha256 of its exact DAG id,
    run id, task id and map index (a label value holds at most 63 characters)."""
    exact = json.dumps([dag_id, run_id, task_id, -1 if map_index is None else int(map_index)])
    return hashlib.sha256(exact.encode()).hexdigest()[:63]


class VertexTrainingLink(BaseOperatorLink):
    """The stock "Vertex AI Training" link, built when the link is (at the end of a try, on the
    worker): its module imports the Google hooks, about 1 s more at every parse."""

    name = "Vertex AI Training"
    xcom_key = "training_conf"  # the stock link's key, which the job operator persists to

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from airflow.providers.google.cloud.links.vertex_ai import VertexAITrainingLink

        return VertexAITrainingLink().get_link(operator, ti_key=ti_key)


class TrainerVertexJobOperator(BaseOperator):
    """Run ``python -m trainer.<step>`` on Vertex AI; see the module docstring. Deferrable: the
    job operator submits (or adopts) the pipeline and defers to a trigger that waits for it and
    cancels it if the task stops waiting; :meth:`execute_complete` resumes here."""

    template_fields = TEMPLATED
    operator_extra_links = (VertexTrainingLink(),)

    def __init__(self, *, step: str, project_id: str, region: str, allowlist: Sequence[str],
                 display_name: str, container_uri: str, command: list[str], machine_type: str,
                 labels: dict[str, str], environment_variables: dict[str, str],
                 staging_bucket: str | None = None, service_account: str | None = None,
                 accelerator_count: int = 0, replica_count: int = 1,
                 gcp_conn_id: str = "google_cloud_default", impersonation_chain: Any = None,
                 deferrable: bool = True, poll_interval: int = 60, shard: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step, self.shard = step, shard
        self.allowlist = tuple(allowlist)
        self.project_id, self.region, self.display_name = project_id, region, display_name
        self.container_uri, self.command, self.machine_type = container_uri, command, machine_type
        self.labels, self.environment_variables = labels, environment_variables
        self.staging_bucket, self.service_account = staging_bucket, service_account
        self.accelerator_count, self.replica_count = accelerator_count, replica_count
        self.gcp_conn_id, self.impersonation_chain = gcp_conn_id, impersonation_chain
        self.deferrable, self.poll_interval = deferrable, poll_interval
        self._job: Any = None

    @property
    def extra_links_params(self) -> dict[str, Any]:
        """What the stock link formats its URL with, besides the pipeline id the job persists."""
        return {"region": self.region, "project_id": self.project_id}

    def job(self) -> Any:
        """A job operator with this task's arguments as they are now (rendered, when executing)."""
        from operators.vertex_job import VertexTrainingJob

        return VertexTrainingJob(
            task_id=self.task_id, step=self.step,
            execution_timeout=self.execution_timeout, **{name: getattr(self, name) for name in JOB_ARGUMENTS})

    def execute(self, context: Any) -> Any:
        from operators.images import check_pinned

        # The image comes from resolve_image's XCom, which a user who may edit XCom can change:
        # checked before anything is submitted or adopted.
        check_pinned(self.container_uri, self.allowlist)
        ti = context["ti"]
        self.labels = {**self.labels,
                       PIPELINE_KEY_LABEL: pipeline_key(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)}
        self._job = self.job()
        return self._job.execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        self._job = self.job()
        return self._job.execute_complete(context, event)

    def on_kill(self) -> None:
        if self._job is not None:
            self._job.on_kill()
