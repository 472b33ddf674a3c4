"""A smoke test against a real Google Cloud project (opt-in: `make cloud-smoke`).

Everything else in this repository runs against emulators; IAM, Artifact Registry pulls, Vertex
AI quotas and real BigQuery DML first meet production on Composer. This script meets them on
purpose, with the caller's own credentials (``gcloud auth application-default login``):

1. creates a throwaway BigQuery dataset ``recsys_smoke_<id>`` (labelled, and with a one-day
   default table expiration, so even a crashed clean-up leaves nothing for long) and uses the
   prefix ``gs://BUCKET/recsys-smoke/<id>/`` for artifacts;
2. builds and pushes the trainer image with the trainer's own Cloud Build config
   (``recommend_task/cloudbuild.yaml``: unit tests, build, every step's ``--help``), tagged
   ``smoke-<id>``;
3. runs every step once as a Vertex AI custom job on that image, as the trainer's service
   account, on tiny synthetic data: seed_events, create_cf_matrices, train, evaluate, promote,
   predict (shard 0 of 1), publish_predictions;
4. checks the recommendations in BigQuery: the run date has rows, one per (user, rank), and
   ``recommendations_latest`` shows that day;
5. deletes what it created, and only that, whatever happened before: the jobs still running
   are cancelled, the dataset, the prefix's objects and the image tag deleted. A clean-up that
   fails is reported with what is left, and the exit code says so.

    .venv/airflow/bin/python deploy/cloud_smoke.py --project P --region R --bucket B \\
        --service-account recsys-trainer@P.iam.gserviceaccount.com

The IAM it needs (and the production service accounts need): docs/operations.md.
It cannot run in this repository's CI: deploy's tests (tests/dags/test_cloud_smoke.py) check the
plan and the clean-up with the cloud faked at the :class:`Cloud` interface.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("cloud_smoke")

REPO = Path(__file__).resolve().parents[1]
RUN_DATE = dt.date(2026, 11, 29)  # any past day: the synthetic events end the day after it
SEED_ARGS = ["--users", "600", "--items", "120", "--events", "25200", "--days", "21", "--clusters", "6"]
N_RECOMMENDATIONS = 5
DATASET_PREFIX = "recsys_smoke_"
GCS_PREFIX = "recsys-smoke"
LABEL = "recsys-smoke"


class SmokeFailed(Exception):
    """A step of the smoke test failed; the message names it."""


class Cloud(Protocol):
    """The cloud operations the smoke test performs: the seam the tests fake."""

    def create_dataset(self, dataset: str, location: str, labels: dict[str, str]) -> None: ...
    def delete_dataset(self, dataset: str) -> None: ...
    def dataset_labels(self, dataset: str) -> dict[str, str] | None: ...
    def delete_prefix(self, bucket: str, prefix: str) -> int: ...
    def build_image(self, image: str, tag: str) -> None: ...
    def delete_image(self, image: str, tag: str) -> None: ...
    def start_job(self, display_name: str, image_uri: str, command: list[str], service_account: str,
                  machine_type: str, labels: dict[str, str]) -> str: ...
    def job_state(self, job_name: str) -> tuple[str, str]: ...
    def job_times(self, job_name: str) -> tuple[dt.datetime, dt.datetime, dt.datetime]: ...
    def cancel_job(self, job_name: str) -> None: ...
    def query(self, sql: str) -> list[dict[str, Any]]: ...


@dataclasses.dataclass(frozen=True)
class Settings:
    project: str
    region: str
    bucket: str
    service_account: str
    location: str = "US"
    repository: str = "recsys"
    machine_type: str = "n1-standard-4"
    job_timeout_s: float = 3600
    poll_s: float = 30
    run_id: str = dataclasses.field(
        default_factory=lambda: f"{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}{secrets.token_hex(3)}")

    @property
    def dataset(self) -> str:
        return f"{DATASET_PREFIX}{self.run_id}"

    @property
    def prefix(self) -> str:
        return f"{GCS_PREFIX}/{self.run_id}/"

    @property
    def artifacts_uri(self) -> str:
        return f"gs://{self.bucket}/{self.prefix.rstrip('/')}"

    @property
    def image(self) -> str:
        return f"{self.region}-docker.pkg.dev/{self.project}/{self.repository}/trainer"

    @property
    def tag(self) -> str:
        return f"smoke-{self.run_id}"


def steps(s: Settings) -> list[tuple[str, list[str]]]:
    """Every step once, in pipeline order, with the arguments the DAGs would give it."""
    common = ["--project", s.project, "--dataset", s.dataset, "--location", s.location]
    run = [*common, "--artifacts-uri", s.artifacts_uri, "--run-date", RUN_DATE.isoformat()]
    next_day = RUN_DATE + dt.timedelta(days=1)
    return [
        ("seed_events", [*common, "--end-date", next_day.isoformat(), *SEED_ARGS]),
        ("create_cf_matrices_task", [*run, "--lookback-days", "20"]),
        ("train_task", [*run, "--factors", "16", "--iterations", "8"]),
        ("evaluate_task", run),
        ("promote_model_task", run),
        ("predict_window_task", [*run, "--lookback-days", "20", "--n-shards", "1"]),
        ("predict_task", [*run, "--lookback-days", "20", "--n-recommendations", str(N_RECOMMENDATIONS),
                          "--shard", "0", "--n-shards", "1"]),
        ("publish_predictions_task", [*run, "--n-shards", "1",
                                      "--n-recommendations", str(N_RECOMMENDATIONS)]),
        # The day after: what the served recommendations did (recommend_feedback).
        ("feedback_task", [*common, "--artifacts-uri", s.artifacts_uri, "--run-date", next_day.isoformat(),
                           "--lookback-days", "20"]),
        # A learner's erasure (recommend_forget): one seeded learner, from every table and file.
        ("forget_user_task", [*run, "--user-id", "u000"]),
    ]


class SmokeTest:
    """Runs the plan; remembers what it created so that clean-up deletes exactly that."""

    def __init__(self, cloud: Cloud, settings: Settings) -> None:
        self.cloud, self.s = cloud, settings
        self.created: list[tuple[str, str]] = []  # ("dataset"|"prefix"|"image"|"job", name)
        self.cleanup_errors: list[str] = []
        self.startup_s: dict[str, float] = {}  # step -> seconds from submission to start

    def run(self) -> int:
        """0: the smoke test passed and everything was deleted; 1 otherwise."""
        failure = None
        try:
            self._provision()
            for step, arguments in steps(self.s):
                self._run_step(step, arguments)
            self._check_recommendations()
            log.info("smoke test passed: every step ran on Vertex AI, recommendations are in BigQuery")
            log.info("Vertex start-up per step (submission to start), the price of a job per step: %s; "
                     "median %.0fs", ", ".join(f"{k} {v:.0f}s" for k, v in self.startup_s.items()),
                     statistics.median(self.startup_s.values()))
        except Exception as exc:  # reported, then cleaned up after, whatever it was
            failure = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SmokeFailed) else str(exc)
            log.error("smoke test FAILED: %s", failure)
        finally:
            self.clean_up()
        if self.cleanup_errors:
            log.error("clean-up incomplete, delete by hand: %s", "; ".join(self.cleanup_errors))
        return 1 if failure or self.cleanup_errors else 0

    def _provision(self) -> None:
        s = self.s
        labels = {LABEL: s.run_id}
        log.info("dataset %s.%s (%s)", s.project, s.dataset, s.location)
        self.cloud.create_dataset(s.dataset, s.location, labels)
        self.created.append(("dataset", s.dataset))
        # Before anything writes there, so a failure at any later point cleans the prefix.
        self.created.append(("prefix", s.prefix))
        log.info("building %s:%s with recommend_task/cloudbuild.yaml", s.image, s.tag)
        self.cloud.build_image(s.image, s.tag)
        # Cloud Build pushes `images:` only once every step has passed: a failed build pushed nothing.
        self.created.append(("image", s.tag))

    def _run_step(self, step: str, arguments: list[str]) -> None:
        s = self.s
        name = self.cloud.start_job(
            display_name=f"recsys-smoke-{s.run_id}-{step.replace('_', '-')}",
            image_uri=f"{s.image}:{s.tag}", command=["python", "-m", f"trainer.{step}", *arguments],
            service_account=s.service_account, machine_type=s.machine_type,
            labels={LABEL: s.run_id, "step": step.replace("_", "-")})
        self.created.append(("job", name))
        started = time.monotonic()
        while True:
            state, message = self.cloud.job_state(name)
            if state == "JOB_STATE_SUCCEEDED":
                created, began, ended = self.cloud.job_times(name)
                self.startup_s[step] = (began - created).total_seconds()
                log.info("%s succeeded: %.0fs from submission to start (machine, image pull), then ran "
                         "%.0fs (%s)", step, self.startup_s[step], (ended - began).total_seconds(), name)
                return
            if state in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"):
                raise SmokeFailed(f"{step}: Vertex job {name} ended {state}: {message}")
            if time.monotonic() - started > s.job_timeout_s:
                raise SmokeFailed(f"{step}: Vertex job {name} still {state} after {s.job_timeout_s:.0f}s")
            time.sleep(s.poll_s)

    def _check_recommendations(self) -> None:
        s = self.s
        table = f"`{s.project}.{s.dataset}.recommendations`"
        rows = self.cloud.query(
            f"SELECT COUNT(*) AS n, COUNT(DISTINCT CONCAT(user_id, '#', CAST(rank AS STRING))) AS slots, "
            f"COUNT(DISTINCT user_id) AS users FROM {table} WHERE run_date = '{RUN_DATE}'")[0]
        if not rows["n"] or rows["n"] != rows["slots"] or rows["n"] > rows["users"] * N_RECOMMENDATIONS:
            raise SmokeFailed(f"recommendations for {RUN_DATE}: {rows} (want rows > 0, one per user and "
                              f"rank, at most {N_RECOMMENDATIONS} per user)")
        latest = self.cloud.query(
            f"SELECT DISTINCT run_date FROM `{s.project}.{s.dataset}.recommendations_latest`")
        if [r["run_date"] for r in latest] != [RUN_DATE]:
            raise SmokeFailed(f"recommendations_latest shows {latest}, not {RUN_DATE}")
        log.info("recommendations: %d rows for %d users on %s", rows["n"], rows["users"], RUN_DATE)

    def clean_up(self) -> None:
        """Undo ``created`` in reverse order; every item is attempted even if one fails."""
        for kind, name in reversed(self.created):
            try:
                if kind == "job":
                    state, _ = self.cloud.job_state(name)
                    if state not in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                                     "JOB_STATE_EXPIRED"):
                        self.cloud.cancel_job(name)
                        log.info("cancelled %s", name)
                elif kind == "image":
                    self.cloud.delete_image(self.s.image, name)
                    log.info("deleted %s:%s", self.s.image, name)
                elif kind == "prefix":
                    count = self.cloud.delete_prefix(self.s.bucket, name)
                    log.info("deleted %d objects under gs://%s/%s", count, self.s.bucket, name)
                elif kind == "dataset":
                    labels = self.cloud.dataset_labels(name)
                    if labels is None:
                        continue
                    if not name.startswith(DATASET_PREFIX) or labels.get(LABEL) != self.s.run_id:
                        raise SmokeFailed(f"dataset {name} is not this smoke run's: left alone")
                    self.cloud.delete_dataset(name)
                    log.info("deleted dataset %s", name)
            except Exception as exc:
                self.cleanup_errors.append(f"{kind} {name}: {type(exc).__name__}: {exc}")


class GoogleCloud:
    """:class:`Cloud` on the real services, with the caller's application-default credentials."""

    def __init__(self, s: Settings) -> None:
        from google.cloud import aiplatform, bigquery, storage

        self.s = s
        self.bq = bigquery.Client(project=s.project, location=s.location)
        self.gcs = storage.Client(project=s.project)
        aiplatform.init(project=s.project, location=s.region)
        self.jobs = aiplatform.gapic.JobServiceClient(
            client_options={"api_endpoint": f"{s.region}-aiplatform.googleapis.com"})

    def create_dataset(self, dataset: str, location: str, labels: dict[str, str]) -> None:
        from google.cloud import bigquery

        ds = bigquery.Dataset(f"{self.s.project}.{dataset}")
        ds.location, ds.labels = location, labels
        ds.default_table_expiration_ms = 24 * 3600 * 1000
        self.bq.create_dataset(ds)  # never exists_ok: a name clash must not adopt a dataset

    def dataset_labels(self, dataset: str) -> dict[str, str] | None:
        from google.api_core.exceptions import NotFound

        try:
            return dict(self.bq.get_dataset(f"{self.s.project}.{dataset}").labels)
        except NotFound:
            return None

    def delete_dataset(self, dataset: str) -> None:
        self.bq.delete_dataset(f"{self.s.project}.{dataset}", delete_contents=True, not_found_ok=True)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        blobs = list(self.gcs.list_blobs(bucket, prefix=prefix))
        for blob in blobs:
            blob.delete()
        return len(blobs)

    def build_image(self, image: str, tag: str) -> None:
        repository = image.rsplit("/", 2)[-2]
        subprocess.run(
            ["gcloud", "builds", "submit", "recommend_task", "--project", self.s.project,
             "--config", "recommend_task/cloudbuild.yaml", "--substitutions",
             f"_ENV={tag},_REGION={self.s.region},_REPOSITORY={repository},SHORT_SHA={tag}"],
            cwd=REPO, check=True)

    def delete_image(self, image: str, tag: str) -> None:
        subprocess.run(["gcloud", "artifacts", "docker", "images", "delete", f"{image}:{tag}",
                        "--delete-tags", "--quiet", "--project", self.s.project], check=True)

    def start_job(self, display_name: str, image_uri: str, command: list[str], service_account: str,
                  machine_type: str, labels: dict[str, str]) -> str:
        job = {
            "display_name": display_name,
            "labels": labels,
            "job_spec": {
                "service_account": service_account,
                "worker_pool_specs": [{
                    "machine_spec": {"machine_type": machine_type},
                    "replica_count": 1,
                    "container_spec": {"image_uri": image_uri, "command": command},
                }],
            },
        }
        parent = f"projects/{self.s.project}/locations/{self.s.region}"
        return self.jobs.create_custom_job(parent=parent, custom_job=job).name

    def job_state(self, job_name: str) -> tuple[str, str]:
        job = self.jobs.get_custom_job(name=job_name)
        return job.state.name, job.error.message

    def job_times(self, job_name: str) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
        job = self.jobs.get_custom_job(name=job_name)
        return job.create_time, job.start_time, job.end_time

    def cancel_job(self, job_name: str) -> None:
        self.jobs.cancel_custom_job(name=job_name)

    def query(self, sql: str) -> list[dict[str, Any]]:
        return [dict(row.items()) for row in self.bq.query(sql).result()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True, help="Vertex AI and Artifact Registry region")
    parser.add_argument("--bucket", required=True, help="a bucket the artifacts prefix goes into")
    parser.add_argument("--service-account", required=True, help="the trainer's service account")
    parser.add_argument("--location", default="US", help="BigQuery location of the throwaway dataset")
    parser.add_argument("--machine-type", default="n1-standard-4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings(project=args.project, region=args.region, bucket=args.bucket,
                        service_account=args.service_account, location=args.location,
                        machine_type=args.machine_type)
    return SmokeTest(GoogleCloud(settings), settings).run()


if __name__ == "__main__":
    sys.exit(main())
