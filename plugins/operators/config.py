"""Deployment configuration, read from the environment once at parse time.

Parse time must stay cheap and side-effect free: environment only, never an Airflow
Variable, a connection, the metadata DB or the network. Values that must be chosen per run
(the image) are resolved at run time through templates instead.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

RUNTIMES = ("vertex", "docker", "local")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Client settings that must reach the trainer wherever it runs (emulators locally).
PASS_THROUGH_ENV = (
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "RECSYS_BQ_RETRY_DEADLINE_S",
    "RECSYS_GCS_RETRY_DEADLINE_S",
    "RECSYS_LOG_LEVEL",
    "RECSYS_STEP_MEMORY_GIB",  # the memory a step's pre-flight plans for on a shared machine
    # The trainer's clock (recommend_task/trainer/core/clock.py): set by the test suites, whose fixed
    # run dates must precede "today" in every runtime; unset in a deployment.
    "RECSYS_TODAY",
)


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


def _json_env(name: str) -> dict[str, str]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object mapping step -> value")
    return {str(k): str(v) for k, v in value.items()}


# A NamedTuple, not a frozen dataclass: every parse of every DAG file builds this class, and
# Python takes 3 ms to build a 28-field frozen dataclass against 0.5 ms for the NamedTuple.
class RecsysConfig(NamedTuple):
    """The deployment's configuration (immutable; ``load()`` builds it)."""

    runtime: str
    project: str
    dataset: str
    location: str
    artifacts_uri: str
    image_variable: str
    image_allowlist: tuple[str, ...]
    gcp_conn_id: str
    slack_conn_id: str
    writers_pool: str
    trainer_pool: str
    # vertex
    region: str
    staging_bucket: str
    service_account: str | None
    machine_types: dict[str, str]
    # docker
    docker_url: str
    docker_network: str | None
    # local
    trainer_python: str
    trainer_source: str
    # task defaults
    retries: int
    retry_delay: timedelta
    slack_timeout_s: int
    # retention (trainer/storage/retention.py): passed to the steps that create tables or promote
    recommendations_retention_days: int
    metrics_retention_days: int
    keep_models: int
    # wait_for_events: how long, how often, and what counts as a complete day
    events_wait_timeout: timedelta
    events_poke_interval_s: int
    events_min_fraction: float
    # recommend_freshness: day D must be published by this hour (UTC) on D + 1
    freshness_deadline_hour: int
    # recommend_train's `tune` param default: off | always | weekly (train_task --tune)
    tune: str = "weekly"
    # approve_anomalous_day: how long a person has to decide on an anomalous day
    approval_timeout: timedelta = timedelta(hours=4)

    def machine_type(self, step: str) -> str:
        return self.machine_types.get(step, self.machine_types.get("default", "n1-standard-4"))

    def passthrough_env(self) -> dict[str, str]:
        return {k: os.environ[k] for k in PASS_THROUGH_ENV if os.environ.get(k)}


TUNE_MODES = ("off", "always", "weekly")  # train_task --tune (trainer/tuning/schedule.py)


# A decision may wait at most this long: recommend_train's dagrun_timeout is 12 h plus the wait,
# and a run must end before the next day's starts (tests/dags/test_dag_integrity.py's budget).
MAX_APPROVAL_TIMEOUT = timedelta(hours=8)


def _approval_timeout(value: str) -> timedelta:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 60 <= seconds <= MAX_APPROVAL_TIMEOUT.total_seconds():
        limit = MAX_APPROVAL_TIMEOUT.total_seconds()
        raise ConfigError(f"RECSYS_APPROVAL_TIMEOUT_S={value!r} must be seconds from 60 to {limit:.0f} "
                          "(8 h: a run ends before the next day's)")
    return timedelta(seconds=seconds)


