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
            out[(dag_id, task_id)] = list(op.command)
    return out, bag


def test_module_and_arguments_are_identical_in_all_runtimes(monkeypatch):
    local, _ = _commands("local", monkeypatch)
    docker, _ = _commands("docker", monkeypatch)
    vertex, _ = _commands("vertex", monkeypatch)
    assert local == docker == vertex
    for (dag_id, task_id), command in local.items():
        assert command[:3] == ["python", "-m", f"trainer.{TRAINER_TASKS[dag_id][task_id]}"]
        assert "--run-date" in command and "--artifacts-uri" in command and "--project" in command
    train = local[("recommend_train", "train")]
    assert "--factors={{ recsys_optional(recsys_whole(params.factors)) }}" in train
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
    from operators.launchers.vertex import display_name, pipeline_labels
    from operators.macros import MACROS

    monkeypatch.setenv("RECSYS_RUNTIME", runtime)
    predict = load_dagbag().dags["recommend_predict"].get_task("predict")
    assert hasattr(predict, "partial_kwargs") and predict.upstream_task_ids == {"plan_shards"}
    for shard in (0, 2):
        task = shard_task(predict, shard)
        when = dt.datetime(2026, 11, 30, 5, tzinfo=dt.UTC)
        ti = SimpleNamespace(try_number=1, map_index=shard, xcom_pull=lambda task_ids: "img",
                             dag_id="recommend_predict", task_id="predict", run_id="r")
        context = {"run_id": "r", "dag": SimpleNamespace(dag_id="recommend_predict"), "task": task,
                   "params": {"n_shards": 3, "lookback_days": 30, "n_recommendations": 10}, **MACROS,
                   "dag_run": SimpleNamespace(logical_date=when, run_after=when), "ti": ti}
        command = task.render_template(task.command, context)
        assert command[-4:] == ["--shard", str(shard), "--n-shards", "3"]
        env = task.render_template(task.environment, context)
        assert env["RECSYS_STATUS_NAME"] == f"recommend_predict.predict.{shard}"
        if runtime == "vertex":  # one pipeline per shard, and a retry adopts only its own
            assert pipeline_labels(ti, task.shard)["shard"] == str(shard)
            assert display_name(ti, task.shard).startswith(f"recsys-recommend_predict-predict-{shard}-r-try1")


def test_vertex_steps_are_deferrable_with_configured_machine_region_and_labels(monkeypatch):
    monkeypatch.setenv("RECSYS_VERTEX_REGION", "us-central1")
    monkeypatch.setenv("RECSYS_VERTEX_MACHINE_TYPES",
                       '{"default": "n2-standard-4", "train_task": "n2-highmem-16"}')
    monkeypatch.setenv("RECSYS_VERTEX_SERVICE_ACCOUNT", "trainer@p.iam.gserviceaccount.com")
    _, bag = _commands("vertex", monkeypatch)
    from operators.launchers import launcher_class
    from operators.launchers.vertex import VertexLauncher, display_name, pipeline_labels

    train = bag.dags["recommend_train"].get_task("train")
    evaluate = bag.dags["recommend_train"].get_task("evaluate")
    # One operator class for every step; the runtime's launcher submits the job when it runs.
    assert type(train).__name__ == type(evaluate).__name__ == "TrainerStepOperator"
    assert launcher_class(train.runtime) is VertexLauncher
    assert train.launch["region"] == "us-central1"
    machines = (train.launch["machine_type"], evaluate.launch["machine_type"])
    assert machines == ("n2-highmem-16", "n2-standard-4")
    assert train.launch["service_account"] == "trainer@p.iam.gserviceaccount.com"
    assert {"image", "arguments", "environment", "run_date"} <= set(train.template_fields)

    # Render what a run renders (minimal context, no DB); the labels come from the task instance.
    from operators.macros import MACROS

    run_id = "scheduled__2026-11-30T03:00:00+00:00"
    ti = SimpleNamespace(try_number=2, map_index=-1, xcom_pull=lambda task_ids: "recsys-trainer:dev",
                         dag_id="recommend_train", task_id="train", run_id=run_id)
    context = {"run_id": run_id, "dag": SimpleNamespace(dag_id="recommend_train"),
               "task": SimpleNamespace(task_id="train"), "ti": ti, "params": {"tune": "weekly"}, **MACROS}
    labels = pipeline_labels(ti, train.shard)
    assert {k: v for k, v in labels.items() if k != "key"} == {
        "app": "recsys", "dag": "recommend_train", "task": "train",
        "run": "scheduled__2026-11-30t03-00-00-00-00", "try": "2"}
    # The step learns its Airflow attempt and image, for its status record.
    env = train.render_template(train.environment, context)
    assert {k: env[k] for k in ("RECSYS_STATUS_NAME", "RECSYS_AIRFLOW_RUN_ID", "RECSYS_TRY_NUMBER",
                                "RECSYS_TRAINER_IMAGE")} == {
        "RECSYS_STATUS_NAME": "recommend_train.train", "RECSYS_AIRFLOW_RUN_ID": run_id,
        "RECSYS_TRY_NUMBER": "2", "RECSYS_TRAINER_IMAGE": "recsys-trainer:dev"}
    assert env["RECSYS_TUNE"] == "weekly"  # the run's `tune` param, for the step's --tune default
    assert all(len(v) <= 63 for v in labels.values())
    assert display_name(ti, train.shard) == (
        "recsys-recommend_train-train-scheduled__2026-11-30t03-00-00-00-00-try2")
    assert train.render_template(train.image, context) == "recsys-trainer:dev"


