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
3. runs every step once on Vertex AI on that image, as the trainer's service account, on tiny
   synthetic data (seed_events, create_cf_matrices, train, evaluate, promote, predict_window,
   predict (shard 0 of 1), publish_predictions, feedback, forget), each through the production
   launcher: the DAGs' own ``TrainerStepOperator`` and its Vertex launcher submit the training
   pipeline, its trigger waits for it, and the step's status record decides the outcome, exactly
   as on Composer;
4. checks the recommendations in BigQuery: the run date has rows, one per (user, rank), and
   ``recommendations_latest`` shows that day;
5. deletes what it created, and only that, whatever happened before: the pipelines still
   running are cancelled, the dataset, the prefix's objects and the image tag deleted. A clean-up that
   fails is reported with what is left, and the exit code says so.

    .venv/airflow/bin/python deploy/cloud_smoke.py --project P --region R --bucket B \\
        --service-account recsys-trainer@P.iam.gserviceaccount.com

The IAM it needs (and the production service accounts need): docs/operations.md.
It cannot run in this repository's CI: deploy's tests (tests/dags/test_cloud_smoke.py) check the
plan and the clean-up with the cloud faked at the :class:`Cloud` interface, and the production
launcher path with the Vertex AI API faked at the provider hook (as the DAG tests fake it).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

log = logging.getLogger("cloud_smoke")

REPO = Path(__file__).resolve().parents[1]
RUN_DATE = dt.date(2026, 11, 29)  # any past day: the synthetic events end the day after it
SEED_ARGS = ["--users", "600", "--items", "120", "--events", "25200", "--days", "21", "--clusters", "6"]
N_RECOMMENDATIONS = 5
DATASET_PREFIX = "recsys_smoke_"
GCS_PREFIX = "recsys-smoke"
LABEL = "recsys-smoke"
FINAL_PIPELINE_STATES = ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED")


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
    def run_step(self, step: str, arguments: list[str], image_uri: str,
                 started: Callable[[str], None]) -> StepTimes: ...
    def pipeline_state(self, pipeline: str) -> str: ...
    def cancel_pipeline(self, pipeline: str) -> None: ...
    def query(self, sql: str) -> list[dict[str, Any]]: ...


class StepTimes(NamedTuple):
    """A finished step's training pipeline and when it was created, started and ended."""

    pipeline: str
    created: dt.datetime
    started: dt.datetime
    ended: dt.datetime


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
        self.created: list[tuple[str, str]] = []  # ("dataset"|"prefix"|"image"|"pipeline", name)
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
        # Recorded as soon as the pipeline exists, so a failure or a timeout still cancels it.
        times = self.cloud.run_step(step, arguments, f"{s.image}:{s.tag}",
                                    lambda pipeline: self.created.append(("pipeline", pipeline)))
        self.startup_s[step] = (times.started - times.created).total_seconds()
        log.info("%s succeeded: %.0fs from submission to start (machine, image pull), then ran "
                 "%.0fs (%s)", step, self.startup_s[step], (times.ended - times.started).total_seconds(),
                 times.pipeline)

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
                if kind == "pipeline":
                    if self.cloud.pipeline_state(name) not in FINAL_PIPELINE_STATES:
                        self.cloud.cancel_pipeline(name)
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


