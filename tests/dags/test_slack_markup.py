"""Slack markup injection (issue 39 item 3): text a trigger or the data carries reaches Slack
escaped (``&`` ``<`` ``>``), so it can neither ping the channel nor disguise a link as one of
the notifier's own. Real DAG runs (dag.test, local runtime, the trainer in its virtualenv, the
emulators) and the real Slack provider posting to the loopback receiver. This module has its own
dataset and days; it keeps the suite's artifacts root, whose URI names the published-model asset:
a parse with another root would leave that asset inactive for the modules that run after it."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess

import pytest
from conftest import AIRFLOW_BASE_URL, REPO, load_dagbag

HOSTILE = "<!here> <https://example.invalid/login|Open in Airflow>"
ESCAPED = "&lt;!here&gt; &lt;https://example.invalid/login|Open in Airflow&gt;"
TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")
DATASET = "recsys_markup"
ANOMALY_DAY = dt.date(2027, 9, 20)  # its 20-day window and the feedback one do not overlap
FEEDBACK_RUN_DATE = dt.date(2027, 10, 21)  # measures the day before, served by the hostile model id
NOTIFIER_LINKS = ("Open in Airflow", "Evaluation report")

# Hand-made rows through the trainer tests' own loader (recommend_task/tests/trainer_support/helpers.py) and a
# served day loaded as recommend_task/tests/test_feedback.py's _serve does; the spec is JSON on stdin.
_LOAD = """
import datetime as dt, json, sys
import pyarrow as pa
sys.path.insert(0, "recommend_task/tests")
from trainer_support.helpers import load_events
from trainer.storage import bq, tables
from trainer.storage.clients import bigquery_client

spec = json.load(sys.stdin)
client = bigquery_client(spec["project"])
if spec.get("events"):
    load_events(client, spec["project"], spec["dataset"], [
        {**row, "event_timestamp": dt.datetime.fromisoformat(row["event_timestamp"]),
         "event_date": dt.date.fromisoformat(row["event_date"])} for row in spec["events"]])
if spec.get("served"):
    day = dt.date.fromisoformat(spec["served"]["day"])
    rows = [{"run_date": day, "user_id": user, "rank": 1, "item_id": spec["served"]["item"], "score": 1.0,
             "model_id": spec["served"]["model"], "generated_at": dt.datetime(2027, 10, 20, 5, tzinfo=dt.UTC)}
            for user in spec["served"]["users"]]
    arrow = pa.schema([("run_date", pa.date32()), ("user_id", pa.string()), ("rank", pa.int64()),
                       ("item_id", pa.string()), ("score", pa.float64()), ("model_id", pa.string()),
                       ("generated_at", pa.timestamp("us", tz="UTC"))])
    tables.ensure_all(client, spec["project"], spec["dataset"], "US")
    bq.load_table(client, pa.Table.from_pylist(rows, schema=arrow),
                  tables.table_id(spec["project"], spec["dataset"], tables.RECOMMENDATIONS),
                  list(tables.RECOMMENDATIONS_SPEC.schema), truncate=False)
"""


def _load(**spec) -> None:
    spec = {"project": "test-project", "dataset": DATASET, **spec}
    subprocess.run([TRAINER_PY, "-c", _LOAD], input=json.dumps(spec), text=True, check=True, env=os.environ,
                   cwd=REPO)


def _seed(end: dt.date, events: int) -> None:
    subprocess.run([TRAINER_PY, "-m", "trainer.seed_events", "--project", "test-project",
                    "--dataset", DATASET, "--end-date", str(end), "--days", "20", "--users", "600",
                    "--items", "120", "--events", str(events), "--clusters", "6", "--log-level", "WARNING"],
                   check=True, env=os.environ)


def _active_users(day: dt.date) -> list[str]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project="test-project", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    sql = f"SELECT DISTINCT user_id FROM `test-project.{DATASET}.events` WHERE event_date = '{day}'"
    return [row["user_id"] for row in client.query(sql).result()]


def _at(day: dt.date, hour: int = 3, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _assert_inert(messages: list[dict]) -> None:
    """No payload string holds the raw markup, and every ``<...>`` in it (Slack's only syntax for
    links, pings and mentions) is one of the notifier's own links into Airflow."""
    assert messages
    for message in messages:
        for text in _strings({k: v for k, v in message.items() if k != "path"}):
            assert "<!here>" not in text and HOSTILE not in text, text
            for inner in re.findall(r"<([^>]*)>", text):
                url, _, label = inner.partition("|")
                assert url.startswith(AIRFLOW_BASE_URL) and label in NOTIFIER_LINKS, (inner, text)
                assert not set(url) & set("<>| "), text  # a run id in it only percent-encoded


