"""Vertex AI jobs are never orphaned or duplicated, in both Airflow 3.1 and 3.3.

FAKE: Vertex AI has no local stand-in. The provider hook's list/submit calls and the async
pipeline-service client the provider's trigger polls are replaced (tests/dags/support/fake_launchers.py),
and so is the one call a trigger makes to Airflow's API server for its task's state
(``RuntimeTaskInstance.get_task_states``), which needs a running triggerer. The operator, the
trigger and their decisions are the real code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from types import SimpleNamespace

import pytest
from conftest import load_dagbag, shard_task
from support.fake_launchers import FakeVertex

RUN_ID = "scheduled__2026-11-30T05:00:00+00:00"
LABELS = {"app": "recsys", "dag": "recommend_predict", "task": "predict",
          "run": "scheduled__2026-11-30t05-00-00-00-00"}


@pytest.fixture
def vertex(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", '{"conn_type": "google_cloud_platform"}')
    monkeypatch.setattr("support.fake_launchers._run", lambda command, env: None)  # pipelines run nothing
    return FakeVertex().install(monkeypatch)


def _trigger(job_id: str, task_state: str | None, monkeypatch, calls: list | None = None):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from operators.launchers.vertex_trigger import TrainingPipelineTrigger

    def get_task_states(dag_id, task_ids, run_ids, map_index=None, **_):
        (calls if calls is not None else []).append((dag_id, task_ids, run_ids))
        return {run_ids[0]: {task_ids[0]: task_state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    trigger = TrainingPipelineTrigger(conn_id="google_cloud_default", project_id=FakeVertex.PROJECT,
                                      location=FakeVertex.REGION, job_id=job_id, poll_interval=3600)
    trigger.task_instance = SimpleNamespace(dag_id="recommend_predict", task_id="predict", run_id=RUN_ID,
                                            map_index=-1)
    return trigger


async def _cancel_while_waiting(trigger, vertex: FakeVertex) -> None:
    """Start the trigger, wait until it polled the pipeline once, then cancel it as the triggerer
    does (on a timeout, a user's action, or its own shutdown)."""
    polled = asyncio.Event()
    client = vertex.async_client()
    get = client.get_training_pipeline

    async def get_and_signal(request, **kwargs):
        pipeline = await get(request, **kwargs)
        polled.set()
        return pipeline

    client.get_training_pipeline = get_and_signal

    async def fake_client(hook, region=None):
        return client

    from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobAsyncHook

    original = CustomJobAsyncHook.get_pipeline_service_client
    CustomJobAsyncHook.get_pipeline_service_client = fake_client
    try:
        waiting = asyncio.ensure_future(trigger.run().__anext__())
        await polled.wait()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        CustomJobAsyncHook.get_pipeline_service_client = original


@pytest.mark.parametrize("state", ["scheduled", "failed", "up_for_retry", None])
def test_a_task_that_stopped_waiting_gets_its_pipeline_cancelled(vertex, monkeypatch, state):
    """A trigger timeout leaves the task 'scheduled' (no on_kill on any version); a kill, clear
    or mark leaves another state (3.1 has no on_kill at all); a deleted run leaves none."""
    job = vertex.add(LABELS, "PIPELINE_STATE_RUNNING")
    calls: list = []
    trigger = _trigger(job, state, monkeypatch, calls)
    asyncio.run(_cancel_while_waiting(trigger, vertex))
    assert vertex.cancelled == [f"projects/test-project/locations/europe-west1/trainingPipelines/{job}"]
    assert calls == [("recommend_predict", ["predict"], [RUN_ID])]


def test_a_stopping_triggerer_leaves_the_pipeline_running(vertex, monkeypatch):
    job = vertex.add(LABELS, "PIPELINE_STATE_RUNNING")
    trigger = _trigger(job, "deferred", monkeypatch)
    asyncio.run(_cancel_while_waiting(trigger, vertex))
    assert vertex.cancelled == []


def test_on_kill_cancels_once_even_when_the_cancellation_path_runs_too(vertex, monkeypatch):
    """Airflow 3.3 calls on_kill after the trigger's own CancelledError handling on a user's action."""
    job = vertex.add(LABELS, "PIPELINE_STATE_RUNNING")
    trigger = _trigger(job, "failed", monkeypatch)
    asyncio.run(_cancel_while_waiting(trigger, vertex))
    asyncio.run(trigger.on_kill())
    assert len(vertex.cancelled) == 1


def test_the_trigger_serializes_to_a_class_the_triggerer_can_import(vertex, monkeypatch):
    import importlib

    trigger = _trigger("1000", "deferred", monkeypatch)
    classpath, kwargs = trigger.serialize()
    assert classpath == "operators.launchers.vertex_trigger.TrainingPipelineTrigger"
    module, _, name = classpath.rpartition(".")  # what the triggerer does with it
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs) and again.job_id == "1000"


