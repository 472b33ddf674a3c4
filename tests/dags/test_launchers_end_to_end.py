"""recommend_predict through the vertex and docker runtimes, end to end with real Airflow
(dag.test), the real trainer, the BigQuery/GCS emulators and the real Slack provider.

FAKE: the Vertex AI API, Artifact Registry's Docker API and the Docker engine API have no local
stand-in here; tests/dags/support/fake_launchers.py replaces each at its narrowest point with a stand-in
that runs the requested trainer command as a local process. The stock operators, the deferral
and its trigger, image pinning, the status record and the exit-code rule all run for real.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess

import pytest
from conftest import load_dagbag
from support.fake_launchers import (
    TRAINER_PY,
    FakeDockerEngine,
    fake_vertex_runtime,
)
from support.sharded_runs import check_sharded_predict
from support.tuning_runs import check_tuning_schedule

LOGICAL_DATE = dt.datetime(2026, 11, 30, 5, 0, tzinfo=dt.UTC)
RUN_DATE = LOGICAL_DATE.date() - dt.timedelta(days=1)
DATASET = "recsys_launchers"
ARTIFACTS = "gs://recsys-test/launchers"
PREDICT_CONF = {"lookback_days": 20, "n_recommendations": 3}
DIGEST = "sha256:" + "5" * 64
REGISTRY_IMAGE = "test-project/recsys/trainer"
DAY = {"vertex": 0, "docker": 10}  # each runtime writes its own days


def _trainer(step: str, *args: str) -> None:
    subprocess.run([TRAINER_PY, "-m", f"trainer.{step}", "--project", "test-project", "--dataset", DATASET,
                    "--log-level", "WARNING", *args], check=True, env=os.environ)


@pytest.fixture(scope="module")
def published_model(emulators, airflow_db, slack):
    """Events and a published model in a dataset and artifacts root of this module's own.

    The artifacts root is also the published-model asset's URI: Airflow deactivates an asset
    whose name is already taken by another URI, so this module gets a metadata DB of its own
    (reset before and after) and leaves the other modules' asset alone."""
    from airflow.utils import db

    db.resetdb()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_BQ_DATASET", DATASET)
        mp.setenv("RECSYS_ARTIFACTS_URI", ARTIFACTS)
        _trainer("seed_events", "--end-date", str(RUN_DATE + dt.timedelta(days=20)), "--days", "40",
                 "--users", "300", "--items", "80", "--events", "12000", "--clusters", "4")
        for step, extra in (("create_cf_matrices_task", ["--lookback-days", "20"]),
                            ("train_task", ["--factors", "8", "--iterations", "4"]),
                            ("evaluate_task", []), ("promote_model_task", [])):
            _trainer(step, "--run-date", str(RUN_DATE), "--artifacts-uri", ARTIFACTS, *extra)
        yield
    db.resetdb()


@pytest.fixture(params=["vertex", "docker"])
def runtime(request, published_model, monkeypatch):
    """Configure the runtime and install its fake launcher; yields (name, launcher, pinned image)."""
    monkeypatch.setenv("RECSYS_BQ_DATASET", DATASET)
    monkeypatch.setenv("RECSYS_ARTIFACTS_URI", ARTIFACTS)
    monkeypatch.setenv("RECSYS_RUNTIME", request.param)
    if request.param == "vertex":
        with fake_vertex_runtime(monkeypatch, REGISTRY_IMAGE, DIGEST) as (launcher, pinned):
            yield request.param, launcher, pinned
    else:
        image_id = FakeDockerEngine.image_id("recsys-trainer:dev")
        monkeypatch.setenv("RECSYS_IMAGE_ALLOWLIST", "recsys-trainer:")
        monkeypatch.setenv("AIRFLOW_VAR_RECSYS_TRAINER_IMAGE", "recsys-trainer:dev")
        launcher = FakeDockerEngine({"recsys-trainer:dev": image_id}).install(monkeypatch)
        yield request.param, launcher, image_id


def _predict(day: int, conf: dict | None = None):
    dag = load_dagbag().dags["recommend_predict"]
    return dag.test(logical_date=LOGICAL_DATE + dt.timedelta(days=day),
                    run_conf={**PREDICT_CONF, **(conf or {})})


def _states(run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: str(ti.state) for ti in
                session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id)}


