"""recommend_train then recommend_predict with RECSYS_RUNTIME=local: real Airflow (dag.test),
the real trainer in its own virtualenv, the BigQuery/GCS emulators, and the real Slack provider
posting to a loopback receiver."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import subprocess
import urllib.parse

import pytest
from conftest import AIRFLOW_BASE_URL, REPO, SLACK_TOKEN, fake_service_account_key, load_dagbag
from support.sharded_runs import check_sharded_predict
from support.tuning_runs import check_tuning_schedule

LOGICAL_DATE = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
RUN_DATE = dt.date(2026, 11, 29)  # the day before the logical date
TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
TRAIN_CONF = {"lookback_days": 20, "factors": 16, "iterations": 8}
PREDICT_CONF = {"lookback_days": 20, "n_recommendations": 5}


def _bq():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})


def _rows(sql: str) -> list[dict]:
    return [dict(r.items()) for r in _bq().query(sql).result()]


def _recommendation_days() -> dict[dt.date, int]:
    return {r["run_date"]: r["n"] for r in _rows(
        "SELECT run_date, COUNT(*) AS n FROM `test-project.recsys_e2e.recommendations` GROUP BY 1")}


def _states(dag_run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return {ti.task_id: str(ti.state) for ti in tis}


def _first_task_start(dag_run) -> dt.datetime:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        return min(ti.start_date for ti in tis if ti.start_date)


def _run(dag_id: str, logical_date: dt.datetime, conf: dict):
    dag = load_dagbag().dags[dag_id]
    return dag.test(logical_date=logical_date, run_conf=conf)


@pytest.fixture(scope="module", autouse=True)
def google_credentials(tmp_path_factory):
    """Every run of the module has a Google credentials file in its environment, as a developer
    pointing the stack at a real project would: the secret scan below looks for its path and key.
    The emulators make every client anonymous, so the file is never needed, and it is not a
    real key: a code path that loaded it would fail the run, which the scan would also want to
    know."""
    creds = tmp_path_factory.mktemp("credentials") / "recsys-sa-5ec7e7.json"
    key = fake_service_account_key(creds)
    before = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(creds)
    yield {"path": str(creds), "key": key}
    if before is None:
        del os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    else:
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = before


@pytest.fixture(scope="module")
def pipeline(emulators, airflow_db, slack):
    """Seed events, then run recommend_train and recommend_predict once for the module."""
    os.environ["AIRFLOW_VAR_RECSYS_TRAINER_IMAGE"] = "recsys-trainer:dev"
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project",
                    "--dataset", "recsys_e2e", "--end-date", str(RUN_DATE), "--days", "20",
                    "--users", "600", "--items", "120", "--events", "24000", "--clusters", "6",
                    "--log-level", "WARNING"], check=True, env=os.environ)
    slack.messages.clear()
    train = _run("recommend_train", LOGICAL_DATE, TRAIN_CONF)
    predict = _run("recommend_predict", LOGICAL_DATE, PREDICT_CONF)
    return {"train": train, "predict": predict, "messages": list(slack.messages)}


def test_train_then_predict_fill_recommendations_metrics_and_the_model_asset(pipeline, slack):
    assert str(pipeline["train"].state) == "success", _states(pipeline["train"])
    assert str(pipeline["predict"].state) == "success", _states(pipeline["predict"])

    metrics = _rows("SELECT * FROM `test-project.recsys_e2e.model_metrics`")
    assert [(m["run_date"], m["verdict"]) for m in metrics] == [(RUN_DATE, "pass")]
    assert metrics[0]["model_recall"] > metrics[0]["popularity_recall"]

    users = _rows(f"""SELECT COUNT(DISTINCT user_id) AS n FROM `test-project.recsys_e2e.events`
                      WHERE event_date > '{RUN_DATE - dt.timedelta(days=20)}'""")[0]["n"]
    assert _recommendation_days() == {RUN_DATE: 5 * users}  # n_recommendations param reached the step

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetModel.name == "recsys_published_model").all())
        assert len(events) == 1 and events[0].source_dag_id == "recommend_train"
        assert events[0].source_task_id == "promote_model"


def test_slack_gets_one_success_message_per_dag_with_results_and_a_link(pipeline):
    texts = [m["text"] for m in pipeline["messages"]]
    assert all(m["path"] == SLACK_TOKEN for m in pipeline["messages"])  # via the connection
    train = [t for t in texts if t.startswith(":white_check_mark: *recommend_train*")]
    predict = [t for t in texts if t.startswith(":white_check_mark: *recommend_predict*")]
    assert len(train) == 1 and len(predict) == 1 and len(texts) == 2, texts
    assert "verdict *PASS*" in train[0] and "recall@10" in train[0] and "popularity:" in train[0]
    assert "\npublished\n" in train[0]  # the promotion's outcome
    # Both runs name the image they were pinned to, and every step recorded running exactly it.
    for text, run, steps in ((train[0], pipeline["train"], ("create_cf_matrices", "train", "evaluate",
                                                             "promote_model")),
                             (predict[0], pipeline["predict"], ("predict.0", "publish_predictions"))):
        pinned = re.search(r"\nimage `(recsys-trainer:dev@sha256:[0-9a-f]{64})`\n", text)
        assert pinned, text
        for task in steps:
            status = _artifact(f"runs/{RUN_DATE}/status/{run.dag_id}.{task}.json")
            assert (status["image"], status["airflow_run_id"], status["exit_code"]) == (
                pinned.group(1), run.run_id, 0)
    assert f"run date {RUN_DATE}" in train[0]
    rows = sum(_recommendation_days().values())
    assert f"rows written: {rows} for" in predict[0]
    for text, run in ((train[0], pipeline["train"]), (predict[0], pipeline["predict"])):
        # The run's real length, from its first task's start (dag.test starts runs at their
        # logical date, 2026-11-30 03:00, whatever today is): "succeeded in 42s" or "1.5 min".
        seconds = (run.end_date - _first_task_start(run)).total_seconds()
        shown = re.search(r"succeeded in ([0-9.]+)(s| min)", text)
        reported = float(shown.group(1)) * (60 if shown.group(2) == " min" else 1)
        assert abs(reported - seconds) <= max(1, 0.1 * seconds), (text, seconds)
        link = (f"{AIRFLOW_BASE_URL}dags/{run.dag_id}/runs/"
                f"{urllib.parse.quote(run.run_id, safe='')}")
        assert f"<{link}|Open in Airflow>" in text
        assert run.run_id in text


def test_a_permanent_error_fails_at_once_with_the_trainers_message(pipeline, slack, capfd):
    """Exit code 2 (a damaged model: retrying cannot fix it) fails the task on its first try,
    and the trainer's own error line is the task's error, in the log and in Slack."""
    before = _recommendation_days()
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    bucket = gcs.bucket("recsys-test")
    pointer = json.loads(bucket.blob("recsys/models/LATEST").download_as_bytes())
    model_blob = bucket.blob(pointer["model_uri"].removeprefix("gs://recsys-test/") + "/model.npz")
    good = model_blob.download_as_bytes()
    model_blob.upload_from_string(b"damaged")
    slack.messages.clear()
    capfd.readouterr()
    try:
        run = _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=1), PREDICT_CONF)
    finally:
        model_blob.upload_from_string(good)

    assert str(run.state) == "failed"
    assert _states(run)["predict"] == "failed"
    texts = slack.texts()
    failed = [t for t in texts if "Task *predict* of *recommend_predict* failed" in t]
    assert not [t for t in texts if "will be retried" in t], texts
    assert len(failed) == 1 and "try 1/2" in failed[0], texts
    error = failed[0].split("\nError: ")[1].splitlines()[0]
    assert error.startswith("predict_task: checksum mismatch for gs://recsys-test/recsys/models/")
    assert error.endswith("(exit 2: permanent, not retried)")
    # The task instance's own log_url, under Airflow's [api] base_url.
    link = (f"{AIRFLOW_BASE_URL}dags/recommend_predict/runs/{urllib.parse.quote(run.run_id)}"
            "/tasks/predict/mapped/0?try_number=1")
    assert f"<{link}|Open in Airflow>" in failed[0], failed[0]
    out = capfd.readouterr().out
    assert "ERROR: predict_task: checksum mismatch" in out  # the step's line in the task log
    status = _artifact(f"runs/{RUN_DATE + dt.timedelta(days=1)}/status/recommend_predict.predict.0.json")
    assert (status["exit_code"], status["try"], status["airflow_run_id"]) == (2, 1, run.run_id)
    assert _recommendation_days() == before  # the previous day is untouched, nothing added
    assert SLACK_TOKEN not in out


def test_a_transient_error_is_retried_and_keeps_previous_recommendations(pipeline, slack, monkeypatch,
                                                                         unavailable_bigquery):
    """BigQuery answering 503 (exit code 75): the try fails and Airflow retries it (the run's
    first step to query BigQuery, predict_window, meets it)."""
    before = _recommendation_days()
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", unavailable_bigquery)
    monkeypatch.setenv("RECSYS_BQ_RETRY_DEADLINE_S", "2")
    slack.messages.clear()
    run = _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=7), PREDICT_CONF)
    monkeypatch.undo()

    assert str(run.state) == "failed" and _states(run)["predict_window"] == "failed"
    assert _states(run)["predict"] == "upstream_failed"
    texts = slack.texts()
    retry = [t for t in texts if "Task *predict_window* of *recommend_predict* will be retried" in t]
    failed = [t for t in texts if "Task *predict_window* of *recommend_predict* failed" in t]
    assert len(retry) == 1 and len(failed) == 1, texts
    assert "try 1/2" in retry[0] and "try 2/2" in failed[0]
    for text in (retry[0], failed[0]):
        assert "ServiceUnavailable" in text and "(exit 75: transient, retried)" in text, text
    assert _recommendation_days() == before


def test_image_outside_the_allowlist_fails_before_any_step(pipeline, slack):
    slack.messages.clear()
    before = _recommendation_days()
    run = _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=2),
               {**PREDICT_CONF, "image_uri": "docker.io/someone/trainer:latest"})
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["resolve_image"] == "failed"
    assert states["wait_for_published_model"] == states["predict"] == "upstream_failed"
    failure = [t for t in slack.texts() if "Task *resolve_image*" in t]
    assert len(failure) == 1 and "docker.io/someone/trainer:latest" in failure[0]
    assert "europe-west1-docker.pkg.dev/test-project/recsys/trainer:" in failure[0]
    assert _recommendation_days() == before


@pytest.mark.parametrize("fault", ["missing connection", "500", "hang"])
def test_a_broken_slack_is_one_warning_and_never_changes_the_run(pipeline, slack, monkeypatch, capfd, fault):
    """Slack's connection missing, Slack answering 500, or Slack never answering: the run
    succeeds as it would have, and its one success notification becomes one warning, after at
    most the notifier's timeout (RECSYS_SLACK_TIMEOUT_S, 2 s here) for a hanging Slack."""
    day = {"missing connection": 3, "500": 7, "hang": 8}[fault]
    if fault == "missing connection":
        monkeypatch.delenv("AIRFLOW_CONN_SLACK_RECSYS")
    else:
        monkeypatch.setattr(slack, "fault", fault)
        slack.released.clear()
    monkeypatch.setenv("RECSYS_SLACK_TIMEOUT_S", "2")
    slack.messages.clear()
    capfd.readouterr()
    try:
        run = _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=day), PREDICT_CONF)
    finally:
        slack.released.set()  # let a hanging request end
    assert str(run.state) == "success", _states(run)
    assert RUN_DATE + dt.timedelta(days=day) in _recommendation_days()
    out = capfd.readouterr().out
    warnings = [line for line in out.splitlines() if "Slack notification not sent" in line]
    assert len(warnings) == 1 and "warn" in warnings[0].lower(), warnings
    assert not slack.messages
    expected = {"missing connection": "slack_recsys", "500": "500", "hang": "timed out"}[fault]
    assert expected in warnings[0], warnings[0]
    assert SLACK_TOKEN not in out and "/services/" not in warnings[0]


