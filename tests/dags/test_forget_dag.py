"""recommend_forget end to end with RECSYS_RUNTIME=local: real Airflow (dag.test), the real
trainer in its own virtualenv, the BigQuery/GCS emulators and the loopback Slack receiver. A
learner trained on and served is forgotten by one trigger; afterwards the id is in no table or
artifact, Slack got counts and no id, and everyone else is still served."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, load_dagbag

sys.path.insert(0, str(REPO / "recommend_task" / "tests"))
from trainer_support import id_scan  # the trainer tests' scanner, independent of the trainer's code

LOGICAL_DATE = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
RUN_DATE = dt.date(2026, 11, 29)
TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
DATASET = "recsys_forget"
ARTIFACTS = "gs://recsys-test/forget"
LEARNER = "learner-forget-me-dag-91c2"


def _trainer(step: str, *args: str) -> None:
    subprocess.run([TRAINER_PY, "-m", f"trainer.{step}", "--project", "test-project", "--dataset", DATASET,
                    "--log-level", "WARNING", *args], check=True, env=os.environ)


def _bq():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})


def _learner_events() -> list[dict]:
    """Two events a day over the window: enough to be trained on and served."""
    rows = []
    for back in range(0, 15):
        day = RUN_DATE - dt.timedelta(days=back)
        for n in range(2):
            rows.append({"event_id": f"forget-{back}-{n}", "user_id": LEARNER,
                         "item_id": f"i{(back + n) % 9:03d}", "event_type": "complete",
                         "event_timestamp": f"{day}T09:0{n}:00Z", "event_date": str(day)})
    return rows


def _everywhere() -> list[str]:
    return (id_scan.tables_holding(_bq(), "test-project", DATASET, LEARNER)
            + id_scan.artifacts_holding(ARTIFACTS, "test-project", LEARNER))


@pytest.fixture(scope="module")
def served(emulators, airflow_db, slack):
    """Events with the learner in a dataset and artifacts root of this module's own, a model
    trained and published on them and a day served, all through the trainer's own steps."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_BQ_DATASET", DATASET)
        mp.setenv("RECSYS_ARTIFACTS_URI", ARTIFACTS)
        mp.setenv("AIRFLOW_VAR_RECSYS_TRAINER_IMAGE", "recsys-trainer:dev")
        _trainer("seed_events", "--end-date", str(RUN_DATE), "--days", "20", "--users", "300",
                 "--items", "80", "--events", "12000", "--clusters", "4")
        errors = _bq().insert_rows_json(f"test-project.{DATASET}.events", _learner_events())
        assert not errors, errors
        common = ("--run-date", str(RUN_DATE), "--artifacts-uri", ARTIFACTS)
        for step, extra in (("create_cf_matrices_task", ["--lookback-days", "20"]),
                            ("train_task", ["--factors", "8", "--iterations", "4"]),
                            ("evaluate_task", []), ("promote_model_task", []),
                            ("predict_task", ["--lookback-days", "20"])):
            _trainer(step, *common, *extra)
        yield mp


def test_the_forget_dag_runs_in_the_writers_pool_with_the_ids_as_one_inert_argument():
    dag = load_dagbag().dags["recommend_forget"]
    assert [t.task_id for t in dag.topological_sort()] == ["resolve_image", "forget"]
    forget = dag.get_task("forget")
    assert forget.pool == "recsys_bigquery_writers"
    assert type(dag.timetable).__name__ == "NullTimetable"  # on demand only
    assert dag.params.get_param("user_ids").schema["maxItems"] == 1000


def test_one_trigger_forgets_a_learner_everywhere_and_slack_gets_counts_not_ids(served, slack):
    before = _everywhere()
    for place in ("events.user_id", "recommendations.user_id", "/model.npz:user_ids_utf8.npy",
                  "/matrices.npz:user_ids_utf8.npy", "/window.npz:user_ids_utf8.npy"):
        assert any(found.endswith(place) for found in before), (place, before)
    dag = load_dagbag().dags["recommend_forget"]

    slack.messages.clear()
    refused = dag.test(logical_date=LOGICAL_DATE, run_conf={"user_ids": None})
    assert str(refused.state) == "failed"
    assert any("no learner to forget" in m["text"] for m in slack.messages), slack.messages
    assert _everywhere() == before  # a refused run erases nothing

    slack.messages.clear()
    run = dag.test(logical_date=LOGICAL_DATE + dt.timedelta(days=1),
                   run_conf={"user_ids": [LEARNER, "a learner never seen; $(rm -rf /)"]})
    assert str(run.state) == "success"
    assert _everywhere() == []
    texts = [m["text"] for m in slack.messages]
    assert len(texts) == 1 and texts[0].startswith(":white_check_mark: *recommend_forget*"), texts
    assert "forgot 2 learner(s), erased: events: rows" in texts[0] and LEARNER not in texts[0], texts
    record = json.loads(subprocess.run(
        [TRAINER_PY, "-c", "import sys; from trainer.storage import artifacts; "
         "print(artifacts.ArtifactStore('test-project').read_bytes(sys.argv[1]).decode())",
         f"{ARTIFACTS}/runs/{RUN_DATE + dt.timedelta(days=1)}/forget.json"],
        check=True, capture_output=True, text=True, env=os.environ).stdout)
    assert record["learners"] == 2 and record["erased"]["events: rows"] == 30

    # Everyone else: the published model still serves the day.
    _trainer("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", ARTIFACTS,
             "--lookback-days", "20")
    users = [dict(r.items()) for r in _bq().query(
        f"SELECT COUNT(DISTINCT user_id) AS n FROM `test-project.{DATASET}.recommendations`").result()]
    assert users[0]["n"] > 250 and _everywhere() == []