def _days() -> dict[dt.date, int]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    return {r["run_date"]: r["n"] for r in client.query(
        f"SELECT run_date, COUNT(*) AS n FROM `test-project.{DATASET}.recommendations` GROUP BY 1").result()}


def _gcs_bucket():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    return client.bucket("recsys-test")


def _status(run_date: dt.date) -> dict:
    blob = _gcs_bucket().blob(f"launchers/runs/{run_date}/status/recommend_predict.predict.0.json")
    return json.loads(blob.download_as_bytes())


def _launched_images(name: str, launcher) -> list[str]:
    if name == "vertex":
        return [s["container_uri"] for s in launcher.submitted]
    return [c["image"] for c in launcher.created]


def test_predict_runs_the_pinned_image_and_slack_names_it(runtime, slack):
    name, launcher, pinned = runtime
    slack.messages.clear()
    run = _predict(DAY[name] + 1)
    assert str(run.state) == "success", _states(run)
    run_date = RUN_DATE + dt.timedelta(days=DAY[name] + 1)
    assert _days()[run_date] > 0
    # predict_window, predict (1 shard), publish: each by digest / ID.
    assert _launched_images(name, launcher) == [pinned] * 3
    if name == "docker":
        assert launcher.pulled == []  # run by ID: nothing to pull
    status = _status(run_date)
    assert (status["image"], status["try"], status["exit_code"]) == (pinned, 1, 0)
    success = [t for t in slack.texts() if t.startswith(":white_check_mark: *recommend_predict*")]
    assert len(success) == 1 and f"\nimage `{pinned}`\n" in success[0], slack.texts()
    if name == "vertex":  # the task's "Vertex AI Training" link, computed as the try ended
        link = _xcom(run, "predict", "training_conf")
        found = re.fullmatch(r"https://console\.cloud\.google\.com/vertex-ai/locations/([a-z0-9-]+)/training/"
                             r"([^/]+)/cpu\?project=test-project", link or "")
        assert found and found.group(2) in launcher.pipelines, link


def _xcom(run, task_id: str, key: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id,
                                                 key=key).one_or_none()
        return None if row is None else XComModel.deserialize_value(row)


def test_a_permanent_error_fails_at_once_with_the_trainers_message(runtime, slack, capfd):
    name, launcher, _ = runtime
    bucket = _gcs_bucket()
    pointer = json.loads(bucket.blob("launchers/models/LATEST").download_as_bytes())
    model = bucket.blob(pointer["model_uri"].removeprefix("gs://recsys-test/") + "/model.npz")
    good = model.download_as_bytes()
    model.upload_from_string(b"damaged")
    slack.messages.clear()
    capfd.readouterr()
    try:
        run = _predict(DAY[name] + 2)
    finally:
        model.upload_from_string(good)
    assert str(run.state) == "failed" and _states(run)["predict"] == "failed"
    # predict_window prepares nothing over a model that does not load; predict fails in one try.
    assert _states(run)["predict_window"] == "success"
    assert len(_launched_images(name, launcher)) == 2
    texts = slack.texts()
    failed = [t for t in texts if "Task *predict* of *recommend_predict* failed" in t]
    assert len(failed) == 1 and "try 1/2" in failed[0] and not [t for t in texts if "will be retried" in t]
    error = failed[0].split("\nError: ")[1].splitlines()[0]
    assert error.startswith("predict_task: checksum mismatch for gs://recsys-test/launchers/models/"), error
    assert "(exit 2: permanent, not retried" in error
    if name == "vertex":  # the job's logs, since its output is not in the task log
        logs = "; logs: https://console.cloud.google.com/logs/query;query=resource.labels.job_id%3D%22"
        assert logs in error
    else:
        assert "ERROR: predict_task: checksum mismatch" in capfd.readouterr().out
    assert _status(RUN_DATE + dt.timedelta(days=DAY[name] + 2))["exit_code"] == 2