def _artifact(path: str) -> dict:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    return json.loads(gcs.bucket("recsys-test").blob(f"recsys/{path}").download_as_bytes())


def test_a_backfilled_model_is_not_published_and_the_rollback_dag_publishes_it(pipeline):
    """Training for an older day (a backfill) records its model without publishing it; one
    trigger of recommend_rollback with its id publishes it, and predict then serves it."""
    older = RUN_DATE - dt.timedelta(days=2)
    for step, extra in (("create_cf_matrices_task", ["--lookback-days", "15"]),
                        ("train_task", ["--factors", "16", "--iterations", "8"]),
                        ("evaluate_task", []), ("promote_model_task", [])):
        subprocess.run([TRAINER_PY, "-m", f"trainer.{step}", "--project", "test-project",
                        "--dataset", "recsys_e2e", "--run-date", str(older), "--log-level", "WARNING",
                        "--artifacts-uri", os.environ["RECSYS_ARTIFACTS_URI"], *extra],
                       check=True, env=os.environ)
    promotion = _artifact(f"runs/{older}/promotion.json")
    published = _artifact("models/LATEST")
    assert promotion["published"] is False and published["model_id"] != promotion["model_id"]

    refused = _run("recommend_rollback", LOGICAL_DATE + dt.timedelta(days=4),
                   {"model_id": "als-20000101-0000000000"})
    assert str(refused.state) == "failed" and _artifact("models/LATEST") == published

    run = _run("recommend_rollback", LOGICAL_DATE + dt.timedelta(days=5), {"model_id": promotion["model_id"]})
    assert str(run.state) == "success", _states(run)
    pointer = _artifact("models/LATEST")
    assert pointer["model_id"] == promotion["model_id"]
    assert pointer["previous_model_id"] == published["model_id"]

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        latest = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetModel.name == "recsys_published_model")
                  .order_by(AssetEvent.timestamp.desc()).first())
        assert (latest.source_dag_id, latest.source_task_id) == ("recommend_rollback", "rollback")

    predict = _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=6), PREDICT_CONF)
    assert str(predict.state) == "success", _states(predict)
    served = _artifact(f"runs/{RUN_DATE + dt.timedelta(days=6)}/predictions.json")
    assert served["model_id"] == promotion["model_id"]


