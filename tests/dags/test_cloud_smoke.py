"""`make cloud-smoke`'s plan and clean-up (deploy/cloud_smoke.py).

FAKED: Google Cloud itself, at the smoke test's own :class:`Cloud` interface (BigQuery datasets
and queries, Cloud Storage, Cloud Build, Artifact Registry, Vertex AI custom jobs): a smoke test
of a real project cannot run here. :class:`FakeCloud` records every call and keeps state
(datasets, objects, images, jobs), so the tests check what would be created, in what order, and
that exactly that is deleted, whatever fails.
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
FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


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

    def start_job(self, display_name, image_uri, command, service_account, machine_type, labels):
        self._call("start_job", display_name)
        step = command[2].removeprefix("trainer.")
        name = f"projects/acme-learn/locations/europe-west1/customJobs/{len(self.jobs) + 1}"
        state = {self.fail_step: "JOB_STATE_FAILED", self.hang_step: "JOB_STATE_RUNNING"}.get(
            step, "JOB_STATE_SUCCEEDED")
        self.jobs[name] = {"step": step, "image": image_uri, "command": command, "state": state,
                           "service_account": service_account, "labels": labels}
        if state == "JOB_STATE_SUCCEEDED":  # what the steps leave under the prefix
            self.objects.add(f"gs://acme-recsys/recsys-smoke/{SETTINGS['run_id']}/{step}.json")
        return name

    def job_state(self, job_name):
        self._call("job_state", job_name)
        job = self.jobs[job_name]
        return job["state"], "exit 2" if job["state"] == "JOB_STATE_FAILED" else ""

    def job_times(self, job_name):
        """Submitted at minute n, started after 60 + 10n seconds, ran 30 s (not a recorded call)."""
        n = int(job_name.rsplit("/", 1)[1])
        created = dt.datetime(2026, 12, 1, 10, n, tzinfo=dt.UTC)
        began = created + dt.timedelta(seconds=60 + 10 * n)
        return created, began, began + dt.timedelta(seconds=30)

    def cancel_job(self, job_name):
        self._call("cancel_job", job_name)
        self.jobs[job_name]["state"] = "JOB_STATE_CANCELLED"

    def query(self, sql):
        self._call("query", sql)
        if "recommendations_latest" in sql:
            return [{"run_date": cloud_smoke.RUN_DATE}]
        return [self.recommendations]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls if c[0] not in ("job_state", "dataset_labels")]

    def left_behind(self) -> list[str]:
        """What a smoke run created and did not delete."""
        ours = [f"dataset {d}" for d in self.datasets]
        ours += [f"object {o}" for o in self.objects if "/recsys-smoke/" in o]
        ours += [f"image {i}" for i in self.images]
        ours += [f"job {n}" for n, j in self.jobs.items() if j["state"] not in FINAL]
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
        assert job["image"] == image and job["command"][:2] == ["python", "-m"]
        assert job["service_account"] == SETTINGS["service_account"]
        assert job["labels"]["recsys-smoke"] == SETTINGS["run_id"]
        assert "recsys_smoke_20261201103000abc123" in job["command"]  # the throwaway dataset only
    assert cloud.names() == ["create_dataset", "build_image", *["start_job"] * 10, "query", "query",
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
    assert "train_task: Vertex job projects/acme-learn/locations/europe-west1/customJobs/3 ended " \
           "JOB_STATE_FAILED: exit 2" in caplog.text


def test_a_job_that_outlives_its_timeout_is_cancelled_by_the_clean_up():
    cloud = FakeCloud(hang_step="evaluate_task")
    code, _ = _run(cloud, job_timeout_s=0)
    assert code == 1
    cancelled = [c[1] for c in cloud.calls if c[0] == "cancel_job"]
    assert [cloud.jobs[n]["step"] for n in cancelled] == ["evaluate_task"]
    assert cloud.left_behind() == []


def test_a_failed_build_deletes_the_dataset_and_prefix_but_no_image_it_never_pushed():
    cloud = FakeCloud(fail={"build_image"})
    code, smoke = _run(cloud)
    assert code == 1 and "start_job" not in cloud.names()
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