def test_a_transient_error_is_retried(runtime, slack, monkeypatch, unavailable_bigquery):
    name, launcher, _ = runtime
    bigquery = os.environ["BIGQUERY_EMULATOR_HOST"]
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", unavailable_bigquery)
    monkeypatch.setenv("RECSYS_BQ_RETRY_DEADLINE_S", "2")
    slack.messages.clear()
    run = _predict(DAY[name] + 3)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery)
    # The run's first step to query BigQuery meets the outage: predict_window.
    assert str(run.state) == "failed" and _states(run)["predict_window"] == "failed"
    assert len(_launched_images(name, launcher)) == 2  # retried once (RECSYS_TASK_RETRIES=1)
    texts = slack.texts()
    retry = [t for t in texts if "Task *predict_window* of *recommend_predict* will be retried" in t]
    failed = [t for t in texts if "Task *predict_window* of *recommend_predict* failed" in t]
    assert len(retry) == 1 and len(failed) == 1, texts
    for text in (retry[0], failed[0]):
        expected = (r"Error: predict_window_task: RetryError: .*ServiceUnavailable.*"
                    r"\(exit 75: transient, retried")
        assert re.search(expected, text), text
    if name == "vertex":
        assert launcher.cancelled == []  # finished jobs are not cancelled
    assert (RUN_DATE + dt.timedelta(days=DAY[name] + 3)) not in _days()


def test_an_image_that_cannot_be_resolved_fails_before_any_step(runtime, slack):
    name, launcher, _ = runtime
    missing = re.sub(r":(prod|dev)$", ":nope", os.environ["AIRFLOW_VAR_RECSYS_TRAINER_IMAGE"])
    slack.messages.clear()
    run = _predict(DAY[name] + 4, {"image_uri": missing})
    states = _states(run)
    assert states["resolve_image"] == "failed" and states["predict"] == "upstream_failed"
    assert _launched_images(name, launcher) == []
    failure = [t for t in slack.texts() if "Task *resolve_image*" in t]
    assert len(failure) == 1 and "try 1/" in failure[0], slack.texts()
    expected = "not found in registry" if name == "vertex" else "is not in the Docker engine"
    assert missing in failure[0] and expected in failure[0]


def test_sharded_predict_publishes_the_same_rows_all_or_nothing(runtime, tmp_path, monkeypatch):
    """n_shards through the vertex runtime (a pipeline per shard) and the docker runtime (a
    container per shard); see sharded_runs.py."""
    name, launcher, _ = runtime
    day = DAY[name] + 5
    run_date = RUN_DATE + dt.timedelta(days=day)
    reference = ["--run-date", str(run_date), "--artifacts-uri", ARTIFACTS,
                 *(f"--{k.replace('_', '-')}={v}" for k, v in PREDICT_CONF.items())]
    check_sharded_predict(lambda n: _predict(day, {"n_shards": n}),
                          lambda: _trainer("predict_task", *reference),
                          lambda python: monkeypatch.setattr("support.fake_launchers.TRAINER_PY", python),
                          tmp_path, TRAINER_PY, "test-project", DATASET, run_date)
    launched = launcher.submitted if name == "vertex" else launcher.created
    # The first run: window, 3 shards, a retried shard, publish; the second: window, 3 shards.
    assert len(launched) == (1 + 3 + 1 + 1) + (1 + 3)
    if name == "vertex":  # one pipeline per shard, each labelled with its shard
        assert {s["labels"].get("shard") for s in launcher.submitted} == {"0", "1", "2", None}


ANOMALY_DAY = {"vertex": dt.date(2027, 8, 10), "docker": dt.date(2027, 9, 10)}  # windows of their own
TRAIN_CONF = {"lookback_days": 20, "factors": 8, "iterations": 4}


def _rows(sql: str) -> list[dict]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    return [dict(r) for r in client.query(sql).result()]


def _train(day: dt.date, conf: dict, minute: int = 0):
    dag = load_dagbag().dags["recommend_train"]
    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(3, minute), tzinfo=dt.UTC)
    return dag.test(logical_date=logical, run_conf={**TRAIN_CONF, **conf})