def test_sharded_predict_publishes_the_same_rows_all_or_nothing(pipeline, tmp_path, monkeypatch):
    """n_shards through the local runtime (a subprocess per shard); see sharded_runs.py."""
    day = 8
    run_date = RUN_DATE + dt.timedelta(days=day)
    unsharded = [TRAINER_PY, "-m", "trainer.predict_task", "--project", "test-project", "--dataset",
                 "recsys_e2e", "--run-date", str(run_date),
                 "--artifacts-uri", os.environ["RECSYS_ARTIFACTS_URI"],
                 "--lookback-days", str(PREDICT_CONF["lookback_days"]),
                 "--n-recommendations", str(PREDICT_CONF["n_recommendations"]), "--log-level", "WARNING"]
    check_sharded_predict(
        lambda n: _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=day),
                       {**PREDICT_CONF, "n_shards": n}),
        lambda: subprocess.run(unsharded, check=True, env=os.environ),
        lambda python: monkeypatch.setenv("RECSYS_TRAINER_PYTHON", python),
        tmp_path, TRAINER_PY, "test-project", "recsys_e2e", run_date)


def _seed(end: dt.date, days: int, events: int) -> None:
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project",
                    "--dataset", "recsys_e2e", "--end-date", str(end), "--days", str(days),
                    "--users", "600", "--items", "120", "--events", str(events), "--clusters", "6",
                    "--log-level", "WARNING"], check=True, env=os.environ)


