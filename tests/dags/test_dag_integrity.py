"""DAG integrity: parse every file under dags/ with no DB, Variables, connections or network,
and check the run settings a demanding operator relies on. No metadata DB needed."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
from conftest import DAGS, load_dagbag

EXPECTED = {"recommend_train", "recommend_predict", "recommend_rollback", "recommend_freshness",
            "recommend_feedback", "recommend_forget"}


class ParseTimeAccess(AssertionError):
    pass


@pytest.fixture
def forbid_side_effects(monkeypatch):
    """Make any Variable, connection or network access during parsing raise."""
    from airflow.sdk import BaseHook, Variable

    def refuse(what):
        def _raise(*args, **kwargs):
            raise ParseTimeAccess(f"{what} accessed at parse time: {args[:2]}")
        return _raise

    monkeypatch.setattr(Variable, "get", refuse("Variable"))
    monkeypatch.setattr(BaseHook, "get_connection", refuse("connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("network"))
    monkeypatch.setattr(socket, "create_connection", refuse("network"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("DNS"))


@pytest.fixture(params=["local", "docker", "vertex"])
def dagbag(request, monkeypatch, forbid_side_effects):
    monkeypatch.setenv("RECSYS_RUNTIME", request.param)
    bag = load_dagbag()
    return bag


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == EXPECTED


RUNTIMES = ["local", "docker", "vertex"]
FILES = sorted(DAGS.glob("*.py"))


@pytest.fixture(scope="module")
def parse_times() -> dict[tuple[str, str], dict]:
    """(file name, runtime) -> its parse in a fresh DAG-processor-like child (fresh_parse.py)."""
    from conftest import PLUGINS, TESTS
    from support.fresh_parse import parse_in_fresh_children

    jobs = [(runtime, str(path), str(DAGS)) for path in FILES for runtime in RUNTIMES]
    source = parse_in_fresh_children(jobs, str(PLUGINS), TESTS)
    compiled = parse_in_fresh_children(jobs, str(PLUGINS), TESTS, bytecode=True)
    return {(Path(folder).name, runtime): {**s, "ms_bytecode": c["ms"]}
            for (runtime, folder, _), s, c in zip(jobs, source, compiled, strict=True)}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_parse_time_of_each_file(path, runtime, parse_times, capsys):
    """Each file parsed with Airflow imported and nothing else, so every import it makes is paid
    and counted: once compiling the project's modules from source (PYTHONDONTWRITEBYTECODE, as
    here), once from their bytecode (the figures are printed; no target is timed here). No parse
    imports a heavy provider module (the Vertex, Docker and GCS ones), in any runtime."""
    result = parse_times[(path.name, runtime)]
    assert result["errors"] == {} and len(result["dags"]) == 1, result
    assert result["heavy"] == []
    with capsys.disabled():
        print(f"\n  parse time {path.name} ({runtime}): {result['ms']} ms from source, "
              f"{result['ms_bytecode']} ms byte-compiled")


def test_airflow_loads_only_the_recommender_plugin_from_the_plugins_folder():
    """``plugins/operators`` and ``plugins/recommender`` are packages, not Airflow plugins, and
    ``plugins/.airflowignore`` keeps Airflow's plugin loader out of them: it loads
    ``recommender_plugin`` alone, which imports its page's app only in the API server. Otherwise the loader
    executes each of its modules as a top-level module in every Airflow process, and in every
    task when it builds the template context, importing the Vertex, Docker and GCS modules with
    them (5-6 s of start-up here for a task that does not inherit them, as under Celery) and
    making every dag-processor parse child fork from a heavier parent. The probe runs the loader
    as those processes do, on this Airflow (tests/dags/support/plugin_load.py)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import PLUGINS, TESTS

    probe = subprocess.run([sys.executable, os.path.join(TESTS, "support", "plugin_load.py"), str(PLUGINS)],
                           env={**os.environ, "RECSYS_RUNTIME": "vertex"},
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    assert (loaded["from_plugins"], loaded["heavy"]) == (
        ["operators", "operators.ui_links", "recommender_plugin"], [])


def test_no_cycles_and_tasks_in_pipeline_order(dagbag):
    for dag in dagbag.dags.values():
        order = [t.task_id for t in dag.topological_sort()]  # raises on a cycle
        assert len(order) == len(dag.tasks)
    train = dagbag.dags["recommend_train"]
    assert [t.task_id for t in train.topological_sort()] == [
        "resolve_image", "wait_for_events", "check_events", "approve_anomalous_day", "create_cf_matrices",
        "train", "evaluate", "promote_model"]
    predict = dagbag.dags["recommend_predict"]
    assert [t.task_id for t in predict.topological_sort()] == [
        "resolve_image", "wait_for_published_model", "predict_window", "plan_shards", "predict",
        "publish_predictions"]
    feedback = dagbag.dags["recommend_feedback"]
    assert [t.task_id for t in feedback.topological_sort()] == [
        "resolve_image", "wait_for_events", "feedback"]
    rollback = dagbag.dags["recommend_rollback"]
    assert [t.task_id for t in rollback.topological_sort()] == ["resolve_image", "rollback"]
    assert [a.name for a in rollback.get_task("rollback").outlets] == ["recsys_published_model"]
    assert type(rollback.timetable).__name__ == "NullTimetable"  # on demand only (schedule=None)


def test_run_settings(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags and "recsys" in dag.tags, dag.dag_id
        assert dag.catchup is False and dag.max_active_runs == 1, dag.dag_id
        assert dag.dagrun_timeout is not None and dag.doc_md
        assert dag.timetable is not None, dag.dag_id
        monitoring = dag.dag_id == "recommend_freshness"
        # The hourly check alerts through its task's failure callback only: a run-level success
        # message every hour would be noise, a run-level failure message a duplicate.
        assert bool(dag.on_success_callback and dag.on_failure_callback) is not monitoring, dag.dag_id
        for task in dag.tasks:
            assert task.owner == "ml-engineering", task.task_id
            assert task.execution_timeout is not None, task.task_id
            assert task.on_failure_callback and task.on_retry_callback, task.task_id
            # A refused image is not worth retrying; the freshness check's retry is its next run.
            if task.task_id not in ("resolve_image", "check_recommendations_fresh"):
                assert task.retries >= 1 and task.retry_exponential_backoff, task.task_id
            elif monitoring:
                assert task.retries == 0


def test_schedules_have_explicit_timezones_and_predict_follows_the_model_asset(dagbag):
    from airflow.timetables.assets import AssetOrTimeSchedule

    train, predict = dagbag.dags["recommend_train"], dagbag.dags["recommend_predict"]
    assert str(train.timetable._timezone) == "UTC" and train.timetable._expression == "0 3 * * *"
    feedback = dagbag.dags["recommend_feedback"].timetable
    assert str(feedback._timezone) == "UTC" and feedback._expression == "30 3 * * *"
    assert isinstance(predict.timetable, AssetOrTimeSchedule)
    assert str(predict.timetable.timetable._timezone) == "UTC"
    promote = train.get_task("promote_model")
    assert [a.name for a in promote.outlets] == ["recsys_published_model"]
    assert "recsys_published_model" in str(predict.timetable.asset_condition)


def test_every_param_has_a_schema(dagbag):
    expected = {
        "recommend_train": {"image_uri", "lookback_days", "factors", "iterations", "regularization",
                            "alpha", "weighting", "tune", "accept_anomalies"},
        "recommend_feedback": {"image_uri", "lookback_days"},
        "recommend_predict": {"image_uri", "lookback_days", "n_recommendations", "n_shards"},
        "recommend_rollback": {"image_uri", "model_id"},
        "recommend_forget": {"image_uri", "user_ids"},
    }
    for dag_id, names in expected.items():
        params = dagbag.dags[dag_id].params
        assert set(params.keys()) == names
        for name in names:
            param = params.get_param(name)
            assert param.schema.get("type") and param.description, (dag_id, name)
            schema = param.schema
            if schema["type"] in ("integer", "number"):
                assert "minimum" in schema and "maximum" in schema, (dag_id, name)
            if param.value in (None, ""):
                # The trigger form marks a non-nullable param with an empty default as missing.
                assert "null" in schema["type"], (dag_id, name)


def test_params_reject_out_of_range_values(dagbag):
    from airflow.providers.common.compat.sdk import ParamValidationError

    params = copy.deepcopy(dagbag.dags["recommend_predict"].params)
    params["n_recommendations"] = 5
    assert params.validate()["n_recommendations"] == 5
    with pytest.raises(ParamValidationError, match="less than the minimum"):
        params["n_recommendations"] = 0
    with pytest.raises(ParamValidationError):
        params["lookback_days"] = "thirty"


# The tasks that replace BigQuery rows in transactions: model_metrics and recommendations.
# The predict shards only stage their parts: they run in parallel, outside the pool; and
# create_cf_matrices and feedback upsert one row each with MERGE (event_stats, serving_metrics),
# which concurrent runs of other days do not conflict on.
WRITERS = {("recommend_train", "evaluate"), ("recommend_predict", "publish_predictions"),
           ("recommend_forget", "forget")}
# Every other trainer step: one slot each of the pool that bounds an environment's trainer jobs.
TRAINER_POOL = "recsys_trainer_jobs"
# On demand and not part of `make bench`: its budget is its own execution_timeout.
UNBENCHMARKED = {"forget_user_task"}


def _local_pools() -> dict[str, dict]:
    """docker/airflow/pools.json: what `make up` and docker compose create."""
    import json

    from conftest import REPO

    return json.loads((REPO / "docker" / "airflow" / "pools.json").read_text())


def _production_pool_slots() -> dict[str, int]:
    """deploy/composer/pool-slots.env: the slots deploy/composer/setup.sh gives each pool on Composer."""
    from conftest import REPO

    path = REPO / "deploy" / "composer" / "pool-slots.env"
    assert path.is_file(), f"{path.relative_to(REPO)}: deploy/composer sizes no pool for production"
    lines = [line.strip() for line in path.read_text().splitlines()]
    return {name: int(slots) for name, slots in
            (line.split("=", 1) for line in lines if line and not line.startswith("#"))}


def test_bigquery_writers_share_one_pool_of_one_slot_that_counts_deferred_tasks(dagbag):
    """Backfills have their own max_active_runs, so only a pool keeps two runs from writing one
    table at once; on Vertex the writers wait deferred, so the pool must count deferred tasks."""
    pools = _local_pools()
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if (dag.dag_id, task.task_id) in WRITERS:
                assert task.pool == "recsys_bigquery_writers" and task.pool_slots == 1, task.task_id
                assert pools[task.pool]["slots"] == 1, pools
                # Without include_deferred a deferred writer (Vertex) would free its slot.
                assert pools[task.pool]["include_deferred"] is True, pools
            elif not _trainer_step(task):
                assert task.pool == "default_pool", (dag.dag_id, task.task_id, task.pool)
    assert _production_pool_slots()["recsys_bigquery_writers"] == 1


def test_every_other_trainer_step_takes_a_slot_of_one_pool_that_bounds_the_environments_jobs(dagbag):
    """Backfills ignore the DAG's max_active_runs, predict fans out to n_shards jobs, and a deferred
    Vertex step holds no worker slot: only a pool bounds how many trainer jobs (Vertex jobs,
    containers, processes) one environment runs at once. Deferred tasks count, since a deferred
    step's job keeps running; the local stacks rehearse production's size."""
    from operators import config as recsys_config

    in_pool = set()
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if _trainer_step(task) and (dag.dag_id, task.task_id) not in WRITERS:
                where = (dag.dag_id, task.task_id, task.pool)
                assert (task.pool, task.pool_slots) == (TRAINER_POOL, 1), where
                in_pool.add((dag.dag_id, task.task_id))
    assert ("recommend_predict", "predict") in in_pool and ("recommend_train", "train") in in_pool
    assert recsys_config.load().trainer_pool == TRAINER_POOL
    pools, production = _local_pools(), _production_pool_slots()
    assert pools[TRAINER_POOL]["include_deferred"] is True, pools
    assert pools[TRAINER_POOL]["slots"] == production[TRAINER_POOL] > 0, (pools, production)
    assert set(production) == set(pools), "every pool is sized for production, none is left over"


def test_the_trainer_pool_is_named_by_the_environment(monkeypatch):
    from operators import config as recsys_config

    monkeypatch.setenv("RECSYS_TRAINER_POOL", "other_trainer_jobs")
    assert recsys_config.load().trainer_pool == "other_trainer_jobs"


def _budget(task):
    """Longest time one try of ``task`` may take: a sensor's timeout, else its execution_timeout,
    plus the time a person has to answer a human-in-the-loop task."""
    from datetime import timedelta

    from airflow.sdk import BaseSensorOperator

    if isinstance(task, BaseSensorOperator):
        return timedelta(seconds=task.timeout)
    return task.execution_timeout + (getattr(task, "response_timeout", None) or timedelta(0))


def _trainer_step(task) -> str | None:
    """The trainer step a task runs (a mapped task keeps it among its partial arguments)."""
    return getattr(task, "partial_kwargs", {}).get("step") or getattr(task, "step", None)


def _waves(dag, task, slots: dict[str, int]) -> int:
    """How many rounds of its pool a task's widest run takes: a mapped step runs the maximum
    ``n_shards`` of its DAG's params, ``slots // pool_slots`` at a time; anything else, once."""
    import math

    if not hasattr(task, "partial_kwargs"):
        return 1
    assert task.pool in slots, f"{dag.dag_id}.{task.task_id}: a mapped step outside a sized pool"
    width = dag.params.get_param("n_shards").schema["maximum"]
    return math.ceil(width / (slots[task.pool] // task.pool_slots))


def test_time_budgets_fit_the_run_and_the_day_and_leave_room_over_the_benchmark(dagbag):
    """The longest path (sensor timeout plus each step's execution_timeout and a decision's
    response_timeout, one try each, a mapped
    step's times the waves its maximum fan-out takes through its pool at production's size) fits
    in dagrun_timeout; dagrun_timeout stays under a day, so a stuck run never blocks the next one;
    every step may take at least 3 times its time in `make bench` (benchmarks/results.json)."""
    import json
    from datetime import timedelta

    from conftest import REPO

    bench = json.loads((REPO / "benchmarks" / "results.json").read_text())["steps"]
    slots = _production_pool_slots()
    steps_seen, waves_seen = set(), {}
    for dag in dagbag.dags.values():
        assert dag.dagrun_timeout < timedelta(hours=24), dag.dag_id
        longest: dict[str, timedelta] = {}
        for task in dag.topological_sort():
            before = max((longest[u] for u in task.upstream_task_ids), default=timedelta(0))
            waves = _waves(dag, task, slots)
            waves_seen[(dag.dag_id, task.task_id)] = waves
            longest[task.task_id] = before + _budget(task) * waves
            step = _trainer_step(task)
            if step:
                steps_seen.add(step)
                if step not in UNBENCHMARKED:
                    assert task.execution_timeout >= timedelta(seconds=3 * bench[step]["seconds"]), step
        assert max(longest.values()) <= dag.dagrun_timeout, (dag.dag_id, max(longest.values()))
    assert steps_seen == {"create_cf_matrices_task", "train_task", "evaluate_task", "promote_model_task",
                          "predict_window_task", "predict_task", "publish_predictions_task", "feedback_task",
                          "forget_user_task"}
    # train's timeout holds its longest tuning search too: the search gets at most two thirds of
    # the step's time budget (its timeout, RECSYS_TIME_BUDGET_S), the winner's refit the rest
    # (recommend_task/tests/test_tuning.py), and `make bench`'s tuned train step at 10M events
    # (the search and the refit) fits three times over.
    tuned = json.loads((REPO / "benchmarks" / "results.json").read_text())["tuning"]["train"]["tuned"]
    train = dagbag.dags["recommend_train"].get_task("train")
    assert train.execution_timeout >= timedelta(seconds=3 * tuned["step_s"]), tuned
    assert float(train.environment["RECSYS_TIME_BUDGET_S"]) == train.execution_timeout.total_seconds()
    # 64 shards (the param's maximum) over the trainer pool's 16 production slots: 4 waves.
    assert {k: w for k, w in waves_seen.items() if w > 1} == {("recommend_predict", "predict"): 4}


def test_train_is_told_its_timeout_so_it_refuses_a_run_that_cannot_finish_in_it(dagbag):
    """train_task's pre-flight (trainer/step/preflight.py) compares its estimate with the task's own
    execution_timeout, in every runtime."""
    from operators.contract import TIME_BUDGET_ENV

    train = dagbag.dags["recommend_train"].get_task("train")
    env = train.environment
    assert float(env[TIME_BUDGET_ENV]) == train.execution_timeout.total_seconds(), env


def test_a_rollback_needs_a_well_formed_model_id(dagbag):
    from airflow.providers.common.compat.sdk import ParamValidationError

    params = copy.deepcopy(dagbag.dags["recommend_rollback"].params)
    params["model_id"] = "als-20261129-ff0958af2f"
    assert params.validate()["model_id"] == "als-20261129-ff0958af2f"
    with pytest.raises(ParamValidationError):
        params["model_id"] = "../models/LATEST"
