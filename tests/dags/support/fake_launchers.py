"""FAKES of the two launch APIs that have no local stand-in yet, each replaced at its narrowest
point, and each running the real trainer step it is asked to run:

* Vertex AI (no emulator exists): the provider hook's submit and list calls, and the async
  pipeline-service client the provider's trigger polls. A "training pipeline" is the container's
  command run with the trainer's interpreter and the job's environment variables.
* The Docker engine API (``docker.APIClient`` behind the provider's DockerHook): a "container"
  is the same subprocess. It lets the DAG tests cover the docker runtime's operator at both ends
  of the supported Airflow range; tests/docker/ runs the real image in a real engine.

Everything above them (the stock operators, the trigger, Airflow's deferral, the status record,
the exit-code rule) is real, and the steps talk to the BigQuery and GCS emulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[3]
TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
# Where a "container" or "pipeline" runs its command: `python -m trainer.<step>` imports the
# trainer package found there first (a test may point it at a stand-in trainer).
CWD: str | None = None


def _run(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    assert command[:2] == ["python", "-m"], command
    return subprocess.Popen([TRAINER_PY, *command[1:]], env={**os.environ, **env}, text=True, cwd=CWD,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


class FakeVertex:
    """Training pipelines as local processes; records submissions and cancellations."""

    PROJECT, REGION = "test-project", "europe-west1"

    def __init__(self) -> None:
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.submitted: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self._ids = itertools.count(1000)

    def name(self, pipeline_id: str) -> str:
        return f"projects/{self.PROJECT}/locations/{self.REGION}/trainingPipelines/{pipeline_id}"

    def add(self, labels: dict[str, str], state: str, proc: subprocess.Popen | None = None) -> str:
        pipeline_id = str(next(self._ids))
        self.pipelines[pipeline_id] = {"labels": dict(labels), "state": state, "proc": proc, "output": "",
                                       "created": dt.datetime.now(dt.UTC)}
        return pipeline_id

    # CustomJobHook.submit_custom_container_training_job
    def submit(self, hook: Any, **kwargs: Any) -> Any:
        self.submitted.append(kwargs)
        proc = _run(list(kwargs["command"]), dict(kwargs.get("environment_variables") or {}))
        pipeline_id = self.add(kwargs["labels"], "PIPELINE_STATE_RUNNING", proc)
        return SimpleNamespace(name=pipeline_id, resource_name=self.name(pipeline_id),
                               wait_for_resource_creation=lambda: None)

    # CustomJobHook.list_training_pipelines
    def list(self, hook: Any, project_id: str, region: str, filter: str | None = None, **_: Any) -> list:
        from google.cloud.aiplatform_v1.types import PipelineState

        return [SimpleNamespace(name=self.name(pid), labels=p["labels"], create_time=p["created"],
                                state=PipelineState[self._state(pid)])
                for pid, p in self.pipelines.items()]

    def _state(self, pipeline_id: str) -> str:
        p = self.pipelines[pipeline_id]
        proc = p["proc"]
        if p["state"] == "PIPELINE_STATE_RUNNING" and proc is not None and proc.poll() is not None:
            p["output"] = proc.stdout.read()
            p["state"] = "PIPELINE_STATE_SUCCEEDED" if proc.returncode == 0 else "PIPELINE_STATE_FAILED"
        return p["state"]

    def proto(self, pipeline_id: str):
        from google.cloud.aiplatform_v1.types import PipelineState, TrainingPipeline

        p = self.pipelines[pipeline_id]
        return TrainingPipeline(
            name=self.name(pipeline_id), state=PipelineState[self._state(pipeline_id)], labels=p["labels"],
            create_time=p["created"], start_time=p["created"], end_time=dt.datetime.now(dt.UTC),
            training_task_metadata={"backingCustomJob": f"projects/{self.PROJECT}/locations/{self.REGION}/"
                                                        f"customJobs/{pipeline_id}9"})

    def async_client(self) -> Any:
        fake = self

        class Client:
            @staticmethod
            def training_pipeline_path(project: str, location: str, training_pipeline: str) -> str:
                return f"projects/{project}/locations/{location}/trainingPipelines/{training_pipeline}"

            async def get_training_pipeline(self, request: dict, **_: Any):
                pipeline_id = request["name"].rpartition("/")[-1]
                proc = fake.pipelines[pipeline_id]["proc"]
                if proc is not None:  # answer once the step is done: no 30 s poll sleeps in tests
                    await asyncio.to_thread(proc.wait)
                return fake.proto(pipeline_id)

            async def cancel_training_pipeline(self, request: dict, **_: Any) -> None:
                fake.cancelled.append(request["name"])
                pipeline_id = request["name"].rpartition("/")[-1]
                if pipeline_id in fake.pipelines:
                    fake.pipelines[pipeline_id]["state"] = "PIPELINE_STATE_CANCELLED"
                    proc = fake.pipelines[pipeline_id]["proc"]
                    if proc is not None and proc.poll() is None:  # the job's container stops
                        proc.kill()

        return Client()

    def install(self, monkeypatch) -> FakeVertex:
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import (
            CustomJobAsyncHook,
            CustomJobHook,
        )

        fake = self
        monkeypatch.setattr(CustomJobHook, "submit_custom_container_training_job",
                            lambda hook, **kw: fake.submit(hook, **kw))
        monkeypatch.setattr(CustomJobHook, "list_training_pipelines",
                            lambda hook, **kw: fake.list(hook, **kw))

        async def client(hook, region=None):
            return fake.async_client()

        monkeypatch.setattr(CustomJobAsyncHook, "get_pipeline_service_client", client)
        return self


class FakeDockerEngine:
    """``docker.APIClient`` for the calls DockerOperator and resolve_image make."""

    def __init__(self, images: dict[str, str]) -> None:
        self.images_by_ref = dict(images)  # reference -> image ID
        self.containers: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.pulled: list[str] = []

    @staticmethod
    def image_id(name: str) -> str:
        return "sha256:" + hashlib.sha256(name.encode()).hexdigest()

    def inspect_image(self, ref: str) -> dict:
        """As the engine answers: the image's ID and every tag naming it (no registry digests:
        nothing here was pulled)."""
        from docker.errors import ImageNotFound

        image_id = ref if ref in self.images_by_ref.values() else self.images_by_ref.get(ref)
        if image_id is None:
            raise ImageNotFound(f"No such image: {ref}")
        return {"Id": image_id, "RepoTags": [r for r, i in self.images_by_ref.items() if i == image_id],
                "RepoDigests": []}

    def tag(self, image: str, repository: str, tag: str | None = None, **_: Any) -> bool:
        self.images_by_ref[f"{repository}:{tag or 'latest'}"] = self.inspect_image(image)["Id"]
        return True

    def images(self, name: str | None = None) -> list:
        return [{"Id": self.images_by_ref[name]}] if name in self.images_by_ref else []

    def pull(self, ref: str, **_: Any):
        self.pulled.append(ref)
        raise AssertionError(f"no registry here: pull of {ref}")

    def create_host_config(self, **kwargs: Any) -> dict:
        return kwargs

    def create_container(self, *, command, image, environment, **kwargs: Any) -> dict:
        self.inspect_image(image)
        container_id = f"c{len(self.containers)}"
        self.containers[container_id] = {"command": command, "env": environment, "image": image}
        self.created.append({"image": image, "command": command, "environment": environment, **kwargs})
        return {"Id": container_id}

    def attach(self, container: str, **_: Any):
        def stream():
            proc = self.containers[container]["proc"]
            yield from (line.encode() for line in proc.stdout)
        return stream()

    def start(self, container: str) -> None:
        c = self.containers[container]
        c["proc"] = _run(list(c["command"]), dict(c["env"]))

    def wait(self, container: str) -> dict:
        return {"StatusCode": self.containers[container]["proc"].wait(), "Error": None}

    def stop(self, container: str) -> None:
        self.containers[container]["proc"].kill()

    def remove_container(self, container: str, **_: Any) -> None:
        self.containers[container]["removed"] = True

    def install(self, monkeypatch) -> FakeDockerEngine:
        from airflow.providers.docker.hooks.docker import DockerHook

        monkeypatch.setattr(DockerHook, "api_client", property(lambda hook: self))
        return self


class LoopbackRegistry:
    """FAKE of Artifact Registry's Docker API (manifest HEAD requests only), on loopback."""

    def __init__(self, tags: dict[str, str]) -> None:
        import http.server

        self.tags = dict(tags)  # "path:tag" -> digest
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []  # every Authorization header it was sent
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                registry.requests.append((self.path, self.headers.get("Accept", "")))
                if self.headers.get("Authorization"):
                    registry.authorizations.append(self.headers["Authorization"])
                path, _, reference = self.path.removeprefix("/v2/").partition("/manifests/")
                if reference in registry.tags.values():  # asked by digest
                    digest = reference
                else:
                    digest = registry.tags.get(f"{path}:{reference}")
                self.send_response(200 if digest else 404)
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@contextlib.contextmanager
def fake_vertex_runtime(monkeypatch, image: str = "test-project/recsys/trainer",
                        digest: str = "sha256:" + "5" * 64) -> Iterator[tuple[FakeVertex, str]]:
    """The vertex runtime as a run meets it here: ``image:prod`` in a loopback registry as the
    environment's Variable and allowlist, an anonymous Google connection, the Vertex API faked;
    yields (the fake Vertex, the reference resolve_image pins to)."""
    registry = LoopbackRegistry({f"{image}:prod": digest})
    try:
        monkeypatch.setenv("RECSYS_RUNTIME", "vertex")
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}))
        monkeypatch.setenv("RECSYS_IMAGE_ALLOWLIST", f"{registry.host}/{image}:")
        monkeypatch.setenv("AIRFLOW_VAR_RECSYS_TRAINER_IMAGE", f"{registry.host}/{image}:prod")
        yield FakeVertex().install(monkeypatch), f"{registry.host}/{image}@{digest}"
    finally:
        registry.close()
