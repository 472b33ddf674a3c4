"""``vertex`` runtime: the step as a Vertex AI custom container training job.

Through the Google provider's ``CustomJobHook`` on training pipelines, in the shape of the
provider's own ``CreateCustomJobOperator``: submit, persist the console link, defer to a trigger
(:mod:`operators.launchers.vertex_trigger`) that waits for the pipeline and cancels it when the
task stops waiting, and on resuming read the step's status record. What production needs beyond
the stock operator:

* it never orphans a pipeline: the deferral carries the task's ``execution_timeout``, and the
  trigger cancels the pipeline when the task stops waiting for it (timeout, kill, clear, mark);
* it never duplicates one: a try first looks for an active pipeline of the same task instance
  (by its key label: exact DAG id, run id, task id and map index) and waits for that instead;
* a failed pipeline is reported with the step's own error from its status record, under the
  trainer's exit-code rule (exit 2 fails at once), with a link to the job's logs.

Imported only when a vertex task runs: the provider's Vertex modules take seconds to import.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

from operators.image_pinning import check_pinned
from operators.launchers.base import Deferral, Launcher
from operators.launchers.vertex_trigger import TrainingPipelineTrigger
from operators.macros import recsys_label
from operators.trainer_exit import TrainerStepRetriable, raise_for_exit, read_status_record

# Pipelines still doing the step: a retry waits for one of these instead of submitting another.
ACTIVE_STATES = frozenset({"PIPELINE_STATE_QUEUED", "PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING"})
# The label a try adopts a running pipeline by. The readable labels (dag, task, run) are
# lowercased and cut to 63 characters, so two runs can share them: a manual run id
# "backfill__2026-11-01t03-00-00-00-00" labels like the backfill of that date.
PIPELINE_KEY_LABEL = "key"


def pipeline_key(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """A label value naming exactly one task instance: 252 bits of the sha256 of its exact DAG id,
    run id, task id and map index (a label value holds at most 63 characters)."""
    exact = json.dumps([dag_id, run_id, task_id, -1 if map_index is None else int(map_index)])
    return hashlib.sha256(exact.encode()).hexdigest()[:63]


def pipeline_labels(ti: Any, shard: int | None) -> dict[str, str]:
    """The labels of this try's pipeline: readable ones to filter jobs by, and the key."""
    labels = {"app": "recsys", "dag": recsys_label(ti.dag_id), "task": recsys_label(ti.task_id),
              "run": recsys_label(ti.run_id), "try": str(ti.try_number)}
    if shard is not None:
        labels["shard"] = str(shard)
    labels[PIPELINE_KEY_LABEL] = pipeline_key(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
    return labels


def display_name(ti: Any, shard: int | None) -> str:
    """``recsys-<dag>-<task>[-<shard>]-<run>-try<n>``."""
    shard_part = f"-{shard}" if shard is not None else ""
    return f"recsys-{ti.dag_id}-{ti.task_id}{shard_part}-{recsys_label(ti.run_id)}-try{ti.try_number}"


class VertexLauncher(Launcher):
    """Submit (or adopt) this task instance's training pipeline and defer until it ends."""

    runtime = "vertex"

    def __init__(self, operator: Any) -> None:
        super().__init__(operator)
        launch = operator.launch
        self.project_id, self.region = launch["project_id"], launch["region"]
        self.poll_interval = int(launch.get("poll_interval", 30))
        self.impersonation_chain = launch.get("impersonation_chain")
        self._hook: Any = None

    @property
    def hook(self) -> Any:
        if self._hook is None:
            from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

            self._hook = CustomJobHook(gcp_conn_id=self.operator.gcp_conn_id,
                                       impersonation_chain=self.impersonation_chain)
        return self._hook

    def check_image(self, image: str) -> str:
        return check_pinned(image, self.operator.allowlist)

    def find_active_pipeline(self, key: str) -> Any | None:
        """The newest active training pipeline labelled with this task instance's key, if any."""
        pipelines = self.hook.list_training_pipelines(
            project_id=self.project_id, region=self.region, filter=f'labels.{PIPELINE_KEY_LABEL}="{key}"')
        active = [p for p in pipelines if p.state.name in ACTIVE_STATES
                  and p.labels.get(PIPELINE_KEY_LABEL) == key]
        return max(active, key=lambda p: p.create_time, default=None)

    def submit(self, ti: Any, labels: dict[str, str]) -> str:
        """Submit this try's pipeline; its id."""
        op, launch = self.operator, self.operator.launch
        job = self.hook.submit_custom_container_training_job(
            project_id=self.project_id, region=self.region, display_name=display_name(ti, op.shard),
            container_uri=op.image, command=op.command, staging_bucket=launch.get("staging_bucket"),
            service_account=launch.get("service_account"), machine_type=launch["machine_type"],
            accelerator_count=0,  # the image is CPU-only (implicit.cpu)
            replica_count=1, labels=labels, environment_variables=dict(op.environment))
        job.wait_for_resource_creation()
        return job.name

    def launch(self, context: Any) -> Deferral:
        from airflow.providers.google.cloud.links.vertex_ai import VertexAITrainingLink

        ti = context["ti"]
        labels = pipeline_labels(ti, self.operator.shard)
        running = self.find_active_pipeline(labels[PIPELINE_KEY_LABEL])
        if running is None:
            pipeline_id = self.submit(ti, labels)
        else:
            pipeline_id = running.name.rpartition("/")[-1]
            self.log.warning("training pipeline %s of this run's %s (try %s) is still %s: waiting for it "
                             "instead of submitting another", running.name, ti.task_id,
                             running.labels.get("try", "?"), running.state.name)
        ti.xcom_push(key="training_id", value=pipeline_id)
        VertexAITrainingLink.persist(context=context, training_id=pipeline_id)
        return Deferral(TrainingPipelineTrigger(
            conn_id=self.operator.gcp_conn_id, project_id=self.project_id, location=self.region,
            job_id=pipeline_id, poll_interval=self.poll_interval,
            impersonation_chain=self.impersonation_chain))

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

    def resume(self, context: Any, event: dict[str, Any]) -> None:
        pipeline = event.get("job") or {}
        if event["status"] != "error":
            try:
                job_id = self.hook.extract_custom_job_id_from_training_pipeline(pipeline)
            except (KeyError, TypeError):  # no custom job recorded on the pipeline
                return None
            context["ti"].xcom_push(key="custom_job_id", value=job_id)
            return None
        if not pipeline:  # the API failed while waiting, not the step
            raise TrainerStepRetriable(f"waiting for the training pipeline failed: {event['message']}")
        labels = pipeline.get("labels") or {}
        try_number = int(labels.get("try") or context["ti"].try_number)
        logs = self.logs_url(pipeline)
        op = self.operator
        record = read_status_record(op.artifacts_uri, op.run_date, context["ti"], op.gcp_conn_id, try_number)
        if record is not None and record.get("exit_code"):
            error = f"{op.step}: {record['error']}" if record.get("error") else ""
            raise_for_exit(op.step, int(record["exit_code"]), error, logs_url=logs)
        # No record of this try: the step never got to its end (image pull, out of memory,
        # preemption, cancellation). Retry as a crash.
        raise TrainerStepRetriable(f"{event['message']}; the step left no status record for try "
                                   f"{try_number} (retried; logs: {logs})")

    def kill(self) -> None:
        """Nothing runs here while the pipeline does: the task is deferred, and the trigger
        cancels the pipeline when its task stops waiting (:mod:`.vertex_trigger`)."""