def test_an_incomplete_day_keeps_wait_for_events_waiting_then_fails_naming_the_counts(
        pipeline, slack, monkeypatch):
    """The run date holds a third of its usual volume (still arriving): wait_for_events keeps
    poking, then fails at its timeout with the counts; nothing is trained or published."""
    day = dt.date(2027, 3, 10)  # a window no other test reads
    _seed(day - dt.timedelta(days=1), 7, 8400)  # about 1,200 a day before it
    _seed(day, 1, 400)
    monkeypatch.setenv("RECSYS_EVENTS_WAIT_TIMEOUT_S", "12")
    monkeypatch.setenv("RECSYS_EVENTS_POKE_INTERVAL_S", "3")
    pointer, metrics = _artifact("models/LATEST"), _rows(
        "SELECT model_id FROM `test-project.recsys_e2e.model_metrics`")
    slack.messages.clear()

    run = _run("recommend_train", dt.datetime(2027, 3, 11, 3, 0, tzinfo=dt.UTC), TRAIN_CONF)

    states = _states(run)
    assert str(run.state) == "failed" and states["wait_for_events"] == "failed", states
    assert states["create_cf_matrices"] == "upstream_failed", states
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with create_session() as session:
        pokes = session.query(TaskReschedule).count()
    assert pokes >= 2  # it kept waiting (rescheduled) before failing
    failed = [t for t in slack.texts() if "Task *wait_for_events* of *recommend_train* failed" in t]
    assert len(failed) == 1, slack.texts()
    found = re.search(r"Error: events of 2027-03-10 in test-project\.recsys_e2e\.events incomplete: "
                      r"400 rows for 2027-03-10, need ([\d,]+) \(50% of the median ([\d,]+) of the 7 days "
                      r"before it with events\) after waiting 12s", failed[0])
    assert found, failed[0]
    need, median = (int(g.replace(",", "")) for g in found.groups())
    assert 1000 <= median <= 1400 and need == -(-median // 2)
    assert _artifact("models/LATEST") == pointer  # nothing published
    assert _rows("SELECT model_id FROM `test-project.recsys_e2e.model_metrics`") == metrics
    assert day not in _recommendation_days()


def test_the_published_model_sensor_finds_the_pointer_and_times_out_naming_it(emulators, monkeypatch):
    """wait_for_published_model asks the stock GCS hook for the ``models/LATEST`` pointer (the
    hook imported when it runs: the provider's GCS sensor module costs about 1.3 s of every
    parse); against the GCS emulator it finds a pointer that exists and, for one that does not,
    times out naming it."""
    import json

    from airflow.providers.common.compat.sdk import AirflowSensorTimeout
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from operators.sensors import PublishedModelSensor

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}))

    def sensor(uri: str) -> PublishedModelSensor:
        return PublishedModelSensor(task_id="wait_for_published_model", artifacts_uri=uri,
                                    gcp_conn_id="google_cloud_default", mode="poke", poke_interval=0.2,
                                    timeout=2)

    storage.Client(project="test-project", credentials=AnonymousCredentials()).bucket("recsys-test").blob(
        "sensor-found/models/LATEST").upload_from_string("{}")
    found = sensor("gs://recsys-test/sensor-found")
    assert found.pointer() == ("recsys-test", "sensor-found/models/LATEST")
    assert found.poke({}) is True
    missing = sensor("gs://recsys-test/no-such-prefix")
    assert missing.poke({}) is False
    with pytest.raises(AirflowSensorTimeout, match=r"^no published model at gs://recsys-test/no-such-prefix/"
                       r"models/LATEST \(run recommend_train until a model passes evaluation\) "
                       r"after waiting 2s$"):
        missing.execute({})

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    bucket = client.bucket("recsys-test")
    bucket.blob("sensor-test/models/LATEST").upload_from_string(b"{}")
    sensor("gs://recsys-test/sensor-test").execute({})  # returns at the first poke

    # Deferrable (the vertex runtime): the stock sensor hands the wait to its trigger, and the
    # task resumes in this class's execute_complete, which gives the event to the stock sensor.
    from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred

    deferred = PublishedModelSensor(task_id="wait_for_published_model", gcp_conn_id="google_cloud_default",
                                    artifacts_uri="gs://recsys-test/no-such-prefix", deferrable=True,
                                    timeout=60)
    with pytest.raises(TaskDeferred) as handed_over:
        deferred.execute({})
    trigger = handed_over.value.trigger
    assert (type(trigger).__name__, trigger.bucket, trigger.object_name) == (
        "GCSBlobTrigger", "recsys-test", "no-such-prefix/models/LATEST")
    assert handed_over.value.method_name == "execute_complete"
    assert getattr(deferred, handed_over.value.method_name)({}, {"status": "success"}) is True
    with pytest.raises(AirflowException, match="pointer gone"):
        deferred.execute_complete({}, {"status": "error", "message": "pointer gone"})


