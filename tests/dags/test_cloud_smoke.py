"""`make cloud-smoke`'s plan and clean-up (deploy/cloud_smoke.py).

FAKED: Google Cloud itself, at the smoke test's own :class:`Cloud` interface (BigQuery datasets
and queries, Cloud Storage, Cloud Build, Artifact Registry, Vertex AI training pipelines): a
smoke test of a real project cannot run here. The production launcher path the smoke test
runs each step through is checked with the Vertex AI API faked at the provider hook, as the DAG
tests fake it (tests/dags/support/fake_launchers.py), and the GCS emulator holding the step's record.
:class:`FakeCloud` records every call and keeps state (datasets, objects, images, pipelines), so
the tests check what would be created, in what order, and that exactly that is deleted,
whatever fails.
"""

from __future__ import annotations

import datetime as dt
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "deploy"))
import cloud_smoke

SETTINGS = dict(project="acme-learn", region="europe-west1", bucket="acme-recsys",
                service_account="recsys-trainer@acme-learn.iam.gserviceaccount.com",
                poll_s=0, run_id="20261201103000abc123")
FINAL = cloud_smoke.FINAL_PIPELINE_STATES


class FakeCloud:
    """Stateful stand-in for the real services (see the module docstring)."""

    def __init__(self, *, fail_step: str | None = None, hang_step: str | None = None,
                 fail: set[str] = frozenset(), recommendations: dict | None = None,
                 foreign_labels: bool = False) -> None:
        self.calls: list[tuple] = []
        self.datasets: dict[str, dict] = {}
        self.objects: set[str] = {"gs://acme-recsys/recsys/models/LATEST"}  # not the smoke test's
        self.images: set[str] = set()
        self.jobs: dict[str, dict] = {}
        self.fail_step, self.hang_step, self.fail = fail_step, hang_step, fail
        self.foreign_labels = foreign_labels
        self.recommendations = recommendations or {"n": 3000, "slots": 3000, "users": 600}

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name in self.fail:
            raise RuntimeError(f"{name} refused (injected)")

    def create_dataset(self, dataset, location, labels):
        self._call("create_dataset", dataset, location, labels)
        self.datasets[dataset] = {"foreign": "team"} if self.foreign_labels else dict(labels)

    def dataset_labels(self, dataset):
        self._call("dataset_labels", dataset)
        return self.datasets.get(dataset)

    def delete_dataset(self, dataset):
        self._call("delete_dataset", dataset)
        del self.datasets[dataset]

    def delete_prefix(self, bucket, prefix):
        self._call("delete_prefix", bucket, prefix)
        gone = {o for o in self.objects if o.startswith(f"gs://{bucket}/{prefix}")}
        self.objects -= gone
        return len(gone)

    def build_image(self, image, tag):
        self._call("build_image", image, tag)
        self.images.add(f"{image}:{tag}")

    def delete_image(self, image, tag):
        self._call("delete_image", image, tag)
        self.images.remove(f"{image}:{tag}")

    def run_step(self, step, arguments, image_uri, started):
        """As the production launcher: the pipeline exists (``started``), then the step ends."""
        self._call("run_step", step)
        n = len(self.jobs) + 1
        name = f"projects/acme-learn/locations/europe-west1/trainingPipelines/{n}"
        state = {self.fail_step: "PIPELINE_STATE_FAILED", self.hang_step: "PIPELINE_STATE_RUNNING"}.get(
            step, "PIPELINE_STATE_SUCCEEDED")
        self.jobs[name] = {"step": step, "image": image_uri, "arguments": arguments, "state": state}
        started(name)
        if state == "PIPELINE_STATE_FAILED":
            raise cloud_smoke.SmokeFailed(f"{step}: {step}: bad input (exit 2: permanent, not retried)")
        if state == "PIPELINE_STATE_RUNNING":
            raise cloud_smoke.SmokeFailed(f"{step}: training pipeline {name} still running after 0s")
        self.objects.add(f"gs://acme-recsys/recsys-smoke/{SETTINGS['run_id']}/{step}.json")
        # Submitted at minute n, started after 60 + 10n seconds, ran 30 s.
        created = dt.datetime(2026, 12, 1, 10, n, tzinfo=dt.UTC)
        began = created + dt.timedelta(seconds=60 + 10 * n)
        return cloud_smoke.StepTimes(name, created, began, began + dt.timedelta(seconds=30))

    def pipeline_state(self, pipeline):
        self._call("pipeline_state", pipeline)
        return self.jobs[pipeline]["state"]

    def cancel_pipeline(self, pipeline):
        self._call("cancel_pipeline", pipeline)
        self.jobs[pipeline]["state"] = "PIPELINE_STATE_CANCELLED"

    def query(self, sql):
        self._call("query", sql)
        if "recommendations_latest" in sql:
            return [{"run_date": cloud_smoke.RUN_DATE}]
        return [self.recommendations]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls if c[0] not in ("pipeline_state", "dataset_labels")]

    def left_behind(self) -> list[str]:
        """What a smoke run created and did not delete."""
        ours = [f"dataset {d}" for d in self.datasets]
        ours += [f"object {o}" for o in self.objects if "/recsys-smoke/" in o]
        ours += [f"image {i}" for i in self.images]
        ours += [f"pipeline {n}" for n, j in self.jobs.items() if j["state"] not in FINAL]
        return ours