def test_feedback_measures_a_served_day_once_however_often_it_runs(runtime, slack):
    """recommend_feedback launches feedback_task through the runtime: one serving_metrics row for
    the served day, naming the model and the image that served it, after two runs."""
    name, launcher, pinned = runtime
    day = DAY[name] + 6
    assert str(_predict(day).state) == "success"
    served = RUN_DATE + dt.timedelta(days=day)
    [model] = _rows(f"SELECT DISTINCT model_id FROM `test-project.{DATASET}.recommendations` "
                    f"WHERE run_date = '{served}'")
    dag = load_dagbag().dags["recommend_feedback"]
    logical = dt.datetime.combine(served + dt.timedelta(days=2), dt.time(3, 30), tzinfo=dt.UTC)
    launched = len(_launched_images(name, launcher))
    for minute in range(2):
        run = dag.test(logical_date=logical + dt.timedelta(minutes=minute),
                       run_conf={"lookback_days": PREDICT_CONF["lookback_days"]})
        assert str(run.state) == "success", _states(run)
    assert _launched_images(name, launcher)[launched:] == [pinned] * 2
    [row] = _rows(f"SELECT * FROM `test-project.{DATASET}.serving_metrics` WHERE served_date = '{served}'")
    assert (row["run_date"], row["model_id"], row["image"], row["k"]) == (
        served + dt.timedelta(days=1), model["model_id"], pinned, PREDICT_CONF["n_recommendations"])
    assert row["users_served"] == _days()[served] // PREDICT_CONF["n_recommendations"]
    assert 0 < row["users_active"] <= row["users_returning"] <= row["users_served"]
    assert 0 <= row["popularity_hit_rate"] <= 1 and 0 < row["model_hit_rate"] <= 1


def test_an_anomalous_day_is_checked_in_the_runtime_and_trains_only_if_approved(runtime, slack, api):
    """A day where one user made half the events: check_events, launched by the runtime, records
    it and the run waits for a decision. Rejected: the run fails naming the rule and nothing more
    is launched. Approved in a second run: create_cf_matrices, launched by the runtime, records
    the approver, and the run trains on the day."""
    name, launcher, pinned = runtime
    day = ANOMALY_DAY[name]
    _trainer("seed_events", "--end-date", str(day), "--days", "20", "--users", "300", "--items", "80",
             "--events", "30000", "--clusters", "4", "--anomaly", "bot=0.5")  # the module's catalogue
    pointer = _gcs_bucket().blob("launchers/models/LATEST").download_as_bytes()
    slack.messages.clear()
    rejected = _decided(api, day, "Reject", minute=0)
    states = _states(rejected)
    assert states["check_events"] == "success" and states["approve_anomalous_day"] == "failed", states
    assert states["create_cf_matrices"] == "upstream_failed" and states["train"] == "upstream_failed"
    assert _launched_images(name, launcher) == [pinned]  # the data check alone, in the runtime
    [failed] = [t for t in slack.texts() if "Task *approve_anomalous_day* of *recommend_train* failed" in t]
    error = failed.split("\nError: ")[1].splitlines()[0]
    assert re.match(rf"rejected by ana: events of {day} look wrong, nothing trained: "
                    r"user 'bot' made 50 % of the day's events \(limit 10 %\)", error), error
    assert _gcs_bucket().blob("launchers/models/LATEST").download_as_bytes() == pointer
    sql = (f"SELECT status, accepted, accepted_by, image FROM `test-project.{DATASET}.event_stats` "
           f"WHERE run_date = '{day}'")
    assert _rows(sql) == [{"status": "anomaly", "accepted": False, "accepted_by": None, "image": pinned}]

    approved = _decided(api, day, "Approve", minute=1)
    assert str(approved.state) == "success", _states(approved)
    assert _rows(sql) == [{"status": "accepted", "accepted": True, "accepted_by": "ana", "image": pinned}]
    assert set(_launched_images(name, launcher)) == {pinned}


def _decided(api, day: dt.date, option: str, minute: int):
    """A recommend_train run for ``day`` whose decision ``option`` answers through the REST API."""
    from support.decisions import Decider

    decider = Decider(api, "recommend_train", option, reason="the bot is our load test")
    decider.start()
    try:
        return _train(day, {}, minute=minute)
    finally:
        decider.stop()


TUNING_DAY = {"vertex": dt.date(2027, 10, 10), "docker": dt.date(2027, 11, 10)}  # windows of their own


def test_tuning_runs_on_its_schedule_through_the_runtime(runtime):
    """recommend_train with tune weekly, launched by the runtime: a search, its trials in
    BigQuery; two days later the same settings reused."""
    name, _, _ = runtime
    day = TUNING_DAY[name]
    _trainer("seed_events", "--end-date", str(day + dt.timedelta(days=2)), "--days", "22", "--users", "300",
             "--items", "80", "--events", "30000", "--clusters", "4")
    check_tuning_schedule(lambda run_date, conf: _train(run_date, conf), _rows, _states,
                          lambda table: f"test-project.{DATASET}.{table}", day)
