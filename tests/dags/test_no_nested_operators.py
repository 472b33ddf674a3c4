"""No operator is built and run inside another one's execute: a launcher calls hooks.

Airflow's Task SDK guards the task runner's own call of ``execute`` (``ExecutorSafeguard``): an
operator whose ``execute`` runs inside another task's logs "cannot be called outside of the Task
Runner!" on every try, and raises where ``allow_nested_operators`` is off. Here each runtime's
trainer task and the published-model sensor run through real Airflow (``dag.test()``, the guard
active: ``unit_test_mode`` off) while ``BaseOperator.__init__`` records every operator built
inside a running operator's ``execute``, ``execute_complete`` or ``poke``.

FAKE: the Vertex AI and Docker engine APIs (tests/dags/support/fake_launchers.py); the trainer step, the
deferral and its trigger, and the GCS emulator are real.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import load_dagbag
from support.fake_launchers import FakeDockerEngine, fake_vertex_runtime
from support.nested_operators import operators_built_while_executing

LOGICAL_DATE = dt.datetime(2026, 11, 30, 5, 0, tzinfo=dt.UTC)  # run date 2026-11-29
# "Today" for the trainer: the run date is after it, so the step starts, prints its one-line
# error and exits 2 at once, through the whole launch path.
TRAINER_TODAY = "2026-11-01"
ARTIFACTS = "gs://recsys-test/nested"
REGISTRY_IMAGE = "test-project/recsys/trainer"
DIGEST = "sha256:" + "6" * 64


@pytest.fixture(autouse=True)
def _safeguard_active(monkeypatch):
    """The Task SDK's guard is off in unit-test mode (read once, at import): these runs see it
    as production does."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    monkeypatch.setattr(ExecutorSafeguard, "test_mode", False)


@pytest.fixture(scope="module")
def own_db(emulators, airflow_db, slack):
    """This module's artifacts root is the published-model asset's URI: a metadata DB of its own
    (reset before and after) leaves the other modules' asset alone."""
    from airflow.utils import db

    db.resetdb()
    yield
    db.resetdb()


@pytest.fixture(params=["local", "docker", "vertex"])
def runtime(request, own_db, monkeypatch):
    """The runtime configured, its fake launcher installed; yields (name, launcher)."""
    monkeypatch.setenv("RECSYS_RUNTIME", request.param)
    monkeypatch.setenv("RECSYS_ARTIFACTS_URI", ARTIFACTS)
    monkeypatch.setenv("RECSYS_TODAY", TRAINER_TODAY)
    if request.param == "vertex":
        with fake_vertex_runtime(monkeypatch, REGISTRY_IMAGE, DIGEST) as (vertex, _):
            yield request.param, vertex
        return
    monkeypatch.setenv("AIRFLOW_VAR_RECSYS_TRAINER_IMAGE", "recsys-trainer:dev")
    if request.param == "docker":
        image_id = FakeDockerEngine.image_id("recsys-trainer:dev")
        yield request.param, FakeDockerEngine({"recsys-trainer:dev": image_id}).install(monkeypatch)
    else:
        yield request.param, None


def _run(dag_id: str, task_ids: list[str] | None = None,
         conf: dict | None = None) -> tuple[dict[str, str], list[str]]:
    """Run the real DAG ``dag_id`` (only ``task_ids`` where given) through ``dag.test()``; the
    task states, and the operators built while an operator ran."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    dag = load_dagbag().dags[dag_id]
    if task_ids:
        dag = dag.partial_subset(task_ids, include_upstream=False)
    with operators_built_while_executing() as built:
        run = dag.test(logical_date=LOGICAL_DATE, run_conf=conf)
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in
                  session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id)}
    return states, built


def test_a_trainer_step_builds_no_operator_while_it_runs(runtime):
    """The step really ran (refused its run date: exit 2, failed at once) and no operator was
    built while it did."""
    name, launcher = runtime
    states, built = _run("recommend_rollback", conf={"model_id": "als-20261101-0123456789"})
    assert built == [], f"operators built inside a running operator: {built}"
    assert states == {"resolve_image": "success", "rollback": "failed"}
    if name != "local":
        assert len(launcher.submitted if name == "vertex" else launcher.created) == 1


def test_the_published_model_sensor_builds_no_operator_while_it_waits(runtime):
    """Deferrable in the vertex runtime (the GCS trigger), rescheduling in the others."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    client.bucket("recsys-test").blob("nested/models/LATEST").upload_from_string(
        json.dumps({"model_id": "m1"}))
    states, built = _run("recommend_predict", ["wait_for_published_model"])
    assert states == {"wait_for_published_model": "success"}
    assert built == [], f"operators built inside a running operator: {built}"
