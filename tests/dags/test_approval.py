"""approve_anomalous_day without a run: when it asks, what it shows, and how a rejection or a
timeout fails (the end-to-end decisions are in test_end_to_end.py)."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import jinja2
import pytest

HOSTILE = "user '<!channel> **x** [y](http://evil.example)' made 50 % of the day's events (limit 10 %)"


def _approval(tmp_path, record: dict | None):
    from operators.approval import AnomalousDayApproval

    if record is not None:
        run = tmp_path / "runs" / "2026-11-29"
        run.mkdir(parents=True, exist_ok=True)
        (run / "event_stats.json").write_text(json.dumps(record))
    return AnomalousDayApproval(task_id="approve_anomalous_day", artifacts_uri=str(tmp_path),
                                run_date="2026-11-29", gcp_conn_id="google_cloud_default",
                                response_timeout=dt.timedelta(hours=4))


def _context(accept: bool = False) -> dict:
    return {"params": {"accept_anomalies": accept}, "run_id": "manual__1"}


@pytest.mark.parametrize("record, accept, why", [
    ({"status": "ok", "anomalies": [], "airflow_run_id": "manual__1"}, False, "passed the data check (ok)"),
    ({"status": "unchecked", "anomalies": [], "airflow_run_id": "manual__1"}, False, "(unchecked)"),
    ({"status": "anomaly", "anomalies": [HOSTILE], "airflow_run_id": "manual__1"}, True,
     "accept_anomalies is set"),
])
def test_nobody_is_asked_about_a_day_that_passed_or_was_accepted_when_triggered(
        tmp_path, record, accept, why):
    from airflow.providers.common.compat.sdk import AirflowSkipException

    with pytest.raises(AirflowSkipException, match=f".*{why.replace('(', '.').replace(')', '.')}"):
        _approval(tmp_path, record).execute(_context(accept))


def test_another_runs_record_is_refused_rather_than_decided_on(tmp_path):
    from airflow.providers.common.compat.sdk import AirflowFailException

    record = {"status": "anomaly", "anomalies": [HOSTILE], "airflow_run_id": "scheduled__0"}
    with pytest.raises(AirflowFailException, match=r"another run's .scheduled__0.: clear check_events too"):
        _approval(tmp_path, record).execute(_context())


def test_rejection_and_timeout_fail_naming_every_rule(tmp_path):
    from airflow.providers.common.compat.sdk import AirflowFailException

    rules = ["event type 'complete' vanished (limit 50 %): 0 events", HOSTILE]
    approval = _approval(tmp_path, {"status": "anomaly", "anomalies": rules, "airflow_run_id": "manual__1"})
    with pytest.raises(AirflowFailException) as timeout:
        approval.execute_complete(_context(), {"error": "timeout", "error_type": "timeout"})
    assert str(timeout.value) == ("no decision within 4:00:00: events of 2026-11-29 look wrong, nothing "
                                  "trained: " + "; ".join(rules))
    answer = {"chosen_options": ["Reject"], "params_input": {"reason": ""},
              "responded_at": dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC),
              "responded_by_user": {"id": "ana", "name": "ana"}}
    with pytest.raises(AirflowFailException) as rejected:
        approval.execute_complete(_context(), answer)
    assert str(rejected.value) == ("rejected by ana: events of 2026-11-29 look wrong, nothing trained: "
                                   + "; ".join(rules))
    approved = approval.execute_complete(_context(), {**answer, "chosen_options": ["Approve"],
                                                      "params_input": {"reason": "a release"}})
    assert approved == {"accepted_by": "ana", "accepted_at": "2026-11-30T09:00:00+00:00",
                        "reason": "a release"}


def test_the_decision_shows_the_datas_values_as_text():
    """A rule line quotes ids from the data: on the Required Actions page (Markdown) it stays text,
    never a link, emphasis or HTML."""
    from operators.approval import markdown_text

    shown = markdown_text(HOSTILE)
    assert "<" not in shown and "](" not in shown and "**" not in shown
    assert shown.replace("\\", "").replace("&lt;", "<").replace("&gt;", ">") == HOSTILE


def test_a_backfill_checks_and_refuses_while_other_runs_leave_the_day_to_a_person():
    from conftest import load_dagbag

    from operators import contract
    from operators.approval import DATA_CHECK_MODE

    check = load_dagbag().dags["recommend_train"].get_task("check_events")
    assert check.environment[contract.DATA_CHECK_ENV] == DATA_CHECK_MODE
    render = jinja2.Template(DATA_CHECK_MODE).render
    assert render(dag_run=SimpleNamespace(run_type="backfill")) == "refuse"
    for run_type in ("scheduled", "manual", "asset_triggered"):
        assert render(dag_run=SimpleNamespace(run_type=run_type)) == "decide"


@pytest.mark.parametrize("value", ["0", "30", "28801", "86400", "4h", ""])
def test_a_wait_that_could_block_the_next_days_run_is_refused_at_parse(monkeypatch, value):
    """RECSYS_APPROVAL_TIMEOUT_S sets the decision's wait and the run's dagrun_timeout (12 h plus
    it): a wait past 8 h, under a minute, or not a number fails the parse with one line."""
    from operators import config

    monkeypatch.setenv("RECSYS_APPROVAL_TIMEOUT_S", value)
    expected = r"^RECSYS_APPROVAL_TIMEOUT_S=.* must be seconds from 60 to 28800 "
    with pytest.raises(config.ConfigError, match=expected):
        config.load()


def test_the_longest_wait_still_ends_the_run_before_the_next_days(monkeypatch):
    from conftest import load_dagbag

    monkeypatch.setenv("RECSYS_APPROVAL_TIMEOUT_S", "28800")
    dag = load_dagbag().dags["recommend_train"]
    assert dag.get_task("approve_anomalous_day").response_timeout == dt.timedelta(hours=8)
    assert dag.dagrun_timeout == dt.timedelta(hours=20)  # under a day: the next run starts on time


def test_the_form_takes_only_a_bounded_reason(tmp_path):
    """What the form asks is the reason alone (on 3.1 the operator also holds the DAG's params),
    at most 500 characters: it is recorded in event_stats and reaches the step's environment."""
    approval = _approval(tmp_path, None)
    assert list(approval.serialized_params) == ["reason"]
    assert approval.serialized_params["reason"]["schema"]["maxLength"] == 500
    approval.validate_params_input({"reason": "x" * 500})
    with pytest.raises(ValueError, match="longer than 500 characters"):
        approval.validate_params_input({"reason": "x" * 501})
    with pytest.raises(ValueError, match=r"params_input \['accept_anomalies'\] not asked for"):
        approval.validate_params_input({"reason": "", "accept_anomalies": True})


def test_an_answer_the_trigger_refused_is_not_reported_as_a_timeout(tmp_path):
    """On 3.1 the provider's trigger ends with an error event for an answer whose params fail
    validation, not only on a timeout: the failure names what happened."""
    from airflow.providers.common.compat.sdk import AirflowFailException

    record = {"status": "anomaly", "anomalies": [HOSTILE], "airflow_run_id": "manual__1"}
    approval = _approval(tmp_path, record)
    with pytest.raises(AirflowFailException) as refused:
        approval.execute_complete(_context(), {"error": "Invalid input for param reason: too long",
                                               "error_type": "validation"})
    assert str(refused.value) == ("the answer was refused (Invalid input for param reason: too long): "
                                  "events of 2026-11-29 look wrong, nothing trained: " + HOSTILE)