class ProductionLauncher:
    """A step run as the DAGs run it on Composer: ``TrainerStepOperator`` in the vertex runtime.

    Its Vertex launcher submits the custom container training pipeline through the provider's
    ``CustomJobHook`` (the smoke run's labels, machine type and service account), the operator
    defers to the launcher's trigger, which is run here as the triggerer would run it, and the
    operator resumes with its event, reading the step's status record: a step that fails raises
    the same error a task would. The caller's application-default credentials stand in for the
    Airflow connection (``AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT`` unset: Google's default)."""

    DAG_ID = "cloud_smoke"

    def __init__(self, s: Settings) -> None:
        self.s = s

    @property
    def hook(self) -> Any:
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

        return CustomJobHook(gcp_conn_id="google_cloud_default")

    def operator(self, step: str, arguments: list[str], image_uri: str) -> Any:
        sys.path.insert(0, str(REPO / "plugins"))
        from operators import contract
        from operators.trainer_step import TrainerStepOperator

        task_id = step.removesuffix("_task")
        return TrainerStepOperator(
            task_id=task_id, step=step, arguments=arguments, image=image_uri,
            runtime="vertex", run_date=RUN_DATE.isoformat(), artifacts_uri=self.s.artifacts_uri,
            allowlist=(f"{self.s.image}:",), gcp_conn_id="google_cloud_default",
            environment={contract.STATUS_NAME_ENV: contract.status_name(self.DAG_ID, task_id),
                         contract.AIRFLOW_RUN_ID_ENV: self.s.run_id, contract.TRY_NUMBER_ENV: "1",
                         contract.IMAGE_ENV: image_uri},
            launch={"project_id": self.s.project, "region": self.s.region,
                    "staging_bucket": f"gs://{self.s.bucket}/{self.s.prefix}staging",
                    "service_account": self.s.service_account, "machine_type": self.s.machine_type,
                    "poll_interval": max(1, int(self.s.poll_s))})

    def run(self, step: str, arguments: list[str], image_uri: str,
            started: Callable[[str], None]) -> StepTimes:
        """Run ``step`` to its end; raise :class:`SmokeFailed` naming the step's own error."""
        import asyncio
        from types import SimpleNamespace

        from airflow.providers.common.compat.sdk import TaskDeferred

        op = self.operator(step, arguments, image_uri)
        pushed: dict[str, Any] = {}

        def xcom_push(key: str, value: Any) -> None:
            pushed[key] = value
            if key == "training_id":
                started(value)

        ti = SimpleNamespace(dag_id=self.DAG_ID, task_id=op.task_id, run_id=self.s.run_id, try_number=1,
                             map_index=-1, xcom_push=xcom_push)
        context = {"ti": ti, "task": op, "run_id": self.s.run_id}
        try:
            op.execute(context)
            raise SmokeFailed(f"{step}: the Vertex launcher did not defer")
        except TaskDeferred as deferred:
            trigger = deferred.trigger

        async def first_event() -> dict[str, Any]:
            return (await trigger.run().__anext__()).payload

        try:
            event = asyncio.run(asyncio.wait_for(first_event(), self.s.job_timeout_s))
        except TimeoutError:
            raise SmokeFailed(f"{step}: training pipeline {pushed.get('training_id')} still running after "
                              f"{self.s.job_timeout_s:.0f}s") from None
        try:
            op.execute_complete(context, event)
        except Exception as exc:  # the task's own error: the step's ERROR line and exit code
            raise SmokeFailed(f"{step}: {exc}") from None
        job = event.get("job") or {}
        return StepTimes(pushed["training_id"], *(_when(job.get(k)) for k in ("create_time", "start_time",
                                                                             "end_time")))


def _when(value: Any) -> dt.datetime:
    """A pipeline's timestamp (the event's dict holds RFC 3339 strings)."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class GoogleCloud:
    """:class:`Cloud` on the real services, with the caller's application-default credentials."""

    def __init__(self, s: Settings) -> None:
        from google.cloud import bigquery, storage

        self.s = s
        self.bq = bigquery.Client(project=s.project, location=s.location)
        self.gcs = storage.Client(project=s.project)

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

    def run_step(self, step: str, arguments: list[str], image_uri: str,
                 started: Callable[[str], None]) -> StepTimes:
        return ProductionLauncher(self.s).run(step, arguments, image_uri, started)

    def pipeline_state(self, pipeline: str) -> str:
        return ProductionLauncher(self.s).hook.get_training_pipeline(
            project_id=self.s.project, region=self.s.region, training_pipeline=pipeline).state.name

    def cancel_pipeline(self, pipeline: str) -> None:
        ProductionLauncher(self.s).hook.cancel_training_pipeline(
            project_id=self.s.project, region=self.s.region, training_pipeline=pipeline)

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
