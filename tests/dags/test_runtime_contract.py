"""The same trainer step, module and arguments in every runtime; only the launcher differs."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from conftest import load_dagbag, shard_task

TRAINER_TASKS = {
    "recommend_train": {"create_cf_matrices": "create_cf_matrices_task", "train": "train_task",
                        "evaluate": "evaluate_task", "promote_model": "promote_model_task"},
    "recommend_predict": {"predict_window": "predict_window_task", "predict": "predict_task",
                          "publish_predictions": "publish_predictions_task"},
    "recommend_rollback": {"rollback": "promote_model_task"},
    "recommend_forget": {"forget": "forget_user_task"},
    "recommend_feedback": {"feedback": "feedback_task"},
}


def _commands(runtime: str, monkeypatch) -> dict[tuple[str, str], list[str]]:
    monkeypatch.setenv("RECSYS_RUNTIME", runtime)
    bag = load_dagbag()
    out = {}
    for dag_id, tasks in TRAINER_TASKS.items():
        for task_id in tasks:
            op = shard_task(bag.dags[dag_id].get_task(task_id))
            command = list(op.command)
            if runtime == "local":
                command[0] = "python"  # the local launcher uses the trainer venv's interpreter
            out[(dag_id, task_id)] = command
    return out, bag


def test_module_and_arguments_are_identical_in_all_runtimes(monkeypatch):
    local, _ = _commands("local", monkeypatch)
    docker, _ = _commands("docker", monkeypatch)
    vertex, _ = _commands("vertex", monkeypatch)
    assert local == docker == vertex
    for (dag_id, task_id), command in local.items():
        assert command[:3] == ["python", "-m", f"trainer.{TRAINER_TASKS[dag_id][task_id]}"]
        assert "--run-date" in command and "--artifacts-uri" in command and "--project" in command
    assert "{{ recsys_whole(params.factors) }}" in local[("recommend_train", "train")]
    assert "{{ recsys_whole(params.n_recommendations) }}" in local[("recommend_predict", "predict")]
    assert " ".join(local[("recommend_predict", "predict")]).endswith(
        "--shard {{ task.shard }} --n-shards {{ recsys_whole(params.n_shards) }}")
    assert "{{ recsys_whole(params.n_shards) }}" in local[("recommend_predict", "publish_predictions")]


def test_plan_shards_lists_one_index_per_shard_and_refuses_less_than_one():
    plan = load_dagbag().dags["recommend_predict"].get_task("plan_shards")
    assert plan.execute({"params": {"n_shards": 4}}) == [0, 1, 2, 3]
    assert plan.execute({"params": {}}) == [0]
    with pytest.raises(ValueError, match=r"^n_shards must be >= 1, got -2$"):
        plan.execute({"params": {"n_shards": -2}})


@pytest.mark.parametrize("runtime", ["local", "docker", "vertex"])
def test_predict_is_one_task_instance_per_shard_with_its_own_index_and_status_record(runtime, monkeypatch):
    """Mapped over plan_shards' list in every runtime; a shard renders its own index into its
    arguments and its own status record name (two shards never share one)."""
    from operators.macros import MACROS

    monkeypatch.setenv("RECSYS_RUNTIME", runtime)
    predict = load_dagbag().dags["recommend_predict"].get_task("predict")
    assert hasattr(predict, "partial_kwargs") and predict.upstream_task_ids == {"plan_shards"}
    for shard in (0, 2):
        task = shard_task(predict, shard)
        when = dt.datetime(2026, 11, 30, 5, tzinfo=dt.UTC)
        context = {"run_id": "r", "dag": SimpleNamespace(dag_id="recommend_predict"), "task": task,
                   "params": {"n_shards": 3, "lookback_days": 30, "n_recommendations": 10}, **MACROS,
                   "dag_run": SimpleNamespace(logical_date=when, run_after=when),
                   "ti": SimpleNamespace(try_number=1, map_index=shard, xcom_pull=lambda task_ids: "img")}
        command = task.render_template(list(task.command if runtime != "local" else task.arguments), context)
        assert command[-4:] == ["--shard", str(shard), "--n-shards", "3"]
        env = task.render_template({"vertex": getattr(task, "environment_variables", None),
                                    "docker": getattr(task, "environment", None),
                                    "local": getattr(task, "env", None)}[runtime], context)
        assert env["RECSYS_STATUS_NAME"] == f"recommend_predict.predict.{shard}"
        if runtime == "vertex":  # one pipeline per shard, and a retry adopts only its own
            assert task.render_template(task.labels, context)["shard"] == str(shard)
            assert task.render_template(task.display_name, context).startswith(
                f"recsys-recommend_predict-predict-{shard}-r-try1")


def test_vertex_operator_is_deferrable_with_configured_machine_region_and_labels(monkeypatch):
    monkeypatch.setenv("RECSYS_VERTEX_REGION", "us-central1")
    monkeypatch.setenv("RECSYS_VERTEX_MACHINE_TYPES",
                       '{"default": "n2-standard-4", "train_task": "n2-highmem-16"}')
    monkeypatch.setenv("RECSYS_VERTEX_SERVICE_ACCOUNT", "trainer@p.iam.gserviceaccount.com")
    _, bag = _commands("vertex", monkeypatch)
    from airflow.providers.google.cloud.operators.vertex_ai.custom_job import (
        CreateCustomContainerTrainingJobOperator,
    )

    train = bag.dags["recommend_train"].get_task("train")
    evaluate = bag.dags["recommend_train"].get_task("evaluate")
    # The task builds the stock operator (subclassed) when it executes, with its own arguments.
    job = train.job()
    assert isinstance(job, CreateCustomContainerTrainingJobOperator)
    assert (job.task_id, job.container_uri, job.command, job.labels, job.machine_type) == (
        train.task_id, train.container_uri, train.command, train.labels, train.machine_type)
    assert job.execution_timeout == train.execution_timeout and job.deferrable is True
    # What the provider templates among these arguments, the task templates too.
    assert {f for f in job.template_fields if hasattr(train, f)} <= set(train.template_fields)
    assert train.deferrable is True and train.region == "us-central1"
    assert train.machine_type == "n2-highmem-16" and evaluate.machine_type == "n2-standard-4"
    assert train.accelerator_count == evaluate.accelerator_count == 0  # CPU-only image
    assert train.service_account == "trainer@p.iam.gserviceaccount.com"
    assert {"container_uri", "command", "labels", "display_name", "environment_variables"} <= set(
        train.template_fields)
    assert set(train.labels) == {"app", "dag", "task", "run", "try"}

    # Render the templated fields the way a run does (minimal context, no DB).
    from operators.macros import MACROS

    run_id = "scheduled__2026-11-30T03:00:00+00:00"
    context = {"run_id": run_id, "dag": SimpleNamespace(dag_id="recommend_train"),
               "task": SimpleNamespace(task_id="train"),
               "ti": SimpleNamespace(try_number=2, map_index=-1,
                                     xcom_pull=lambda task_ids: "recsys-trainer:dev"),
               **MACROS}
    labels = train.render_template(train.labels, context)
    assert labels == {"app": "recsys", "dag": "recommend_train", "task": "train",
                      "run": "scheduled__2026-11-30t03-00-00-00-00", "try": "2"}
    # The step learns its Airflow attempt and image, for its status record.
    env = train.render_template(train.environment_variables, context)
    assert {k: env[k] for k in ("RECSYS_STATUS_NAME", "RECSYS_AIRFLOW_RUN_ID", "RECSYS_TRY_NUMBER",
                                "RECSYS_TRAINER_IMAGE")} == {
        "RECSYS_STATUS_NAME": "recommend_train.train", "RECSYS_AIRFLOW_RUN_ID": run_id,
        "RECSYS_TRY_NUMBER": "2", "RECSYS_TRAINER_IMAGE": "recsys-trainer:dev"}
    assert all(len(v) <= 63 for v in labels.values())
    display = train.render_template(train.display_name, context)
    assert display == "recsys-recommend_train-train-scheduled__2026-11-30t03-00-00-00-00-try2"
    assert train.render_template(train.container_uri, context) == "recsys-trainer:dev"


def test_vertex_submission_uses_rendered_image_and_command(monkeypatch):
    """FAKE: there is no local stand-in for the Vertex AI API, so the provider hook's list and
    submit calls are replaced (tests/dags/fake_launchers.py); the stock operator is real."""
    monkeypatch.setenv("RECSYS_GCP_PROJECT", "test-project")
    _, bag = _commands("vertex", monkeypatch)
    from airflow.providers.common.compat.sdk import TaskDeferred
    from fake_launchers import FakeVertex

    fake = FakeVertex().install(monkeypatch)
    monkeypatch.setattr("fake_launchers._run", lambda command, env: None)  # submit only, run nothing
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", '{"conn_type": "google_cloud_platform"}')
    task = shard_task(bag.dags["recommend_predict"].get_task("predict"))
    task.container_uri = "europe-west1-docker.pkg.dev/test-project/recsys/trainer@sha256:" + "0" * 64
    task.command = ["python", "-m", "trainer.predict_task", "--run-date", "2026-11-29"]
    task.labels = {"app": "recsys", "dag": "recommend_predict", "task": "predict", "run": "r", "try": "1"}
    ti = SimpleNamespace(xcom_push=lambda **kw: None, task_id="predict", dag_id="recommend_predict",
                         run_id="r", try_number=1, map_index=-1)
    context = {"ti": ti,
               "task": task, "dag_run": SimpleNamespace(run_id="r"), "logical_date": dt.datetime.now(dt.UTC)}
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    trigger = deferred.value.trigger
    assert type(trigger).__name__ == "CancellingTrainingPipelineTrigger"
    assert deferred.value.timeout == task.execution_timeout  # Airflow 3 won't apply it to a deferral
    [submitted] = fake.submitted
    assert trigger.job_id == next(iter(fake.pipelines))
    assert submitted["container_uri"] == task.container_uri
    assert submitted["command"][:3] == ["python", "-m", "trainer.predict_task"]
    assert submitted["region"] == "europe-west1" and submitted["project_id"] == "test-project"


def test_docker_operator_uses_the_image_and_emulator_environment(monkeypatch):
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://bigquery:9050")
    monkeypatch.setenv("BIGQUERY_STORAGE_EMULATOR_HOST", "bigquery:9060")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://gcs:4443")
    monkeypatch.setenv("RECSYS_DOCKER_NETWORK", "recsys")
    _, bag = _commands("docker", monkeypatch)
    from airflow.providers.docker.operators.docker import DockerOperator

    for dag_id, tasks in TRAINER_TASKS.items():
        for task_id in tasks:
            task = shard_task(bag.dags[dag_id].get_task(task_id))
            # The task builds the stock operator (subclassed) when it executes, with its arguments.
            op = task.container()
            assert isinstance(op, DockerOperator) and op.task_id == task.task_id
            assert (op.image, op.command, op.environment) == (task.image, task.command, task.environment)
            assert op.do_xcom_push is task.do_xcom_push is True  # the container's last line: XCom
            # What the provider templates among these arguments, the task templates too.
            assert {f for f in op.template_fields if hasattr(task, f)} <= set(task.template_fields)
            assert op.image == "{{ ti.xcom_pull(task_ids='resolve_image') }}"
            assert op.environment["BIGQUERY_EMULATOR_HOST"] == "http://bigquery:9050"
            assert op.environment["BIGQUERY_STORAGE_EMULATOR_HOST"] == "bigquery:9060"
            assert op.environment["STORAGE_EMULATOR_HOST"] == "http://gcs:4443"
            assert op.network_mode == "recsys" and op.auto_remove == "success"
            assert (op.mount_tmp_dir, op.tty) == (False, False)


@pytest.fixture(scope="module")
def whole_folder_parses() -> dict[str, dict]:
    """runtime -> the whole of dags/ parsed in a fresh DAG-processor-like child (fresh_parse.py)."""
    from conftest import DAGS, PLUGINS, TESTS
    from fresh_parse import parse_in_fresh_children

    runtimes = ["local", "docker", "vertex"]
    results = parse_in_fresh_children([(r, str(DAGS), str(DAGS)) for r in runtimes], str(PLUGINS), TESTS)
    return dict(zip(runtimes, results, strict=True))


@pytest.mark.parametrize("runtime", ["local", "docker", "vertex"])
def test_no_parse_imports_a_heavy_provider_module(runtime, whole_folder_parses):
    """The Vertex and Docker operators are imported when a task executes (operators/vertex.py,
    operators/docker_trainer.py), the GCS sensor when it runs (operators/sensors.py)."""
    result = whole_folder_parses[runtime]
    assert result["errors"] == {} and len(result["dags"]) == 6, result
    assert result["heavy"] == []


def test_a_gpu_setting_is_refused_since_the_image_cannot_use_one(monkeypatch):
    """implicit's CUDA extension needs cuBLAS/RMM, which the image does not ship: a Vertex GPU
    would be billed and never used, so the old setting fails the parse with one clear line."""
    from operators import config

    monkeypatch.setenv("RECSYS_VERTEX_ACCELERATORS", '{"train_task": "NVIDIA_TESLA_T4:1"}')
    with pytest.raises(config.ConfigError, match=r"RECSYS_VERTEX_ACCELERATORS is not supported: .*CPU-only"):
        config.load()


@pytest.mark.parametrize("runtime", ["docker", "vertex"])
def test_the_trainers_clock_reaches_every_step_in_every_runtime(runtime, monkeypatch):
    """``RECSYS_TODAY`` (the trainer's "today", which run dates must precede; set by the test
    suites, unset in production) reaches each trainer step's environment. Docker and Vertex
    steps get an allowlisted environment, which must name it; the local launcher passes its
    whole environment (the end-to-end tests' 2027 run dates run under it)."""
    monkeypatch.setenv("RECSYS_TODAY", "2031-02-03")
    monkeypatch.setenv("RECSYS_RUNTIME", runtime)
    bag = load_dagbag()
    for dag_id, tasks in TRAINER_TASKS.items():
        for task_id in tasks:
            task = shard_task(bag.dags[dag_id].get_task(task_id))
            env = task.environment_variables if runtime == "vertex" else task.environment
            assert env.get("RECSYS_TODAY") == "2031-02-03", (dag_id, task_id)
