"""The Vertex AI custom container training job that runs a trainer step.

Imported only when a ``vertex`` task executes (:class:`operators.vertex.TrainerVertexJobOperator`
builds it then): the Google provider's Vertex module takes seconds to import, which every DAG
parse would otherwise pay.
"""

from __future__ import annotations

import urllib.parse
from datetime import timedelta
from typing import Any

from airflow.providers.google.cloud.links.vertex_ai import VertexAITrainingLink
from airflow.providers.google.cloud.operators.vertex_ai.custom_job import (
    CreateCustomContainerTrainingJobOperator,
)
from airflow.providers.google.cloud.triggers.vertex_ai import CustomContainerTrainingJobTrigger

from operators.trainer_exit import TrainerStepRetriable, raise_for_exit, read_status_record
from operators.vertex import PIPELINE_KEY_LABEL
from operators.vertex_trigger import CancellingTrainingPipelineTrigger

# Pipelines still doing the step: a retry waits for one of these instead of submitting another.
ACTIVE_STATES = frozenset({"PIPELINE_STATE_QUEUED", "PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING"})
# A try adopts only a pipeline of its own task instance, by the collision-proof key label
# (operators/vertex.py); the readable dag/task/run/shard labels are for people filtering jobs.
RUN_LABELS = (PIPELINE_KEY_LABEL,)


class VertexTrainingJob(CreateCustomContainerTrainingJobOperator):
    """The stock operator (deferrable), plus what production needs from it:

    * it never orphans a pipeline: the deferral carries the task's ``execution_timeout``, and
      the trigger cancels the pipeline when the task stops waiting for it (timeout, kill,
      clear, mark) — see :mod:`operators.vertex_trigger`;
    * it never duplicates one: a try first looks for an active pipeline of the same task
      instance (by its key label: exact DAG id, run id, task id and map index) and waits for
      that instead of submitting another;
    * a failed pipeline is reported with the step's own error from its status record, under
      the trainer's exit-code rule (exit 2 fails at once), with a link to the job's logs.
    """

    def __init__(self, *, step: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step

    def find_active_pipeline(self) -> Any | None:
        """The newest active training pipeline of this task instance (its key label), if any."""
        keys = [key for key in RUN_LABELS if key in self.labels]
        if not keys:  # no key, nothing can be told apart: submit
            return None
        wanted = " AND ".join(f'labels.{key}="{self.labels[key]}"' for key in keys)
        pipelines = self.hook.list_training_pipelines(project_id=self.project_id, region=self.region,
                                                      filter=wanted)
        active = [p for p in pipelines if p.state.name in ACTIVE_STATES
                  and all(p.labels.get(key) == self.labels[key] for key in keys)]
        return max(active, key=lambda p: p.create_time, default=None)

    def invoke_defer(self, context: Any) -> None:
        running = self.find_active_pipeline()
        if running is None:
            super().invoke_defer(context)  # submits, then defers through self.defer below
            return
        pipeline_id = running.name.rpartition("/")[-1]
        self.log.warning("training pipeline %s of this run's %s (try %s) is still %s: waiting for it "
                         "instead of submitting another", running.name, self.task_id,
                         running.labels.get("try", "?"), running.state.name)
        context["ti"].xcom_push(key="training_id", value=pipeline_id)
        VertexAITrainingLink.persist(context=context, training_id=pipeline_id)
        self.defer(trigger=CustomContainerTrainingJobTrigger(
            conn_id=self.gcp_conn_id, project_id=self.project_id, location=self.region, job_id=pipeline_id,
            poll_interval=self.poll_interval, impersonation_chain=self.impersonation_chain),
            method_name="execute_complete")

    def defer(self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None,
              timeout: timedelta | None = None) -> None:
        # Airflow 3 does not apply execution_timeout to a deferred task: the deferral carries it.
        if type(trigger) is CustomContainerTrainingJobTrigger:
            trigger = CancellingTrainingPipelineTrigger(
                conn_id=trigger.conn_id, project_id=trigger.project_id, location=trigger.location,
                job_id=trigger.job_id, poll_interval=trigger.poll_interval,
                impersonation_chain=trigger.impersonation_chain)
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs,
                      timeout=timeout or self.execution_timeout)

    def logs_url(self, pipeline: dict[str, Any]) -> str:
        """Cloud Logging for the pipeline's custom job, else the pipeline's console page."""
        project = urllib.parse.quote(self.project_id)
        try:
            job_id = self.hook.extract_custom_job_id_from_training_pipeline(pipeline)
        except (KeyError, TypeError):
            pipeline_id = str(pipeline.get("name", "")).rpartition("/")[-1]
            return (f"https://console.cloud.google.com/vertex-ai/locations/{self.region}/training/"
                    f"{pipeline_id}/cpu?project={project}")
        query = urllib.parse.quote(f'resource.labels.job_id="{job_id}"', safe="")
        return f"https://console.cloud.google.com/logs/query;query={query}?project={project}"

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        if event["status"] != "error":
            return super().execute_complete(context, event)
        pipeline = event.get("job") or {}
        if not pipeline:  # the API failed while waiting, not the step
            raise TrainerStepRetriable(f"waiting for the training pipeline failed: {event['message']}")
        labels = pipeline.get("labels") or {}
        try_number = int(labels.get("try") or context["ti"].try_number)
        logs = self.logs_url(pipeline)
        record = read_status_record(self.command, context, self.gcp_conn_id, try_number)
        if record is not None and record.get("exit_code"):
            error = f"{self.step}: {record['error']}" if record.get("error") else ""
            raise_for_exit(self.step, int(record["exit_code"]), error, logs_url=logs)
        # No record of this try: the step never got to its end (image pull, out of memory,
        # preemption, cancellation). Retry as a crash.
        raise TrainerStepRetriable(f"{event['message']}; the step left no status record for try "
                                   f"{try_number} (retried; logs: {logs})")
