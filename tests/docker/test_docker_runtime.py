"""recommend_train, recommend_predict, then recommend_feedback with RECSYS_RUNTIME=docker: real
Airflow (dag.test), the docker launcher (the Docker provider's hook) starting the real trainer
image in a real Docker engine, against the BigQuery and GCS emulators on this machine's loopback (host
networking), and the real Slack provider posting to a loopback receiver. No fake."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time

import pytest
from dags_conftest import REPO, load_dagbag
from support.sharded_runs import day_rows, same_recommendations, shard_tries
from support.tuning_runs import check_tuning_schedule

LOGICAL_DATE = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
RUN_DATE = dt.date(2026, 11, 29)
DATASET = "recsys_docker"
ARTIFACTS = "gs://recsys-test/docker"
TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
STEPS = ("create_cf_matrices_task", "train_task", "evaluate_task", "promote_model_task",
         "predict_window_task", "predict_task", "publish_predictions_task", "feedback_task", "seed_events",
         "report")


def _docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, **kwargs)


def _gcs_json(path: str) -> dict:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    return json.loads(client.bucket("recsys-test").blob(f"docker/{path}").download_as_bytes())


def test_the_image_runs_every_step_as_its_user_with_consistent_dependencies(trainer_image, capsys):
    # `pip check` ran in the build (recommend_task/Dockerfile), which then removed the installers.
    installers = _docker("run", "--rm", "--network", "none", trainer_image, "python", "-c",
                         "import importlib.util as u; "
                         "print([m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)])")
    assert installers.stdout.strip() == "[]", installers.stdout + installers.stderr
    user = _docker("run", "--rm", "--network", "none", trainer_image, "id", "-u")
    assert user.stdout.strip() not in ("", "0"), user
    for step in STEPS:
        helped = _docker("run", "--rm", "--network", "none", trainer_image, "python", "-m", f"trainer.{step}",
                         "--help")
        assert helped.returncode == 0 and "usage:" in helped.stdout, (step, helped.stderr[-500:])
    size = int(_docker("image", "inspect", "-f", "{{.Size}}", trainer_image).stdout)
    start = time.perf_counter()
    proc = subprocess.Popen(["docker", "run", "--rm", "--network", "none", trainer_image, "python", "-m",
                             "trainer.predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", "/tmp/a",
                             "--project", "p", "--validate-only"], stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    to_first_line = time.perf_counter() - start
    proc.communicate()
    assert "step predict_task starting" in first, first
    with capsys.disabled():  # figures a user relies on, in make test's output
        print(f"\ntrainer image: {size / 1e6:.0f} MB; "
              f"docker run to the step's first log line: {to_first_line:.2f}s")


def test_an_image_the_engine_names_outside_the_allowlist_is_refused_before_any_container(trainer_image):
    """What a user who may edit XCom can put in resolve_image's place, against the real engine:
    an image ID whose only tag is outside the allowlist, that tag, and the allowed but movable
    tag are each refused before any container exists, naming the image; the ID resolve_image
    pinned runs."""
    import re

    from operators.image_pinning import ImageNotAllowedError, docker_image_id
    from operators.trainer_step import TrainerStepOperator

    url = "unix:///var/run/docker.sock"
    other = subprocess.run(["docker", "build", "-q", "--network", "none", "-t", "evil/payload:v1", "-"],
                           input=f"FROM {trainer_image}\nLABEL recsys.test=evil\n", capture_output=True,
                           text=True, check=True).stdout.strip()
    pinned = docker_image_id(trainer_image, url)  # what resolve_image publishes
    assert other != pinned
    containers = _docker("ps", "-aq").stdout.split()

    def step(image: str) -> TrainerStepOperator:
        return TrainerStepOperator(task_id="predict", step="predict_task", image=image, arguments=["--help"],
                                   runtime="docker", environment={}, run_date="2026-11-29", artifacts_uri="",
                                   allowlist=("recsys-trainer:",),
                                   launch={"docker_url": url, "network_mode": "none"})

    try:
        for image, why in ((other, "the Docker engine names it evil/payload:v1"),
                           ("evil/payload:v1", "is not allowed"), (trainer_image, "is not pinned")):
            with pytest.raises(ImageNotAllowedError, match=f"^trainer image '{re.escape(image)}' .*{why}"):
                step(image).execute({})
        assert _docker("ps", "-aq").stdout.split() == containers
        step(pinned).execute({})
    finally:
        _docker("rmi", "evil/payload:v1")


@pytest.fixture
def docker_runtime(trainer_image, emulators, airflow_db, slack, monkeypatch):
    monkeypatch.setenv("RECSYS_RUNTIME", "docker")
    monkeypatch.setenv("RECSYS_DOCKER_NETWORK", "host")  # the emulators listen on this machine's loopback
    monkeypatch.setenv("RECSYS_DOCKER_URL", "unix:///var/run/docker.sock")
    monkeypatch.setenv("RECSYS_IMAGE_ALLOWLIST", "recsys-trainer:")
    monkeypatch.setenv("AIRFLOW_VAR_RECSYS_TRAINER_IMAGE", trainer_image)
    monkeypatch.setenv("RECSYS_BQ_DATASET", DATASET)
    monkeypatch.setenv("RECSYS_ARTIFACTS_URI", ARTIFACTS)
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project",
                    "--dataset", DATASET, "--end-date", str(RUN_DATE), "--days", "20", "--users", "400",
                    "--items", "100", "--events", "16000", "--clusters", "5", "--log-level", "WARNING"],
                   check=True, env=os.environ)
    return trainer_image


def test_train_then_predict_run_the_pinned_image_in_containers(docker_runtime, slack, monkeypatch):
    """The tag moves to another image as soon as the run has pinned it: every step still runs the
    pinned image ID (the moved tag names an image without the trainer, which would fail).
    Prediction runs unsharded, then in 3 shards (a container each): the same rows."""
    from airflow.utils import db

    from operators.trainer_step import TrainerStepOperator

    db.resetdb()  # this module's asset URI (ARTIFACTS) must not meet another module's
    pinned_id = _docker("image", "inspect", "-f", "{{.Id}}", docker_runtime).stdout.strip()
    # What the tag moves to: the same image without the trainer, so a step that ran the tag
    # instead of the pinned ID would fail.
    decoy = subprocess.run(["docker", "build", "-q", "--network", "none", "-"], input=(
        f"FROM {docker_runtime}\nUSER root\nRUN rm -rf /app/trainer\nUSER trainer\n"),
        capture_output=True, text=True, check=True).stdout.strip()
    original = TrainerStepOperator.execute

    def execute_after_moving_the_tag(self, context):
        _docker("tag", decoy, docker_runtime, check=True)
        return original(self, context)

    monkeypatch.setattr(TrainerStepOperator, "execute", execute_after_moving_the_tag)
    slack.messages.clear()
    bag = load_dagbag()

    def run(dag_id: str, conf: dict, logical_date: dt.datetime = LOGICAL_DATE):
        _docker("tag", pinned_id, docker_runtime, check=True)  # the tag as the run starts
        try:
            return bag.dags[dag_id].test(logical_date=logical_date, run_conf=conf)
        finally:  # the tag back where it was: the next tests use it
            _docker("tag", pinned_id, docker_runtime, check=True)

    train = run("recommend_train", {"lookback_days": 20, "factors": 16, "iterations": 8})
    unsharded = run("recommend_predict", {"lookback_days": 20, "n_recommendations": 4})
    assert str(train.state) == "success" and str(unsharded.state) == "success"
    one_shard = day_rows("test-project", DATASET, RUN_DATE)
    predict = run("recommend_predict", {"lookback_days": 20, "n_recommendations": 4, "n_shards": 3})
    assert str(predict.state) == "success"
    assert shard_tries(predict) == {0: ("success", 1), 1: ("success", 1), 2: ("success", 1)}
    assert same_recommendations(day_rows("test-project", DATASET, RUN_DATE), one_shard)

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    rows = {r["run_date"]: r["n"] for r in client.query(
        f"SELECT run_date, COUNT(*) AS n FROM `test-project.{DATASET}.recommendations` GROUP BY 1").result()}
    users = next(iter(client.query(
        f"""SELECT COUNT(DISTINCT user_id) AS n FROM `test-project.{DATASET}.events`
            WHERE event_date > '{RUN_DATE - dt.timedelta(days=20)}'""").result()))["n"]
    assert rows == {RUN_DATE: 4 * users}
    assert _gcs_json("models/LATEST")["model_id"] == _gcs_json(f"runs/{RUN_DATE}/candidate.json")["model_id"]

    for dag_run, tasks in ((train, ("create_cf_matrices", "train", "evaluate", "promote_model")),
                           (predict, ("predict.0", "predict.1", "predict.2", "publish_predictions"))):
        for task in tasks:
            status = _gcs_json(f"runs/{RUN_DATE}/status/{dag_run.dag_id}.{task}.json")
            assert (status["image"], status["exit_code"], status["airflow_run_id"]) == (
                pinned_id, 0, dag_run.run_id)
            assert status["uid"] != 0  # the image's own user, not root
    # The next day's events arrive; recommend_feedback measures the served day in a container.
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project",
                    "--dataset", DATASET, "--end-date", str(RUN_DATE + dt.timedelta(days=1)), "--days", "1",
                    "--users", "400", "--items", "100", "--events", "800", "--clusters", "5",
                    "--log-level", "WARNING"],
                   check=True, env=os.environ)
    feedback = run("recommend_feedback", {"lookback_days": 20},
                   LOGICAL_DATE + dt.timedelta(days=1, minutes=30))
    assert str(feedback.state) == "success"
    [served] = client.query(f"SELECT * FROM `test-project.{DATASET}.serving_metrics`").result()
    assert (served["served_date"], served["run_date"], served["image"], served["users_served"]) == (
        RUN_DATE, RUN_DATE + dt.timedelta(days=1), pinned_id, users)
    assert served["model_id"] == _gcs_json("models/LATEST")["model_id"]
    assert 0 < served["users_active"] <= served["users_served"] and 0 <= served["model_hit_rate"] <= 1
    status = _gcs_json(f"runs/{RUN_DATE + dt.timedelta(days=1)}/status/recommend_feedback.feedback.json")
    assert (status["image"], status["exit_code"], status["uid"] != 0) == (pinned_id, 0, True)

    texts = slack.texts()
    for dag_id in ("recommend_train", "recommend_predict"):
        success = [t for t in texts if t.startswith(f":white_check_mark: *{dag_id}*")]
        runs = 2 if dag_id == "recommend_predict" else 1  # unsharded, then 3 shards
        assert len(success) == runs and all(f"\nimage `{pinned_id}`\n" in t for t in success), texts
    assert re.search(r"rows written: \d+ for \d+ users", "\n".join(texts))


# The last release before the launchers and the contract module were redesigned: images and DAGs
# deploy apart, so an image built from its trainer must run under these DAGs.
PREVIOUS_RELEASE = "d02fad9c03275567b07b21df47ece11c9d2b4e55"


@pytest.fixture(scope="module")
def previous_release_image(trainer_image, tmp_path_factory) -> str:
    """The trainer image of PREVIOUS_RELEASE, built as `make image` builds (same base; the
    dependency layers come from the build cache)."""
    root = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE, "recommend_task",
                              "docker"], capture_output=True, check=False)
    assert archive.returncode == 0, (
        f"this test builds the trainer of {PREVIOUS_RELEASE[:7]} from the repository's history, which a "
        f"shallow clone lacks (clone without --depth): {archive.stderr.decode()[-300:]}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    tag = "recsys-trainer:previous-release"
    subprocess.run([str(root / "docker" / "build-image.sh"), "trainer", tag], check=True, capture_output=True)
    return tag


def test_an_image_of_the_previous_release_runs_under_these_dags(docker_runtime, previous_release_image):
    """Each step of recommend_train and recommend_predict runs the earlier image (its exit codes,
    attempt variables and status record read by this release's launchers), publishing a model
    and the day's recommendations."""
    from airflow.utils import db

    db.resetdb()  # this module's asset URI (ARTIFACTS) must not meet another module's
    pinned_id = _docker("image", "inspect", "-f", "{{.Id}}", previous_release_image).stdout.strip()
    assert pinned_id != _docker("image", "inspect", "-f", "{{.Id}}", docker_runtime).stdout.strip()
    bag = load_dagbag()
    image = {"image_uri": previous_release_image}
    train = bag.dags["recommend_train"].test(logical_date=LOGICAL_DATE, run_conf={
        "lookback_days": 20, "factors": 16, "iterations": 8, **image})
    predict = bag.dags["recommend_predict"].test(logical_date=LOGICAL_DATE, run_conf={
        "lookback_days": 20, "n_recommendations": 4, **image})
    assert (str(train.state), str(predict.state)) == ("success", "success")
    for dag_run, task in ((train, "promote_model"), (predict, "publish_predictions")):
        status = _gcs_json(f"runs/{RUN_DATE}/status/{dag_run.dag_id}.{task}.json")
        assert (status["image"], status["exit_code"], status["airflow_run_id"]) == (
            pinned_id, 0, dag_run.run_id)
    assert _gcs_json(f"runs/{RUN_DATE}/predictions.json")["image"] == pinned_id


def test_tuning_runs_on_its_schedule_in_containers(docker_runtime):
    """recommend_train with tune weekly, each step a container of the real image: a search, its
    trials in BigQuery; two days later the same settings reused."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    day = dt.date(2027, 6, 10)  # a window of its own
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project",
                    "--dataset", DATASET, "--end-date", str(day + dt.timedelta(days=2)), "--days", "22",
                    "--users", "300", "--items", "80", "--events", "30000", "--clusters", "4",
                    "--log-level", "WARNING"],
                   check=True, env=os.environ)
    client = bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    bag = load_dagbag()

    def train(run_date: dt.date, conf: dict):
        logical = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(3), tzinfo=dt.UTC)
        return bag.dags["recommend_train"].test(logical_date=logical, run_conf={
            "lookback_days": 20, "factors": 16, "iterations": 8, **conf})

    def states(run) -> dict[str, str]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            return {ti.task_id: str(ti.state) for ti in
                    session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id)}

    check_tuning_schedule(train, lambda sql: [dict(r) for r in client.query(sql).result()], states,
                          lambda table: f"test-project.{DATASET}.{table}", day)
