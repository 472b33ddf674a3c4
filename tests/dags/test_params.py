"""The trigger form's limits equal what the trainer accepts.

Every numeric param of each DAG is set to its minimum and to its maximum (the others at their
defaults), an integer one also as a whole-number float (``64.0``: JSON Schema counts it as an
integer, so the form accepts it, and a REST client's JSON may carry it); every trainer step of
that DAG then checks the arguments the run would pass it with its own rules (``--validate-only``
of the real entry point, in the trainer's virtualenv), and must accept them. Just outside those
limits the form itself must refuse the value, so no run can start with arguments its steps will
refuse.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
from types import SimpleNamespace

import pytest
from conftest import REPO, load_dagbag, shard_task

from operators.macros import MACROS

TRAINER_PY = REPO / ".venv" / "trainer" / "bin" / "python"
LOGICAL_DATE = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)

# Runs each (step, argv) through the step's real entry point with --validate-only.
VALIDATE = """
import importlib, json, sys
from trainer.step import cli
codes = []
for step, argv in json.load(sys.stdin):
    module = importlib.import_module(f"trainer.{step}")
    try:
        codes.append(cli.run_step(step, module.main, module.build_parser(), [*argv, "--validate-only"],
                                  validate=module.validate))
    except SystemExit as exc:  # argparse refusing a value
        codes.append(exc.code)
print("CODES=" + json.dumps(codes))
"""


def _kind(schema: dict) -> str | None:
    """A param's JSON type, null left aside (``["null", "integer"]``: a nullable integer)."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else [k for k in kinds or () if k != "null"]
    return kinds[0] if len(kinds) == 1 else None


def _numeric(dag) -> dict[str, dict]:
    return {name: dag.params.get_param(name).schema for name in dag.params
            if _kind(dag.params.get_param(name).schema) in ("integer", "number")}


def _enumerated() -> list[tuple[str, str, str, object]]:
    """Each value of each enumerated param (``tune``, ``weighting``), null included."""
    bag = load_dagbag()
    return [(dag_id, name, "enum", value) for dag_id, dag in sorted(bag.dags.items())
            for name in sorted(dag.params) for value in dag.params.get_param(name).schema.get("enum", ())]


def _cases() -> list[tuple[str, str, str, object]]:
    bag = load_dagbag()
    return [(dag_id, name, bound, schema[bound])
            for dag_id, dag in sorted(bag.dags.items())
            for name, schema in sorted(_numeric(dag).items())
            for bound in ("minimum", "maximum")]


def _accepted_values() -> list[tuple[str, str, str, object]]:
    """Each bound of ``_cases``, and for an integer param the same bound as a float."""
    bag = load_dagbag()
    values = []
    for dag_id, name, bound, value in _cases():
        values.append((dag_id, name, bound, value))
        if _kind(bag.dags[dag_id].params.get_param(name).schema) == "integer":
            values.append((dag_id, name, f"{bound} as a float", float(value)))
    return values + _enumerated()


def _rendered_steps(dag, values: dict) -> list[tuple[str, list[str]]]:
    run = SimpleNamespace(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE, run_type="scheduled")
    # XCom as a run where nobody had to decide on the day has it (create_cf_matrices reads the decision)
    ti = SimpleNamespace(xcom_pull=lambda task_ids: None)
    steps = []
    for mapped in dag.tasks:
        task = shard_task(mapped, int(values.get("n_shards", 1)) - 1)  # a sharded step: its last shard
        if hasattr(task, "step"):  # a trainer step (conftest: the local runtime's operator)
            context = {"params": values, "dag_run": run, "task": task, "ti": ti, **MACROS}
            steps.append((task.step, [str(a) for a in task.render_template(task.arguments, context)]))
    return steps


def test_every_step_accepts_each_param_at_its_minimum_and_maximum():
    if not TRAINER_PY.exists():
        pytest.fail(f"{TRAINER_PY} missing: run `make venvs`")
    bag = load_dagbag()
    cases, calls = [], []
    for dag_id, name, bound, value in _accepted_values():
        dag = bag.dags[dag_id]
        form = copy.deepcopy(dag.params)
        form[name] = value  # the form accepts it (raises otherwise)
        values = {**{k: dag.params[k] for k in dag.params}, name: form[name]}
        for step, argv in _rendered_steps(dag, values):
            cases.append((dag_id, name, bound, value, step))
            calls.append((step, argv))
    assert {c[0] for c in cases} == {"recommend_train", "recommend_predict", "recommend_feedback"}
    predict_steps = {c[4] for c in cases if c[0] == "recommend_predict"}
    assert predict_steps == {"predict_window_task", "predict_task", "publish_predictions_task"}
    done = subprocess.run([str(TRAINER_PY), "-c", VALIDATE], input=json.dumps(calls),
                          capture_output=True, text=True, check=True)
    codes = json.loads(done.stdout.split("CODES=")[1])
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    refused = [case for case, code in zip(cases, codes, strict=True) if code != 0]
    assert refused == [], f"{refused}\n" + "\n".join(errors)


@pytest.mark.parametrize("dag_id, name, bound, value", _cases())
def test_the_form_refuses_each_param_just_outside_its_limits(dag_id, name, bound, value):
    from airflow.providers.common.compat.sdk import ParamValidationError

    params = copy.deepcopy(load_dagbag().dags[dag_id].params)
    step = 1 if _kind(params.get_param(name).schema) == "integer" else 1e-6
    outside = value - step if bound == "minimum" else value + step
    with pytest.raises(ParamValidationError):
        params[name] = outside


def test_every_param_is_a_draft_07_schema():
    """Airflow checks each Param's schema against its dialect's meta-schema every time it
    validates a value, at every parse once per task and Param; draft-07's check costs about a
    quarter of 2020-12's, jsonschema's default when ``$schema`` is absent (docs/benchmarks.md)."""
    from jsonschema import Draft7Validator, validators

    checked = 0
    for dag_id, dag in sorted(load_dagbag().dags.items()):
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            assert validators.validator_for(schema, default=None) is Draft7Validator, (dag_id, name)
            Draft7Validator.check_schema(schema)
            checked += 1
    assert checked >= 10
