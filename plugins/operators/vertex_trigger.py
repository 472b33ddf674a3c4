"""Wait for a Vertex AI training pipeline, and cancel it when its task stops waiting for it.

The provider's ``CustomContainerTrainingJobTrigger`` only waits: when the task is killed, times
out, or is cleared or marked failed while deferred, the pipeline keeps running (and a retry
starts a second one writing the same run folder). This subclass cancels it then:

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
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.google.cloud.triggers.vertex_ai import CustomContainerTrainingJobTrigger
from airflow.triggers.base import TriggerEvent

DEFERRED = "deferred"


class CancellingTrainingPipelineTrigger(CustomContainerTrainingJobTrigger):
    """``CustomContainerTrainingJobTrigger`` that cancels its pipeline when its task is gone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The base class serializes a path inside the provider; ours must point here.
        self.trigger_class_path = f"{__name__}.{type(self).__name__}"
        self._cancel_sent = False
        self._done = False  # the pipeline reached a final state and its event went out

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in super().run():
                self._done = True
                yield event
        except asyncio.CancelledError:
            if not self._done:
                await self._cancel_if_task_left()
            raise

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed, cleared or marked the deferred task."""
        if not self._done:
            await self._cancel("its task was stopped by a user")

    async def _cancel_if_task_left(self) -> None:
        try:
            state = await self._task_state()
        except Exception as exc:  # the API server unreachable: leave the job, say so
            self.log.warning("could not read the task's state (%s); training pipeline %s left running",
                             type(exc).__name__, self.job_id)
            return
        if state == DEFERRED:
            self.log.info("triggerer stopping while the task still waits: training pipeline %s keeps "
                          "running and the next triggerer resumes waiting for it", self.job_id)
            return
        await self._cancel(f"its task is no longer waiting for it (state {state})")

    async def _task_state(self) -> str | None:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        ti = self.task_instance
        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index)
        # The API keys a mapped task instance (one shard) as "<task_id>_<map_index>".
        key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
        state = (states.get(ti.run_id) or {}).get(key)
        return None if state is None else str(getattr(state, "value", state))

    async def _cancel(self, why: str) -> None:
        if self._cancel_sent:
            return
        self._cancel_sent = True
        try:
            client = await self.async_hook.get_pipeline_service_client(region=self.location)
            name = client.training_pipeline_path(self.project_id, self.location, self.job_id)
            self.log.warning("cancelling training pipeline %s: %s", name, why)
            await client.cancel_training_pipeline(request={"name": name})
        except Exception as exc:
            self.log.warning("cancelling training pipeline %s failed: %s: %s", self.job_id,
                             type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
