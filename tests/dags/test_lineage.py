"""OpenLineage from every trainer step (operators/lineage.py): the provider's own listener and
file transport around real Airflow runs in the local runtime, each event read back with the
openlineage-python classes; and the facets' values, which a trigger or the data can carry,
shown as text."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import cattrs
import pytest
from conftest import PLUGINS, REPO, TESTS

TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
DAY = dt.date(2027, 3, 10)  # a window no other test reads
PROJECT, DATASET = "test-project", "recsys_lineage"
BUCKET, PREFIX = "recsys-test", "lineage"
TRAIN_CONF = {"lookback_days": 20, "factors": 16, "iterations": 8, "tune": "off"}
PREDICT_CONF = {"lookback_days": 20, "n_recommendations": 5}


def _table(name: str) -> tuple[str, str]:
    return ("bigquery", f"{PROJECT}.{DATASET}.{name}")


def _object(path: str) -> tuple[str, str]:
    return (f"gs://{BUCKET}", f"{PREFIX}/{path}")


def _read_events(path) -> list:
    """Every line of the file transport as openlineage-python's RunEvent (attrs validates each
    field: a malformed run id, time, event type or dataset fails here)."""
    from openlineage.client.event_v2 import RunEvent

    converter = cattrs.Converter(forbid_extra_keys=False)
    events = []
    for line in path.read_text().splitlines():
        raw = json.loads(line)
        if raw.get("eventType") is None:
            continue  # job or dataset events: none expected, and no run to check
        event = converter.structure(raw, RunEvent)
        events.append((event, raw))
    return events


@pytest.fixture(scope="module")
def lineage_run(emulators, airflow_db, slack, tmp_path_factory):
    """One train -> predict -> feedback run for DAY in a fresh interpreter with the file
    transport configured: its events, run states and the model it trained."""
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", PROJECT, "--dataset", DATASET,
                    "--end-date", str(DAY + dt.timedelta(days=1)), "--days", "21", "--users", "400",
                    "--items", "100", "--events", "16000", "--clusters", "5", "--log-level", "WARNING"],
                   check=True, env=os.environ)
    events_file = tmp_path_factory.mktemp("lineage") / "events.jsonl"
    env = {**os.environ, "RECSYS_BQ_DATASET": DATASET, "RECSYS_ARTIFACTS_URI": f"gs://{BUCKET}/{PREFIX}",
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
               {"type": "file", "log_file_path": str(events_file), "append": True}),
           "AIRFLOW__OPENLINEAGE__NAMESPACE": "recsys-test",
           "AIRFLOW_VAR_RECSYS_TRAINER_IMAGE": "recsys-trainer:dev"}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "dags" / "support" / "lineage_run.py"),
                           str(PLUGINS), TESTS, str(DAY), json.dumps(TRAIN_CONF), json.dumps(PREDICT_CONF)],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    [result] = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT=")]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    [model] = client.query(f"SELECT model_id FROM `{PROJECT}.{DATASET}.model_metrics`").result()
    return {"runs": result, "events": _read_events(events_file), "model_id": model["model_id"]}


def _expected(model_id: str) -> dict[str, tuple[list, list]]:
    """The table of operators/lineage.py for this run (tune off: no tuning_trials; the first model:
    nothing published to compare with; predict_window reused create_cf_matrices' window)."""
    run = f"runs/{DAY}"
    model = _object(f"models/{model_id}")
    matrices = _object(f"{run}/matrices.npz")
    part = _table(f"_part_recommendations_{DAY:%Y%m%d}_0_of_1")
    return {
        "recommend_train.check_events": ([_table("events")],
                                         [_table("event_stats"), _object(f"{run}/event_stats.json")]),
        "recommend_train.create_cf_matrices": (
            [_table("events")],
            [matrices, _object(f"{run}/window.npz"), _object(f"{run}/manifest.json"), _table("event_stats")]),
        "recommend_train.train": ([matrices], [model, _object(f"{run}/candidate.json")]),
        "recommend_train.evaluate": (
            [model, matrices],
            [_table("model_metrics"), _object(f"models/{model_id}/evaluation.json"),
             _object(f"models/{model_id}/report.html")]),
        "recommend_train.promote_model": ([model, _table("model_metrics")],
                                          [_object("models/LATEST"), _table("publications")]),
        "recommend_predict.predict_window": (
            [_table("events"), _object(f"{run}/window.npz")],
            [_object(f"{run}/predict-window/0-of-1.npz"), _object(f"{run}/predict-window.json")]),
        "recommend_predict.predict": (
            [_object("models/LATEST"), model, _object(f"{run}/predict-window/0-of-1.npz")], [part]),
        "recommend_predict.publish_predictions": (
            [part], [_table("recommendations"), _table("recommendations_latest")]),
        "recommend_feedback.feedback": ([_table("recommendations"), _table("events")],
                                        [_table("serving_metrics")]),
    }


def _datasets(datasets) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets or []]