@pytest.mark.parametrize("checked_at, due", [
    (dt.datetime(2026, 11, 30, 8, 30, tzinfo=dt.UTC), dt.date(2026, 11, 29)),
    (dt.datetime(2026, 11, 30, 7, 59, tzinfo=dt.UTC), dt.date(2026, 11, 28)),  # not due yet
    (dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), dt.date(2026, 11, 29)),
])
def test_the_day_due_is_the_one_before_the_deadline_hour(checked_at, due):
    from operators.freshness import due_day

    assert due_day(checked_at, 8) == due


def test_stale_recommendations_alert_slack_within_the_hourly_check_and_fresh_ones_do_not(pipeline, slack):
    """recommend_freshness at 08:30 the day after RUN_DATE: the day is there, no message. The
    same check a year later (nothing published since: a paused DAG, a stuck sensor): the task
    fails and Slack gets one alert naming the day due and the newest day served."""
    slack.messages.clear()
    fresh = _run("recommend_freshness", dt.datetime(2026, 11, 30, 8, 30, tzinfo=dt.UTC), {})
    assert str(fresh.state) == "success", _states(fresh)
    assert slack.texts() == []

    newest = max(_recommendation_days())
    stale = _run("recommend_freshness", dt.datetime(2027, 12, 1, 8, 30, tzinfo=dt.UTC), {})
    assert str(stale.state) == "failed"
    texts = slack.texts()
    assert len(texts) == 1, texts
    assert "Task *check_recommendations_fresh* of *recommend_freshness* failed" in texts[0]
    assert ("Error: recommendations are stale: the newest day in "
            f"test-project.recsys_e2e.recommendations_latest is {newest}; 2027-11-30 was due by "
            "2027-12-01 08:00 UTC") in texts[0], texts[0]
    assert "try 1/1" in texts[0]  # no retry: the next hourly run looks again