def _predict_task(monkeypatch, try_number: int):
    monkeypatch.setenv("RECSYS_RUNTIME", "vertex")
    monkeypatch.setenv("RECSYS_GCP_PROJECT", FakeVertex.PROJECT)
    task = shard_task(load_dagbag().dags["recommend_predict"].get_task("predict"))
    task.image = "europe-west1-docker.pkg.dev/test-project/recsys/trainer@sha256:" + "0" * 64
    task.arguments, task.run_date = ["--run-date", "2026-11-29"], "2026-11-29"
    pushed: dict = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}), task_id="predict",
                         dag_id="recommend_predict", run_id=RUN_ID, try_number=try_number, map_index=-1)
    context = {"ti": ti, "task": task, "dag_run": SimpleNamespace(run_id=RUN_ID),
               "logical_date": dt.datetime(2026, 11, 30, 5, tzinfo=dt.UTC)}
    return task, context, pushed


def test_a_retry_waits_for_the_running_pipeline_instead_of_submitting_another(vertex, monkeypatch):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from operators.launchers.vertex import pipeline_key

    mine = {**LABELS, "key": pipeline_key("recommend_predict", RUN_ID, "predict", -1)}
    vertex.add({**mine, "try": "1"}, "PIPELINE_STATE_FAILED")  # an earlier, finished attempt
    # Try 1 timed out on Airflow's side while its pipeline kept running.
    running = vertex.add({**mine, "try": "1"}, "PIPELINE_STATE_RUNNING")
    other = pipeline_key("recommend_predict", "another-run", "predict", -1)
    vertex.add({**LABELS, "run": "another-run", "try": "1", "key": other}, "PIPELINE_STATE_RUNNING")
    task, context, pushed = _predict_task(monkeypatch, try_number=2)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    assert vertex.submitted == []
    assert deferred.value.trigger.job_id == running and pushed["training_id"] == running
    assert type(deferred.value.trigger).__name__ == "TrainingPipelineTrigger"


def test_without_a_running_pipeline_a_try_submits_one(vertex, monkeypatch):
    from airflow.providers.common.compat.sdk import TaskDeferred

    vertex.add({**LABELS, "try": "1"}, "PIPELINE_STATE_FAILED")
    task, context, _ = _predict_task(monkeypatch, try_number=2)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    assert len(vertex.submitted) == 1 and vertex.submitted[0]["labels"]["try"] == "2"
    assert deferred.value.trigger.job_id != "1000"


def test_a_failed_pipeline_without_this_trys_record_is_retried_with_its_logs(vertex, monkeypatch, tmp_path):
    """A record left by another try (here try 1, while try 2's container never started) is not
    this try's outcome: the task is retried as a crash, and the error links the job's logs."""
    import json

    from operators.trainer_exit import TrainerStepFailed, TrainerStepRetriable

    task, context, _ = _predict_task(monkeypatch, try_number=2)
    task.artifacts_uri = str(tmp_path)
    record = tmp_path / "runs" / "2026-11-29" / "status" / "recommend_predict.predict.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"exit_code": 2, "error": "bad input", "try": 1, "airflow_run_id": RUN_ID}))
    job = vertex.add({**LABELS, "try": "2"}, "PIPELINE_STATE_FAILED")
    event = {"status": "error", "message": "Custom Container Training Job failed",
             "job": type(vertex.proto(job)).to_dict(vertex.proto(job))}
    with pytest.raises(TrainerStepRetriable, match=r"left no status record for try 2 .*logs: https://"):
        task.execute_complete(context, event)
    # The same record for this try is the step's own outcome: permanent, not retried.
    record.write_text(json.dumps({"exit_code": 2, "error": "bad input", "try": 2, "airflow_run_id": RUN_ID}))
    with pytest.raises(TrainerStepFailed, match=r"^predict_task: bad input \(exit 2: permanent, not retried"):
        task.execute_complete(context, event)