@pytest.fixture(scope="module")
def markup_env(emulators, airflow_db, slack):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_BQ_DATASET", DATASET)
        mp.setenv("AIRFLOW_VAR_RECSYS_TRAINER_IMAGE", "recsys-trainer:dev")
        yield mp


def test_a_hostile_run_id_and_image_uri_reach_slack_escaped(markup_env, slack, monkeypatch):
    """A manual run whose id and image_uri are Slack markup: resolve_image refuses the image
    (naming it), and the task and DAG failure messages show both as text. The default
    ``allowed_run_id_pattern`` refuses such an id; a deployment may widen it, as here.
    ``dag.test()`` takes no run id on Airflow 3.1 or 3.3, so the id it generates is replaced."""
    from airflow.models.dagrun import DagRun

    monkeypatch.setenv("AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN", r"^.+$")
    monkeypatch.setattr(DagRun, "generate_run_id", staticmethod(lambda **_: HOSTILE))
    slack.messages.clear()
    run = load_dagbag().dags["recommend_predict"].test(logical_date=_at(dt.date(2027, 8, 1)),
                                                       run_conf={"image_uri": HOSTILE})
    monkeypatch.undo()

    assert run.run_id == HOSTILE and str(run.state) == "failed"
    texts = slack.texts()
    [task] = [t for t in texts if "Task *resolve_image* of *recommend_predict* failed" in t]
    [dag] = [t for t in texts if t.startswith(":x: *recommend_predict* failed")]
    error = task.split("\nError: ")[1].splitlines()[0]
    assert f"trainer image '{ESCAPED}' is not allowed" in error, error
    for text in (task, dag):
        assert f"run `{ESCAPED}`" in text, text
    _assert_inert(slack.messages)


def test_an_anomalous_days_bot_user_and_item_reach_slack_escaped(markup_env, slack, api):
    """A day where one hand-made user, on one hand-made item, both named with Slack markup, makes
    a quarter of the events: the decision's message and the rejection name the user, as text."""
    from support.decisions import Decider

    _seed(ANOMALY_DAY, 40000)
    _load(events=[{"user_id": HOSTILE, "item_id": HOSTILE, "event_type": "view",
                   "event_timestamp": f"{ANOMALY_DAY}T{9 + n // 60:02d}:{n % 60:02d}:00+00:00",
                   "event_date": str(ANOMALY_DAY)} for n in range(700)])
    slack.messages.clear()
    decider = Decider(api, "recommend_train", "Reject", reason=HOSTILE)
    decider.start()
    try:
        run = load_dagbag().dags["recommend_train"].test(
            logical_date=_at(ANOMALY_DAY + dt.timedelta(days=1)),
            run_conf={"lookback_days": 20, "factors": 16, "iterations": 8})
    finally:
        decider.stop()

    assert str(run.state) == "failed"
    texts = slack.texts()
    [asked] = [t for t in texts if "*recommend_train* needs a decision" in t]
    [failed] = [t for t in texts if "Task *approve_anomalous_day* of *recommend_train* failed" in t]
    assert f"user '{ESCAPED}' made " in asked and f"user '{ESCAPED}' made " in failed, (asked, failed)
    _assert_inert(slack.messages)


def test_a_served_model_id_reaches_the_feedback_alert_escaped(markup_env, slack):
    """A served day whose recommendations.model_id is Slack markup, measured the next day: the
    served model did worse than popularity, and the alert names it as text."""
    served = FEEDBACK_RUN_DATE - dt.timedelta(days=1)
    _seed(FEEDBACK_RUN_DATE, 24000)
    _load(served={"day": str(served), "item": HOSTILE, "model": HOSTILE,
                  "users": sorted(set(_active_users(served)) | set(_active_users(FEEDBACK_RUN_DATE)))})
    slack.messages.clear()
    run = load_dagbag().dags["recommend_feedback"].test(
        logical_date=_at(FEEDBACK_RUN_DATE + dt.timedelta(days=1), 3, 30), run_conf={"lookback_days": 20})

    assert str(run.state) == "success"
    [alert] = slack.texts()
    assert alert.startswith(":warning: *recommend_feedback*: the served recommendations did worse"), alert
    assert f"served model {ESCAPED} on {served}: hit rate@1 0.000 is below popularity's" in alert, alert
    _assert_inert(slack.messages)


# --- the train summary's settings line: run_summaries.train over hand-made run records ------------

