"""Wait for a Vertex AI training pipeline in the triggerer, and cancel it when its task stops
waiting for it.

The provider's ``CustomJobAsyncHook.wait_for_training_pipeline`` does the polling; the event
is the one the provider's own training-job triggers send (``status``, ``message``, ``job``), so a
task deferred by an earlier release resumes the same way. What the stock trigger does not do:
when the task is killed, times out, or is cleared or marked while deferred, the pipeline kept
running (and a retry started a second one writing the same run folder). This trigger cancels it:

* any Airflow 3: when the trigger is cancelled, it asks the API server for its task instance's
  state, as the provider's BigQuery trigger does on Airflow < 3.3. Still ``deferred`` means the
  triggerer itself is stopping (restart, rolling deploy): the job keeps running and the next
  triggerer resumes waiting. Anything else (a timeout sets ``scheduled``; a kill, a clear or a
  mark sets another state) cancels the pipeline. This is the only path on a trigger timeout,
  where Airflow 3.3 does not call ``on_kill``, and on 3.1, which has no ``on_kill``.
* Airflow 3.3+: ``on_kill``, which the triggerer calls on a user's action, cancels as well.

Cancelling twice is avoided; a failed cancel is logged, never raised (the triggerer is shared).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

DEFERRED = "deferred"
# Final states the step succeeded in (the provider's training-job triggers count PAUSED too).
SUCCEEDED = frozenset({"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_PAUSED"})


class TrainingPipelineTrigger(BaseTrigger):
    """Wait for training pipeline ``job_id``; cancel it when its task is gone."""

    def __init__(self, conn_id: str, project_id: str, location: str, job_id: str, poll_interval: int,
                 impersonation_chain: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.conn_id, self.project_id, self.location, self.job_id = conn_id, project_id, location, job_id
        self.poll_interval, self.impersonation_chain = poll_interval, impersonation_chain
        self.cancel_sent = False
        self.done = False  # the pipeline reached a final state and its event went out

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_id": self.conn_id, "project_id": self.project_id, "location": self.location,
                 "job_id": self.job_id, "poll_interval": self.poll_interval,
                 "impersonation_chain": self.impersonation_chain})

    def hook(self) -> Any:
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobAsyncHook

        return CustomJobAsyncHook(gcp_conn_id=self.conn_id, impersonation_chain=self.impersonation_chain)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.common.compat.sdk import AirflowException
        from google.cloud.aiplatform_v1.types import TrainingPipeline

        try:
            pipeline = await self.hook().wait_for_training_pipeline(
                project_id=self.project_id, location=self.location, pipeline_id=self.job_id,
                poll_interval=self.poll_interval)
        except asyncio.CancelledError:
            if not self.done:
                await self.cancel_if_task_left()
            raise
        except AirflowException as exc:  # the API failed while waiting, not the step
            self.done = True
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        self.done = True
        state = pipeline.state.name
        yield TriggerEvent({
            "status": "success" if state in SUCCEEDED else "error",
            "message": f"Custom Container Training Job {pipeline.name} completed with status {state}",
            "job": TrainingPipeline.to_dict(pipeline)})

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed, cleared or marked the deferred task."""
        if not self.done:
            await self.cancel("its task was stopped by a user")

    async def cancel_if_task_left(self) -> None:
        """Cancel the pipeline unless the task still waits for it (the triggerer is stopping)."""
        try:
            state = await self.task_state()
        except Exception as exc:  # the API server unreachable: leave the job, say so
            self.log.warning("could not read the task's state (%s); training pipeline %s left running",
                             type(exc).__name__, self.job_id)
            return
        if state == DEFERRED:
            self.log.info("triggerer stopping while the task still waits: training pipeline %s keeps "
                          "running and the next triggerer resumes waiting for it", self.job_id)
            return
        await self.cancel(f"its task is no longer waiting for it (state {state})")

    async def task_state(self) -> str | None:
        """This trigger's task instance's state, from Airflow's API server."""
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        ti = self.task_instance
        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index)
        # The API keys a mapped task instance (one shard) as "<task_id>_<map_index>".
        key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
        state = (states.get(ti.run_id) or {}).get(key)
        return None if state is None else str(getattr(state, "value", state))

    async def cancel(self, why: str) -> None:
        """Cancel the pipeline once; a failure is logged."""
        if self.cancel_sent:
            return
        self.cancel_sent = True
        try:
            client = await self.hook().get_pipeline_service_client(region=self.location)
            name = client.training_pipeline_path(self.project_id, self.location, self.job_id)
            self.log.warning("cancelling training pipeline %s: %s", name, why)
            await client.cancel_training_pipeline(request={"name": name})
        except Exception as exc:
            self.log.warning("cancelling training pipeline %s failed: %s: %s", self.job_id,
                             type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