def _run(cloud: FakeCloud, **overrides) -> tuple[int, cloud_smoke.SmokeTest]:
    smoke = cloud_smoke.SmokeTest(cloud, cloud_smoke.Settings(**{**SETTINGS, **overrides}))
    return smoke.run(), smoke


def test_a_passing_run_runs_every_step_on_the_built_image_then_deletes_all_it_created():
    cloud = FakeCloud()
    code, _ = _run(cloud)
    assert code == 0
    steps = [j["step"] for j in cloud.jobs.values()]
    every_task = {p.stem for p in (REPO / "recommend_task" / "trainer").glob("*_task.py")}
    assert steps[0] == "seed_events" and set(steps[1:]) == every_task and len(steps) == 10
    image = "europe-west1-docker.pkg.dev/acme-learn/recsys/trainer:smoke-20261201103000abc123"
    for job in cloud.jobs.values():
        assert job["image"] == image
        assert "recsys_smoke_20261201103000abc123" in job["arguments"]  # the throwaway dataset only
    assert cloud.names() == ["create_dataset", "build_image", *["run_step"] * 10, "query", "query",
                             "delete_image", "delete_prefix", "delete_dataset"]
    assert cloud.left_behind() == []
    assert cloud.objects == {"gs://acme-recsys/recsys/models/LATEST"}  # the bucket's own objects stay


def test_a_passing_run_reports_each_steps_vertex_start_up_and_their_median(caplog):
    """What a job per step costs on Vertex AI (machine and image pull before the step starts),
    measured by the real run from each job's create and start times: docs/comparison.md."""
    with caplog.at_level("INFO"):
        code, smoke = _run(FakeCloud())
    assert code == 0
    assert smoke.startup_s == {step: 60 + 10 * n for n, (step, _) in
                               enumerate(cloud_smoke.steps(cloud_smoke.Settings(**SETTINGS)), 1)}
    assert "train_task succeeded: 90s from submission to start (machine, image pull), then ran 30s" \
        in caplog.text
    assert "; median 115s" in caplog.text  # 70..160 s over the ten jobs


def test_a_failed_step_stops_the_plan_and_everything_created_is_deleted(caplog):
    cloud = FakeCloud(fail_step="train_task")
    code, smoke = _run(cloud)
    assert code == 1
    assert [j["step"] for j in cloud.jobs.values()][-1] == "train_task"  # nothing after it started
    assert "query" not in cloud.names()
    assert cloud.left_behind() == [] and not smoke.cleanup_errors
    assert "train_task: train_task: bad input (exit 2: permanent, not retried)" in caplog.text


def test_a_pipeline_that_outlives_its_timeout_is_cancelled_by_the_clean_up():
    cloud = FakeCloud(hang_step="evaluate_task")
    code, _ = _run(cloud, job_timeout_s=0)
    assert code == 1
    cancelled = [c[1] for c in cloud.calls if c[0] == "cancel_pipeline"]
    assert [cloud.jobs[n]["step"] for n in cancelled] == ["evaluate_task"]
    assert cloud.left_behind() == []


def test_a_failed_build_deletes_the_dataset_and_prefix_but_no_image_it_never_pushed():
    cloud = FakeCloud(fail={"build_image"})
    code, smoke = _run(cloud)
    assert code == 1 and "run_step" not in cloud.names()
    assert "delete_image" not in cloud.names()
    assert cloud.left_behind() == [] and not smoke.cleanup_errors


def test_a_dataset_that_could_not_be_created_is_never_deleted():
    cloud = FakeCloud(fail={"create_dataset"})
    code, _ = _run(cloud)
    assert code == 1
    assert cloud.names() == ["create_dataset"]  # nothing else created, nothing deleted