RUN = "gs://recsys-test/recsys/runs/2027-11-26"
MODEL_URI = "gs://recsys-test/recsys/models/als-20271126-0123456789"


def _train_records(trials: dict | None) -> dict[str, dict]:
    """The records a recommend_train run leaves (operators.contract), with ``trials`` as the
    model's trials.json (None: a model trained before the search existed)."""
    from operators import contract

    metrics = {"precision": 0.1, "recall": 0.2, "map": 0.05, "ndcg": 0.15}
    records = {
        contract.join(RUN, contract.EVENT_STATS_RECORD): {"summary": ["12,000 events"], "accepted": False},
        contract.join(RUN, contract.CANDIDATE_RECORD): {"model_id": "als-20271126-0123456789",
                                                        "model_uri": MODEL_URI},
        contract.join(MODEL_URI, contract.EVALUATION_RECORD): {
            "model_id": "als-20271126-0123456789", "verdict": "pass", "k": 10,
            "metrics": {"model": metrics, "popularity": metrics}},
        contract.join(RUN, contract.PROMOTION_RECORD): {"published": True, "reason": "newest model"},
    }
    if trials is not None:
        records[contract.join(MODEL_URI, contract.TRIALS_RECORD)] = trials
    return records


def _trials(source: str, **extra) -> dict:
    return {"model_id": "als-20271126-0123456789", "run_date": "2027-11-26", "tune": "weekly", "seed": 42,
            "k": 10, "source": source, "note": None, "tuned_on": None, "tuned_model_id": None,
            "settings": {"factors": 128, "regularization": 3.2, "alpha": 4.1, "weighting": "log1p"},
            "trials": [], **extra}


def _summary(trials: dict | None) -> str:
    from operators import run_summaries

    return run_summaries.train(_train_records(trials).get, RUN)


def _settings_line(text: str) -> str:
    [line] = [ln for ln in text.splitlines() if ln.startswith("settings: ")]
    return line


SETTINGS = "settings: factors 128, regularization 3.2, alpha 4.1, weighting log1p"


@pytest.mark.parametrize(("trials", "origin"), [
    (_trials("search", tuned_on="2027-11-26", trials=[
        {"trial": n, "winner": n == 1, "ndcg_at_10": 0.25 + n / 100, "status": "ok", "rung": 1 - (n > 6) * 2}
        for n in range(9)]),
     "searched this run: 7 of 9 candidates tried, best validation ndcg@10 0.2600"),
    (_trials("reused", tuned_on="2027-11-25", tuned_model_id="als-20271125-9876543210"),
     "reused from the search of 2027-11-25, model als-20271125-9876543210"),
    (_trials("default"), "today's defaults"),
    (_trials("default", note="too few validation users (12 < 50)"),
     "today's defaults; no search ran: too few validation users (12 &lt; 50)"),
    (_trials("params"), "set by the run's params"),
], ids=["search", "reused", "default", "default-with-note", "params"])
def test_the_train_summary_names_the_models_settings_and_where_they_came_from(trials, origin):
    text = _summary(trials)
    assert _settings_line(text) == f"{SETTINGS} ({origin})", text
    lines = text.splitlines()
    assert lines.index(_settings_line(text)) == 2  # after the data and the evaluation, before "published"
    assert lines[3] == "published", text


def test_a_model_without_trials_gets_no_settings_line():
    text = _summary(None)
    assert "settings:" not in text and "verdict *PASS*" in text and "published" in text, text


def test_hostile_tuning_values_reach_the_train_summary_escaped():
    """trials.json is data: a note, a model id, a setting or a figure holding Slack markup
    shows as text."""
    reused = _summary(_trials("reused", tuned_on=HOSTILE, tuned_model_id=HOSTILE, note=HOSTILE,
                              settings={"factors": 8, "weighting": HOSTILE}))
    assert _settings_line(reused) == (f"settings: factors 8, weighting {ESCAPED} (reused from the search "
                                      f"of {ESCAPED}, model {ESCAPED}; no search ran: {ESCAPED})"), reused
    hostile_winner = [{"winner": True, f"ndcg_at_{HOSTILE}": HOSTILE}]
    unknown = _summary(_trials(HOSTILE, k=HOSTILE, trials=hostile_winner))
    assert _settings_line(unknown).endswith(f"(source {ESCAPED})"), unknown
    searched = _summary(_trials("search", k=HOSTILE, trials=hostile_winner))
    assert _settings_line(searched).endswith(f"best validation ndcg@{ESCAPED} {ESCAPED})"), searched
    _assert_inert([{"text": text} for text in (reused, unknown, searched)])