@pytest.mark.parametrize("image, why", [
    ("europe-west1-docker.pkg.dev/project-evil/recsys/trainer@sha256:" + "0" * 64, "is not allowed"),
    ("europe-west1-docker.pkg.dev/test-project/recsys/trainer:prod", "is not pinned"),  # a movable tag
])
def test_a_vertex_step_refuses_an_image_edited_into_xcom_before_submitting(vertex, monkeypatch, image, why):
    """Every step runs what resolve_image's XCom holds, which a user who may edit XCom can
    replace before clearing the task: the launcher checks it again before it submits (or adopts)
    anything, and fails naming it."""
    from operators.image_pinning import ImageNotAllowedError
    from operators.trainer_step import IMAGE_FROM_XCOM

    task, context, _ = _predict_task(monkeypatch, try_number=2)
    xcom = {"ti": SimpleNamespace(xcom_pull=lambda task_ids: image)}
    task.image = task.render_template(IMAGE_FROM_XCOM, xcom)
    assert task.image == image
    with pytest.raises(ImageNotAllowedError, match=f"^trainer image '{re.escape(image)}' .*{why}"):
        task.execute(context)
    assert vertex.submitted == []


def _predict_for_run(monkeypatch, run_id: str, try_number: int):
    """The first shard of predict's Vertex task in ``run_id``, with its labels as its launcher
    gives them."""
    from operators.launchers.vertex import pipeline_labels

    task, context, _ = _predict_task(monkeypatch, try_number)
    context["ti"].run_id, context["ti"].map_index = run_id, 0
    context.update(run_id=run_id, dag_run=SimpleNamespace(run_id=run_id))
    labels = pipeline_labels(context["ti"], 0)
    return task, context, {k: v for k, v in labels.items() if k != "key"}


def test_a_manual_run_id_labelled_like_a_backfill_never_adopts_its_pipeline(vertex, monkeypatch):
    """Label values are lowercased and cut to 63 characters: a manual run id that Airflow's
    ``allowed_run_id_pattern`` accepts gets the same labels as the backfill run of that date.
    It must submit its own pipeline, not wait for the backfill's; the backfill's own retry still
    adopts it."""
    from airflow.configuration import conf
    from airflow.providers.common.compat.sdk import TaskDeferred

    backfill, manual = "backfill__2026-11-01T03:00:00+00:00", "backfill__2026-11-01t03-00-00-00-00"
    assert re.match(conf.get("scheduler", "allowed_run_id_pattern"), manual)
    task, context, readable = _predict_for_run(monkeypatch, backfill, try_number=1)
    with pytest.raises(TaskDeferred) as first:
        task.execute(context)
    colliding, context, colliding_labels = _predict_for_run(monkeypatch, manual, try_number=1)
    assert colliding_labels == readable  # the readable labels do collide
    with pytest.raises(TaskDeferred) as second:
        colliding.execute(context)
    assert len(vertex.submitted) == 2, "the manual run adopted the backfill run's pipeline"
    assert second.value.trigger.job_id != first.value.trigger.job_id
    retry, context, _ = _predict_for_run(monkeypatch, backfill, try_number=2)
    with pytest.raises(TaskDeferred) as adopted:
        retry.execute(context)
    assert len(vertex.submitted) == 2 and adopted.value.trigger.job_id == first.value.trigger.job_id


# What the previous release stored for a deferred Vertex task: its trigger's class path and
# arguments (the provider trigger's), as serialised by that release's code.
PREVIOUS_RELEASE_TRIGGER = ("operators.vertex_trigger.CancellingTrainingPipelineTrigger",
                            {"conn_id": "google_cloud_default", "project_id": FakeVertex.PROJECT,
                             "location": FakeVertex.REGION, "job_id": None, "poll_interval": 30,
                             "impersonation_chain": None})


@pytest.mark.parametrize("state", ["PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED"])
def test_a_task_deferred_by_the_previous_release_resumes_with_this_one(vertex, monkeypatch, tmp_path, state):
    """A deploy in the middle of a run: the triggerer loads the stored trigger by its old class
    path, waits for the pipeline, and the task resumes in this release's operator, which applies
    the step's status record as before."""
    import importlib
    import json

    from operators.trainer_exit import TrainerStepFailed

    job = vertex.add({**LABELS, "try": "1"}, state)
    classpath, kwargs = PREVIOUS_RELEASE_TRIGGER
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**{**kwargs, "job_id": job})

    async def first_event():
        return (await trigger.run().__anext__()).payload

    event = asyncio.run(first_event())
    assert event["status"] == ("success" if state.endswith("SUCCEEDED") else "error")
    task, context, pushed = _predict_task(monkeypatch, try_number=1)
    if state.endswith("SUCCEEDED"):
        assert task.execute_complete(context, event) is None
        assert pushed["custom_job_id"] == f"{job}9"
        return
    task.artifacts_uri = str(tmp_path)
    record = tmp_path / "runs" / "2026-11-29" / "status" / "recommend_predict.predict.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"exit_code": 2, "error": "bad input", "try": 1, "airflow_run_id": RUN_ID}))
    with pytest.raises(TrainerStepFailed, match=r"^predict_task: bad input \(exit 2: permanent, not retried"):
        task.execute_complete(context, event)