def _trigger_future_run(dag_id: str, logical_date: dt.datetime, started: bool) -> str:
    """Trigger ``dag_id`` for ``logical_date`` as `airflow dags trigger --logical-date` does: a
    queued run. ``started``: then started as the scheduler starts a queued run once a slot is
    free (state running, a start date), after which it never schedules a future run's tasks.
    Returns the run id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(dag_id, logical_date=logical_date, triggered_by=DagRunTriggeredByType.TEST,
                      run_id=f"manual__future_{logical_date:%Y%m%d}")
    assert str(run.state) == "queued"
    if started:
        with create_session() as session:
            row = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run.run_id).one()
            row.state, row.start_date = DagRunState.RUNNING, dt.datetime.now(dt.UTC)
    return run.run_id


def _delete_run(dag_id: str, run_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        for run in session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id):
            session.delete(run)


def test_a_future_day_never_makes_stale_recommendations_look_fresh_and_the_alert_names_future_runs(
        pipeline, slack):
    """Issue 38: a day after today in ``recommendations`` (as a predict run dated 19 days ahead
    wrote it before the trainer refused such dates), a recommend_train run dated 19 days ahead
    that the scheduler started (Airflow never schedules its tasks; with max_active_runs=1 it
    blocks every later run) and a recommend_predict run queued for such a date.

    The check at 08:30 on 2027-06-02 (2027-06-01 due, after every day the module writes) fails,
    its one Slack alert naming a day served before the future one and the future-dated runs;
    at 09:30 the day after RUN_DATE (that day served) the future-dated runs alone fail it. The
    future day lies after both checks' days and the real date, which the view's CURRENT_DATE
    reads (the other tests' days are before the real date: the newest one is what it serves).

    Airflow 3.1's API server cannot return a run that never started (operators/freshness.py):
    there the queued run is not named, the started one is."""
    import airflow

    checked = dt.datetime(2027, 6, 2, 8, 30, tzinfo=dt.UTC)
    future = max(checked.date(), dt.datetime.now(dt.UTC).date()) + dt.timedelta(days=19)
    table = "test-project.recsys_e2e.recommendations"
    _bq().query(f"""INSERT INTO `{table}` (run_date, user_id, rank, item_id, score, model_id, generated_at)
        VALUES ('{future}', 'u-future', 1, 'i1', 1.0, 'm-future', CURRENT_TIMESTAMP())""").result()
    at = dt.datetime.combine(future, dt.time(3), tzinfo=dt.UTC)
    runs = {"recommend_train": _trigger_future_run("recommend_train", at, started=True),
            "recommend_predict": _trigger_future_run("recommend_predict", at, started=False)}
    started = f"recommend_train {runs['recommend_train']} (running, logical date {at.isoformat()})"
    queued = f"recommend_predict {runs['recommend_predict']} (queued, logical date {at.isoformat()})"
    try:
        slack.messages.clear()
        check = _run("recommend_freshness", checked, {})
        assert str(check.state) == "failed", _states(check)
        [text] = slack.texts()
        stale = re.search(r"Error: recommendations are stale: the newest day in "
                          r"test-project\.recsys_e2e\.recommendations_latest is (\d{4}-\d{2}-\d{2}); "
                          r"2027-06-01 was due by 2027-06-02 08:00 UTC; "
                          r"future-dated runs block the pipeline: " + re.escape(started), text)
        assert stale, text
        assert RUN_DATE <= dt.date.fromisoformat(stale.group(1)) < future
        if tuple(int(n) for n in airflow.__version__.split(".")[:2]) >= (3, 3):
            assert queued in text, text
        else:
            assert queued not in text, text

        slack.messages.clear()
        check = _run("recommend_freshness", dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.UTC), {})
        assert str(check.state) == "failed", _states(check)
        [text] = slack.texts()
        assert f"Error: future-dated runs block the pipeline: {started}" in text, text
        assert "(recommendations are fresh so far: newest day " in text, text
    finally:
        for dag_id, run_id in runs.items():
            _delete_run(dag_id, run_id)
        _bq().query(f"DELETE FROM `{table}` WHERE run_date = '{future}'").result()


def test_no_secret_appears_in_any_log_xcom_rendered_field_message_or_source(
        pipeline, slack, google_credentials, capfd):
    """The Slack connection's token (a recognisable value, conftest.SLACK_TOKEN) and the Google
    credentials file (its path, name and key, set for every run of the module) must appear
    nowhere Airflow keeps or shows things: task logs (a whole predict run's output, the trainer's
    included), XComs, rendered template fields, the messages Slack got, and the DAG and operator
    sources."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    capfd.readouterr()
    run = _run("recommend_predict", LOGICAL_DATE + dt.timedelta(days=9), PREDICT_CONF)
    assert str(run.state) == "success", _states(run)
    logs = capfd.readouterr()
    assert "rows written" in logs.out + logs.err  # the trainer's own output is in what is scanned
    with create_session() as session:
        xcoms = [str(x.value) for x in session.query(XComModel).all()]
        rendered = [str(r.rendered_fields) for r in session.query(RenderedTaskInstanceFields).all()]
    assert xcoms and rendered  # there is something to scan
    sources = [p.read_text() for p in [*(REPO / "dags").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]]
    payloads = [json.dumps({k: v for k, v in m.items() if k != "path"}) for m in slack.messages]  # bodies
    creds = google_credentials
    secrets = {"webhook token": [SLACK_TOKEN, SLACK_TOKEN.rsplit("/", 1)[-1]],  # whole, and its tail
               "credentials file": [creds["path"], creds["path"].rsplit("/", 1)[-1]],
               "credentials key": [creds["key"]["private_key_id"], "NOT-A-REAL-KEY"]}
    for where, texts in (("task logs", [logs.out, logs.err]), ("XCom", xcoms), ("rendered fields", rendered),
                         ("Slack payloads", payloads), ("sources", sources)):
        for what, parts in secrets.items():
            hits = [part for part in parts for text in texts if part in text]
            assert not hits, f"the {what} appears in {where}"
    assert slack.messages and all(m["path"] == SLACK_TOKEN for m in slack.messages)  # it was used


ANOMALY_DAYS = {"drop-type=complete": dt.date(2027, 5, 10), "bot=0.5": dt.date(2027, 6, 10),
                "renumber-items": dt.date(2027, 7, 10)}  # windows no other test reads
ANOMALY_LINES = {"drop-type=complete": r"event type 'complete' vanished \(limit 50 %\)",
                 "bot=0.5": r"user 'bot' made 50 % of the day's events \(limit 10 %\)",
                 "renumber-items": r"100 % of the day's events are on items unseen in the trailing days"}


def _event_stats(day: dt.date) -> list[dict]:
    return _rows("SELECT status, accepted, anomalies, airflow_run_id, accepted_by, accepted_at, "
                 f"accept_reason FROM `test-project.recsys_e2e.event_stats` WHERE run_date = '{day}'")


# Which answer each anomaly gets: the first is approved (one accepted day trains through the whole
# DAG), the others rejected.
ANSWERS = {"drop-type=complete": "Approve", "bot=0.5": "Reject", "renumber-items": "Reject"}


@pytest.mark.parametrize("anomaly", list(ANOMALY_DAYS))
def test_a_day_breaking_an_anomaly_rule_waits_for_a_decision_and_trains_only_if_approved(
        pipeline, slack, api, anomaly):
    """A synthetic day crafted for each rule: check_events records it, approve_anomalous_day asks
    (Slack says so, naming the rule; a read-only user cannot answer). Rejected: the run fails
    naming the rule, nothing is trained or published. Approved: the run trains and publishes on
    the day, and event_stats names the approver, the time and the reason."""
    from support.decisions import Decider

    day = ANOMALY_DAYS[anomaly]
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project", "--dataset",
                    "recsys_e2e", "--end-date", str(day), "--days", "20", "--users", "600", "--items", "120",
                    "--events", "40000", "--clusters", "6", "--anomaly", anomaly, "--log-level", "WARNING"],
                   check=True, env=os.environ)
    pointer = _artifact("models/LATEST")
    slack.messages.clear()
    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(3), tzinfo=dt.UTC)
    decider = Decider(api, "recommend_train", ANSWERS[anomaly], reason="a <b>release</b> changed the app",
                      look=lambda asked: _recommender_page(api))
    decider.start()
    try:
        run = _run("recommend_train", logical, TRAIN_CONF)
    finally:
        decider.stop()

    states = _states(run)
    assert states["check_events"] == "success", states
    asked = decider.asked
    assert asked and asked["run_id"] == run.run_id and asked["task_id"] == "approve_anomalous_day"
    [recorded] = _event_stats(day)
    n = len(recorded["anomalies"])
    rules = f"{n} anomaly rule" + "s" * (n > 1)
    assert asked["subject"] == f"Train recommend_train on {day}? Its events broke {rules}"
    body = asked["body"].replace("\\", "")  # shown as Markdown: the data's characters escaped
    assert re.search(ANOMALY_LINES[anomaly], body) and "The day's figures" in body, body
    assert decider.read_only_status == 403 and decider.answer_status == 200
    texts = slack.texts()
    [waiting] = [t for t in texts if t.startswith(":raising_hand: *recommend_train* needs a decision")]
    assert re.search(ANOMALY_LINES[anomaly], waiting) and "Required Actions" in waiting, waiting
    decision = (f"{AIRFLOW_BASE_URL}dags/recommend_train/runs/{urllib.parse.quote(run.run_id, safe='')}"
                "/tasks/approve_anomalous_day/required_actions")
    assert f"<{decision}|Open in Airflow>" in waiting, waiting
    # the Recommender page listed it while it waited, linked to it
    assert html.escape(asked["subject"]) in decider.seen and f'href="{decision}"' in decider.seen
    assert 'id="decisions"' not in _recommender_page(api)  # answered: no longer listed
    [recorded] = _event_stats(day)  # after the run

    if ANSWERS[anomaly] == "Reject":
        assert str(run.state) == "failed" and states["approve_anomalous_day"] == "failed", states
        assert states["create_cf_matrices"] == "upstream_failed" and states["train"] == "upstream_failed"
        [failed] = [t for t in texts if "Task *approve_anomalous_day* of *recommend_train* failed" in t]
        error = failed.split("\nError: ")[1].splitlines()[0]
        assert re.match(rf"rejected by ana: events of {day} look wrong, nothing trained: .*"
                        + ANOMALY_LINES[anomaly], error), error
        assert _artifact("models/LATEST") == pointer
        assert (recorded["status"], recorded["accepted"], recorded["accepted_by"]) == ("anomaly", False, None)
        assert recorded["airflow_run_id"] == run.run_id
        return

    assert str(run.state) == "success", states
    assert states["approve_anomalous_day"] == "success" and states["create_cf_matrices"] == "success"
    assert (recorded["status"], recorded["accepted"], recorded["accepted_by"]) == ("accepted", True, "ana")
    assert recorded["accept_reason"] == "a <b>release</b> changed the app"
    assert recorded["accepted_at"] is not None and recorded["airflow_run_id"] == run.run_id
    assert _artifact("models/LATEST") != pointer  # trained and published on the day
    [success] = [t for t in texts if t.startswith(":white_check_mark: *recommend_train*")]
    assert "\nanomalies accepted: event type 'complete' vanished" in success