def test_a_dataset_without_this_runs_label_is_left_alone_and_reported():
    cloud = FakeCloud(foreign_labels=True)
    code, smoke = _run(cloud)
    assert code == 1
    assert "delete_dataset" not in cloud.names()
    assert smoke.cleanup_errors == [f"dataset recsys_smoke_{SETTINGS['run_id']}: SmokeFailed: dataset "
                                    f"recsys_smoke_{SETTINGS['run_id']} is not this smoke run's: left alone"]


def test_one_failed_deletion_does_not_stop_the_others_and_fails_the_run(caplog):
    cloud = FakeCloud(fail={"delete_image"})
    code, smoke = _run(cloud)
    assert code == 1
    assert cloud.datasets == {} and not [o for o in cloud.objects if "/recsys-smoke/" in o]
    assert len(smoke.cleanup_errors) == 1 and smoke.cleanup_errors[0].startswith("image smoke-")
    assert "clean-up incomplete, delete by hand: image smoke-" in caplog.text


@pytest.mark.parametrize("rows", [{"n": 0, "slots": 0, "users": 0},
                                  {"n": 3001, "slots": 3000, "users": 600},  # a duplicated slot
                                  {"n": 3600, "slots": 3600, "users": 600}])  # more than N per user
def test_recommendations_that_are_missing_or_duplicated_fail_the_smoke_test(rows, caplog):
    cloud = FakeCloud(recommendations=rows)
    code, _ = _run(cloud)
    assert code == 1 and cloud.left_behind() == []
    assert f"recommendations for {dt.date(2026, 11, 29)}: {rows}" in caplog.text


@pytest.mark.parametrize("exit_code", [0, 2])
def test_each_step_runs_through_the_production_launcher(exit_code, emulators, monkeypatch):
    """The smoke test submits with the DAGs' own operator and Vertex launcher: the training
    pipeline as production submits it (image, command, service account, machine, labels), the
    trigger waited on, and the step's status record deciding the outcome."""
    import json
    import types

    from support.fake_launchers import FakeVertex

    from operators import contract

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}))
    vertex = FakeVertex().install(monkeypatch)
    settings = cloud_smoke.Settings(**{**SETTINGS, "bucket": "recsys-test", "project": FakeVertex.PROJECT,
                                       "region": FakeVertex.REGION})
    image = f"{settings.image}@sha256:" + "8" * 64

    def pipeline_runs(command, env):
        """The step's container: it writes its status record, as the trainer does, and exits."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        record = {"exit_code": exit_code, "error": "bad input" if exit_code else "",
                  "airflow_run_id": env[contract.AIRFLOW_RUN_ID_ENV],
                  "try": int(env[contract.TRY_NUMBER_ENV])}
        uri = contract.status_record_uri(settings.artifacts_uri, cloud_smoke.RUN_DATE.isoformat(),
                                         env[contract.STATUS_NAME_ENV])
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        storage.Client(project="test-project", credentials=AnonymousCredentials()).bucket(bucket).blob(
            name).upload_from_string(json.dumps(record))
        import io

        return types.SimpleNamespace(returncode=exit_code, stdout=io.StringIO(""), wait=lambda: exit_code,
                                     poll=lambda: exit_code, kill=lambda: None)

    monkeypatch.setattr("support.fake_launchers._run", pipeline_runs)
    started: list[str] = []
    launcher = cloud_smoke.ProductionLauncher(settings)
    arguments = ["--run-date", cloud_smoke.RUN_DATE.isoformat(), "--artifacts-uri", settings.artifacts_uri]
    if exit_code:
        with pytest.raises(cloud_smoke.SmokeFailed,
                           match=r"^train_task: train_task: bad input \(exit 2: permanent, not retried"):
            launcher.run("train_task", arguments, image, started.append)
    else:
        times = launcher.run("train_task", arguments, image, started.append)
        assert times.pipeline == started[0] and times.created <= times.ended
    [submitted] = vertex.submitted
    assert submitted["container_uri"] == image
    assert submitted["command"] == ["python", "-m", "trainer.train_task", *arguments]
    assert (submitted["service_account"], submitted["machine_type"]) == (
        SETTINGS["service_account"], "n1-standard-4")
    assert submitted["labels"]["dag"] == "cloud_smoke" and submitted["labels"]["try"] == "1"
    assert started == [next(iter(vertex.pipelines))]
