"""Every runtime's launcher passes the launcher contract (tests/dags/support/launcher_contract.py).

FAKE: the Docker engine API and the Vertex AI API (tests/dags/support/fake_launchers.py), each running
the step's command as a local process; the local launcher runs it through the standard
provider's SubprocessHook for real. The launchers, the exit-code rule, the status record and the
Vertex trigger are the real code.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.fake_launchers import FakeDockerEngine, FakeVertex
from support.launcher_contract import RUN_ID, LauncherContract


class TestLocalLauncher(LauncherContract):
    runtime = "local"

    def pinned_image(self) -> str:
        from operators.image_pinning import local_fingerprint

        return local_fingerprint("recsys-trainer:dev", self.source)

    def unpinned_image(self) -> str:
        return "recsys-trainer:dev"

    def launch_settings(self) -> dict[str, Any]:
        from support.fake_launchers import TRAINER_PY

        return {"python": TRAINER_PY, "trainer_source": str(self.source)}


class TestDockerLauncher(LauncherContract):
    runtime = "docker"

    def install(self) -> None:
        self.monkeypatch.setattr("support.fake_launchers.CWD", str(self.source))
        self.image_id = FakeDockerEngine.image_id("recsys-trainer:dev")
        self.engine = FakeDockerEngine({"recsys-trainer:dev": self.image_id}).install(self.monkeypatch)

    def pinned_image(self) -> str:
        return self.image_id

    def unpinned_image(self) -> str:
        return "recsys-trainer:dev"

    def launch_settings(self) -> dict[str, Any]:
        return {"docker_url": "unix:///nowhere.sock", "network_mode": "none"}

    def launched(self) -> list[str]:
        return [c["image"] for c in self.engine.created]


class TestVertexLauncher(LauncherContract):
    runtime = "vertex"
    allowlist = ("europe-west1-docker.pkg.dev/test-project/recsys/trainer:",)

    def install(self) -> None:
        self.monkeypatch.setattr("support.fake_launchers.CWD", str(self.source))
        self.monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}))
        self.vertex = FakeVertex().install(self.monkeypatch)

    def pinned_image(self) -> str:
        return "europe-west1-docker.pkg.dev/test-project/recsys/trainer@sha256:" + "7" * 64

    def unpinned_image(self) -> str:
        return "europe-west1-docker.pkg.dev/test-project/recsys/trainer:prod"

    def launch_settings(self) -> dict[str, Any]:
        return {"project_id": FakeVertex.PROJECT, "region": FakeVertex.REGION,
                "machine_type": "n1-standard-4", "poll_interval": 1}

    def launched(self) -> list[str]:
        return [s["container_uri"] for s in self.vertex.submitted]

    def defers(self) -> bool:
        return True

    def finish(self, op, context, deferred) -> Any:
        async def first_event():
            return (await deferred.trigger.run().__anext__()).payload

        assert deferred.method_name == "execute_complete"
        return op.execute_complete(context, asyncio.run(first_event()))

    def stop_deferred(self, deferred) -> None:
        """The task is killed while deferred: the triggerer cancels the trigger, which finds its
        task no longer deferred and cancels the pipeline."""
        from types import SimpleNamespace

        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        self.monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(
            lambda dag_id, task_ids, run_ids, map_index=None, **_: {run_ids[0]: {task_ids[0]: "failed"}}))
        trigger = deferred.trigger
        trigger.task_instance = SimpleNamespace(dag_id="contract", task_id="exit_with", run_id=RUN_ID,
                                                map_index=-1)

        async def wait_then_cancel():
            waiting = asyncio.ensure_future(trigger.run().__anext__())
            await asyncio.sleep(0.5)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

        asyncio.run(wait_then_cancel())
        assert len(self.vertex.cancelled) == 1