def _recommender_page(api) -> str:
    from recommender import app as page_app
    from support.decisions import token

    page_app.store.cache_clear()  # this module's dataset
    page = api.get("/recommender/", headers=token("ana", "USER"))
    assert page.status_code == 200, page.text[:300]
    return page.text


def test_accept_anomalies_skips_the_decision_and_a_normal_day_asks_nobody(pipeline, slack):
    """Triggered with accept_anomalies, an anomalous day trains without asking (the acceptance
    names nobody); the module's normal day never asked anyone either."""
    states = _states(pipeline["train"])
    assert states["approve_anomalous_day"] == "skipped" and states["create_cf_matrices"] == "success"
    day = dt.date(2027, 8, 10)  # a window no other test reads
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project", "--dataset",
                    "recsys_e2e", "--end-date", str(day), "--days", "20", "--users", "600", "--items", "120",
                    "--events", "40000", "--clusters", "6", "--anomaly", "bot=0.5", "--log-level", "WARNING"],
                   check=True, env=os.environ)
    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(3), tzinfo=dt.UTC)
    slack.messages.clear()
    run = _run("recommend_train", logical, {**TRAIN_CONF, "accept_anomalies": True})
    states = _states(run)
    assert str(run.state) == "success" and states["approve_anomalous_day"] == "skipped", states
    [recorded] = _event_stats(day)
    assert (recorded["status"], recorded["accepted"], recorded["accepted_by"]) == ("accepted", True, None)
    assert not [t for t in slack.texts() if "needs a decision" in t]