def test_vertex_submission_uses_rendered_image_and_command(monkeypatch):
    """FAKE: there is no local stand-in for the Vertex AI API, so the provider hook's list and
    submit calls are replaced (tests/dags/support/fake_launchers.py); the launcher is real."""
    monkeypatch.setenv("RECSYS_GCP_PROJECT", "test-project")
    _, bag = _commands("vertex", monkeypatch)
    from airflow.providers.common.compat.sdk import TaskDeferred
    from support.fake_launchers import FakeVertex

    fake = FakeVertex().install(monkeypatch)
    monkeypatch.setattr("support.fake_launchers._run", lambda command, env: None)  # submit only, run nothing
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", '{"conn_type": "google_cloud_platform"}')
    task = shard_task(bag.dags["recommend_predict"].get_task("predict"))
    task.image = "europe-west1-docker.pkg.dev/test-project/recsys/trainer@sha256:" + "0" * 64
    task.arguments = ["--run-date", "2026-11-29"]
    ti = SimpleNamespace(xcom_push=lambda **kw: None, task_id="predict", dag_id="recommend_predict",
                         run_id="r", try_number=1, map_index=-1)
    context = {"ti": ti,
               "task": task, "dag_run": SimpleNamespace(run_id="r"), "logical_date": dt.datetime.now(dt.UTC)}
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    trigger = deferred.value.trigger
    assert type(trigger).__name__ == "TrainingPipelineTrigger"
    assert deferred.value.timeout == task.execution_timeout  # Airflow 3 won't apply it to a deferral
    [submitted] = fake.submitted
    assert trigger.job_id == next(iter(fake.pipelines))
    assert submitted["container_uri"] == task.image
    assert submitted["command"] == ["python", "-m", "trainer.predict_task", "--run-date", "2026-11-29"]
    assert submitted["region"] == "europe-west1" and submitted["project_id"] == "test-project"


def test_docker_steps_use_the_image_and_emulator_environment(monkeypatch):
    """Every step's container: the run's image, the step's command, the emulator hosts, the
    compose network; removed once it ends. FAKE: the Docker engine API (fake_launchers.py)."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://bigquery:9050")
    monkeypatch.setenv("BIGQUERY_STORAGE_EMULATOR_HOST", "bigquery:9060")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://gcs:4443")
    monkeypatch.setenv("RECSYS_DOCKER_NETWORK", "recsys")
    _, bag = _commands("docker", monkeypatch)
    from support.fake_launchers import FakeDockerEngine

    for dag_id, tasks in TRAINER_TASKS.items():
        for task_id in tasks:
            task = shard_task(bag.dags[dag_id].get_task(task_id))
            assert type(task).__name__ == "TrainerStepOperator" and task.runtime == "docker"
            assert task.image == "{{ ti.xcom_pull(task_ids='resolve_image') }}"
            assert task.environment["BIGQUERY_EMULATOR_HOST"] == "http://bigquery:9050"
            assert task.environment["BIGQUERY_STORAGE_EMULATOR_HOST"] == "bigquery:9060"
            assert task.environment["STORAGE_EMULATOR_HOST"] == "http://gcs:4443"
            assert task.launch["network_mode"] == "recsys"
    # One step run through the launcher, as a worker runs it (rendered fields).
    image = FakeDockerEngine.image_id("recsys-trainer:dev")
    engine = FakeDockerEngine({"recsys-trainer:dev": image}).install(monkeypatch)
    monkeypatch.setattr("support.fake_launchers._run", lambda command, env: _Exited(0, "done\n"))
    task = bag.dags["recommend_train"].get_task("evaluate")
    task.image, task.arguments = image, ["--run-date", "2026-11-29"]
    task.environment = {k: v for k, v in task.environment.items() if "{" not in v}
    assert task.execute({"ti": SimpleNamespace(try_number=1)}) == "done"  # the last line: XCom
    [created] = engine.created
    assert (created["image"], created["command"]) == (image, task.command)
    assert created["environment"]["STORAGE_EMULATOR_HOST"] == "http://gcs:4443"
    assert created["host_config"]["network_mode"] == "recsys" and created["tty"] is False
    assert engine.containers["c0"].get("removed") is True


class _Exited:
    """A finished process, for a fake container that runs nothing."""

    def __init__(self, code: int, output: str) -> None:
        import io

        self.returncode, self.stdout = code, io.StringIO(output)

    def wait(self) -> int:
        return self.returncode

    def kill(self) -> None:
        pass


@pytest.fixture(scope="module")
def whole_folder_parses() -> dict[str, dict]:
    """runtime -> the whole of dags/ parsed in a fresh DAG-processor-like child (fresh_parse.py)."""
    from conftest import DAGS, PLUGINS, TESTS
    from support.fresh_parse import parse_in_fresh_children

    runtimes = ["local", "docker", "vertex"]
    results = parse_in_fresh_children([(r, str(DAGS), str(DAGS)) for r in runtimes], str(PLUGINS), TESTS)
    return dict(zip(runtimes, results, strict=True))


@pytest.mark.parametrize("runtime", ["local", "docker", "vertex"])
def test_no_parse_imports_a_heavy_provider_module(runtime, whole_folder_parses):
    """The Vertex and Docker hooks are imported when a task executes (operators/launchers/), the
    GCS hook and trigger when the sensor runs (operators/sensors.py)."""
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
            env = task.environment
            assert env.get("RECSYS_TODAY") == "2031-02-03", (dag_id, task_id)