def test_every_trainer_step_emits_its_inputs_and_outputs_on_completion(lineage_run):
    runs = lineage_run["runs"]
    assert {dag: run["state"] for dag, run in runs.items()} == dict.fromkeys(runs, "success"), runs
    events = lineage_run["events"]
    assert events, "no OpenLineage event was written"
    complete = {}
    for event, _ in events:
        if str(event.eventType.value) == "COMPLETE":
            assert event.job.name not in complete, f"two COMPLETE events for {event.job.name}"
            complete[event.job.name] = event
    expected = _expected(lineage_run["model_id"])
    got = {job: (_datasets(complete[job].inputs), _datasets(complete[job].outputs))
           for job in expected if job in complete}
    assert got == expected
    # every task's run starts and completes; the namespace is the deployment's
    assert {e.job.namespace for e, _ in events} == {"recsys-test"}
    starts = {e.job.name for e, _ in events if str(e.eventType.value) == "START"}
    assert set(expected) <= starts


def test_the_window_and_the_model_ride_as_facets(lineage_run):
    """``events`` carries the days read as a subset (the data check: the run date and the 7
    before it); train, evaluate and promote carry the
    model's id, image, settings (and, once evaluated, its verdict and figures)."""
    raw = {r["job"]["name"]: r for _, r in lineage_run["events"] if r["eventType"] == "COMPLETE"}
    for task, days in (("create_cf_matrices", 19), ("check_events", 7)):  # the window; the day + 7
        [events_input] = raw[f"recommend_train.{task}"]["inputs"]
        condition = events_input["inputFacets"]["subset"]["inputCondition"]
        assert condition["operator"] == "AND"
        start, end = condition["left"], condition["right"]
        assert (start["comparison"], start["left"]["field"]) == ("GREATER_EQUAL_THAN", "event_date")
        assert (end["comparison"], end["right"]["value"]) == ("LESS_EQUAL_THAN", str(DAY))
        assert dt.date.fromisoformat(start["right"]["value"]) == DAY - dt.timedelta(days=days), task

    model_id = lineage_run["model_id"]
    for task in ("train", "evaluate", "promote_model"):
        facet = raw[f"recommend_train.{task}"]["run"]["facets"]["recsys_model"]
        assert facet["model_id"] == model_id, (task, facet)
        assert facet["image"].startswith("recsys-trainer:dev@sha256:"), facet
        assert facet["settings"]["factors"] == "16" and facet["settings"]["iterations"] == "8", facet
        assert facet["_schemaURL"] == "urn:recsys:openlineage:RecsysModelRunFacet:1"
    assert "evaluation" not in raw["recommend_train.train"]["run"]["facets"]["recsys_model"]
    evaluation = raw["recommend_train.evaluate"]["run"]["facets"]["recsys_model"]["evaluation"]
    assert evaluation["verdict"] == "pass" and 0 < evaluation["model"]["recall"] <= 1, evaluation


def test_values_from_a_trigger_or_the_data_are_text_in_a_facet():
    """A rollback's model id comes from a trigger, an image reference from a param: a facet shows
    them as text (what a lineage UI renders never turns into markup or a ping), bounded."""
    from operators import contract
    from operators.lineage import StepRun, operator_lineage, step_lineage

    run = StepRun(step="promote_model_task", run_date="2026-11-29", status_name="recommend_rollback.rollback",
                  artifacts_uri="gs://b/r", arguments=("--project", "p", "--dataset", "d",
                                                       "--rollback-to", "als-20261129-0123456789"))
    hostile = "<!channel> & <script>x</script>\x00\x1b[31m" + "a" * 500
    status = contract.status_record_uri("gs://b/r", "2026-11-29", "recommend_rollback.rollback")
    records = {
        status: {"image": hostile},
        "gs://b/r/models/als-20261129-0123456789/model.json": {"params": {"factors": hostile}},
        "gs://b/r/models/als-20261129-0123456789/evaluation.json": {"verdict": hostile, "metrics": {
            "model": {"recall": 0.5, "note": hostile}}},
    }
    lineage = step_lineage(run, records.get)
    facet = operator_lineage(lineage).run_facets["recsys_model"]
    for value in (facet.image, facet.settings["factors"], facet.evaluation["verdict"]):
        assert value.startswith("&lt;!channel&gt; &amp; &lt;script&gt;x&lt;/script&gt;  [31m"), value
        assert len(value) == 300 and "<" not in value and "\x00" not in value
    assert facet.evaluation["model"] == {"recall": 0.5}  # figures only
    assert [d.name for d in operator_lineage(lineage).inputs] == [
        "r/models/als-20261129-0123456789", "p.d.model_metrics"]


SWITCH_PROBE = """
from airflow.providers.openlineage.plugins.openlineage import OpenLineageProviderPlugin
print("LISTENERS=%d" % len(OpenLineageProviderPlugin.listeners))
"""


@pytest.mark.parametrize("settings, listening", [
    ({}, 0),  # no transport: the provider stays disabled, as upstream
    ({"AIRFLOW__OPENLINEAGE__TRANSPORT": '{"type": "console"}'}, 1),
    ({"AIRFLOW__OPENLINEAGE__TRANSPORT": '{"type": "console"}', "AIRFLOW__OPENLINEAGE__DISABLED": "true"}, 0),
])
def test_lineage_is_on_only_with_a_transport_and_the_switch_turns_it_off(settings, listening):
    """What docs/operations.md#lineage tells operators, in a fresh interpreter per setting (the
    provider decides when its plugin loads): a transport turns the listener on, the provider's
    own switch turns it off again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__OPENLINEAGE__")}
    out = subprocess.run([sys.executable, "-c", SWITCH_PROBE], env={**env, **settings},
                         capture_output=True, text=True, check=True).stdout
    assert f"LISTENERS={listening}" in out, out