def _serving(served: dt.date) -> list[dict]:
    return _rows(f"SELECT * FROM `test-project.recsys_e2e.serving_metrics` WHERE served_date = '{served}'")


def test_the_served_hit_rate_is_measured_the_next_day_and_a_worse_model_alerts_slack(pipeline, slack):
    """train -> predict for RUN_DATE ran in the fixture; the next two days' events arrive;
    recommend_feedback measures RUN_DATE on RUN_DATE + 1 (the model beats popularity: no
    message). Then RUN_DATE + 1 is served by a model whose items were shuffled, and measuring it
    on RUN_DATE + 2 sends one alert naming the day, the figure and the model; the run succeeds."""
    _seed(RUN_DATE + dt.timedelta(days=2), 2, 2400)  # the seeder's users and items: same tastes
    feedback = {"lookback_days": PREDICT_CONF["lookback_days"]}
    slack.messages.clear()
    run = _run("recommend_feedback", dt.datetime.combine(RUN_DATE + dt.timedelta(days=2), dt.time(3, 30),
                                                         tzinfo=dt.UTC), feedback)
    assert str(run.state) == "success", _states(run)
    [good] = _serving(RUN_DATE)
    assert good["run_date"] == RUN_DATE + dt.timedelta(days=1)
    [served] = _rows("SELECT DISTINCT model_id FROM `test-project.recsys_e2e.recommendations` "
                     f"WHERE run_date = '{RUN_DATE}'")
    assert good["model_id"] == served["model_id"] and good["k"] == 5
    assert good["users_served"] == _recommendation_days()[RUN_DATE] // 5
    assert 100 <= good["users_active"] <= good["users_returning"] <= good["users_served"]
    assert good["model_hit_rate"] > good["popularity_hit_rate"] and good["alerts"] == []
    assert good["image"].startswith("recsys-trainer:dev@sha256:")
    assert slack.texts() == []  # nothing to alert on

    worse = subprocess.run([TRAINER_PY, str(REPO / "tests" / "dags" / "support" / "worse_model.py"),
                            os.environ["RECSYS_ARTIFACTS_URI"]], check=True, env=os.environ,
                           capture_output=True, text=True).stdout.strip()
    subprocess.run([TRAINER_PY, "-m", "trainer.predict_task", "--project", "test-project", "--dataset",
                    "recsys_e2e", "--run-date", str(RUN_DATE + dt.timedelta(days=1)), "--artifacts-uri",
                    os.environ["RECSYS_ARTIFACTS_URI"], "--model-uri", worse, "--lookback-days",
                    str(PREDICT_CONF["lookback_days"]), "--n-recommendations", "5", "--log-level", "WARNING"],
                   check=True, env=os.environ)
    logical = dt.datetime.combine(RUN_DATE + dt.timedelta(days=3), dt.time(3, 30), tzinfo=dt.UTC)
    for _ in range(2):  # measured twice: one row for the day, one alert per run
        slack.messages.clear()
        run = _run("recommend_feedback", logical, feedback)
        logical += dt.timedelta(minutes=1)
        assert str(run.state) == "success", _states(run)  # the data is fine, the model is worse
        [alert] = slack.texts()
        [bad] = _serving(RUN_DATE + dt.timedelta(days=1))
        assert bad["model_hit_rate"] < bad["popularity_hit_rate"]
        model_id = worse.rsplit("/", 1)[-1]
        assert alert.startswith(":warning: *recommend_feedback*: the served recommendations did worse")
        assert (f"served model {model_id} on {RUN_DATE + dt.timedelta(days=1)}: hit rate@5 "
                f"{bad['model_hit_rate']:.3f} is below popularity's "
                f"{bad['popularity_hit_rate']:.3f}") in alert
        assert "recommend_rollback" in alert and run.run_id in alert


def test_tuning_runs_on_its_schedule_in_the_local_runtime(pipeline):
    """recommend_train with tune weekly in the local runtime: a search, its trials in BigQuery;
    two days later the same settings reused."""
    day = dt.date(2027, 12, 10)  # a window of its own
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project", "--dataset",
                    "recsys_e2e", "--end-date", str(day + dt.timedelta(days=2)), "--days", "22",
                    "--users", "300", "--items", "80", "--events", "30000", "--clusters", "4",
                    "--log-level", "WARNING"], check=True, env=os.environ)

    def train(run_date: dt.date, conf: dict):
        logical = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(3), tzinfo=dt.UTC)
        return _run("recommend_train", logical, {**TRAIN_CONF, **conf})

    check_tuning_schedule(train, _rows, _states, lambda table: f"test-project.recsys_e2e.{table}", day)