def load() -> RecsysConfig:
    """Build the configuration from ``RECSYS_*`` environment variables (see README)."""
    env = os.environ
    runtime = env.get("RECSYS_RUNTIME", "local").strip().lower()
    if runtime not in RUNTIMES:
        raise ConfigError(f"RECSYS_RUNTIME={runtime!r} is not one of {', '.join(RUNTIMES)}")
    if env.get("RECSYS_VERTEX_ACCELERATORS", "").strip():
        # implicit's GPU path needs CUDA libraries the image does not ship: a GPU would be paid
        # for and never used. Refuse rather than ignore.
        raise ConfigError("RECSYS_VERTEX_ACCELERATORS is not supported: the trainer image is CPU-only "
                          "(implicit.cpu); unset it and size RECSYS_VERTEX_MACHINE_TYPES instead")
    project = env.get("RECSYS_GCP_PROJECT", "local-project")
    artifacts_uri = env.get("RECSYS_ARTIFACTS_URI", "gs://recsys-artifacts/recsys").strip()
    if not artifacts_uri.startswith("gs://") or len(artifacts_uri) <= len("gs://"):
        # The sensors, the Slack summaries and the Docker and Vertex containers all read it.
        raise ConfigError(f"RECSYS_ARTIFACTS_URI={artifacts_uri!r} must be gs://BUCKET[/PREFIX] "
                          "(locally, a bucket of the GCS emulator)")
    region = env.get("RECSYS_VERTEX_REGION", "europe-west1")
    # Default: this project's Artifact Registry repository, and the locally built image.
    default_allowlist = f"{region}-docker.pkg.dev/{project}/recsys/trainer:,recsys-trainer:"
    allowlist = tuple(p.strip() for p in env.get("RECSYS_IMAGE_ALLOWLIST", default_allowlist).split(",")
                      if p.strip())
    for prefix in allowlist:
        # "…/trainer" would also allow "…/trainer-evil": an entry ends where a name part ends.
        if not prefix.endswith((":", "/", "@")):
            raise ConfigError(f"RECSYS_IMAGE_ALLOWLIST entry {prefix!r} must end with ':' (a repository), "
                              "'/' (a whole path) or '@' (digests only)")
    tune = env.get("RECSYS_TUNE", "weekly").strip().lower()
    if tune not in TUNE_MODES:
        raise ConfigError(f"RECSYS_TUNE={tune!r} is not one of {', '.join(TUNE_MODES)}")
    approval_timeout = _approval_timeout(env.get("RECSYS_APPROVAL_TIMEOUT_S", "14400"))
    return RecsysConfig(
        runtime=runtime,
        project=project,
        dataset=env.get("RECSYS_BQ_DATASET", "recsys"),
        location=env.get("RECSYS_BQ_LOCATION", "US"),
        artifacts_uri=artifacts_uri.rstrip("/"),
        image_variable=env.get("RECSYS_IMAGE_VARIABLE", "recsys_trainer_image"),
        image_allowlist=allowlist,
        gcp_conn_id=env.get("RECSYS_GCP_CONN_ID", "google_cloud_default"),
        slack_conn_id=env.get("RECSYS_SLACK_CONN_ID", "slack_recsys"),
        # One slot, counting deferred tasks: docker/airflow/pools.json, which deployments import.
        writers_pool=env.get("RECSYS_BQ_WRITERS_POOL", "recsys_bigquery_writers"),
        # Every other trainer step: backfills ignore max_active_runs and deferred Vertex steps hold
        # no worker, so only this pool bounds an environment's concurrent jobs (pools.json).
        trainer_pool=env.get("RECSYS_TRAINER_POOL", "recsys_trainer_jobs"),
        region=region,
        staging_bucket=env.get("RECSYS_VERTEX_STAGING_BUCKET", "gs://recsys-vertex-staging"),
        service_account=env.get("RECSYS_VERTEX_SERVICE_ACCOUNT") or None,
        machine_types=_json_env("RECSYS_VERTEX_MACHINE_TYPES")
        or {"default": "n1-standard-4", "train_task": "n1-highmem-8"},
        docker_url=env.get("RECSYS_DOCKER_URL", "unix://var/run/docker.sock"),
        docker_network=env.get("RECSYS_DOCKER_NETWORK") or None,
        trainer_python=env.get("RECSYS_TRAINER_PYTHON",
                               str(REPO_ROOT / ".venv" / "trainer" / "bin" / "python")),
        # What the local runtime's image reference is pinned to (a fingerprint of these sources).
        trainer_source=env.get("RECSYS_TRAINER_SOURCE", str(REPO_ROOT / "recommend_task")),
        retries=int(env.get("RECSYS_TASK_RETRIES", "2")),
        retry_delay=timedelta(seconds=float(env.get("RECSYS_RETRY_DELAY_S", "120"))),
        slack_timeout_s=int(env.get("RECSYS_SLACK_TIMEOUT_S", "5")),
        recommendations_retention_days=int(env.get("RECSYS_RECOMMENDATIONS_RETENTION_DAYS", "90")),
        metrics_retention_days=int(env.get("RECSYS_METRICS_RETENTION_DAYS", "730")),
        keep_models=int(env.get("RECSYS_KEEP_MODELS", "7")),
        events_wait_timeout=timedelta(seconds=float(env.get("RECSYS_EVENTS_WAIT_TIMEOUT_S", "21600"))),
        events_poke_interval_s=int(env.get("RECSYS_EVENTS_POKE_INTERVAL_S", "300")),
        events_min_fraction=float(env.get("RECSYS_EVENTS_MIN_FRACTION", "0.5")),
        freshness_deadline_hour=int(env.get("RECSYS_FRESHNESS_DEADLINE_HOUR", "8")),
        tune=tune,
        approval_timeout=approval_timeout,
    )
