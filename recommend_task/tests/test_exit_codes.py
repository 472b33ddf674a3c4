"""The image's exit-code contract (trainer.step.exit_codes) and the status record every step leaves:
2 = permanent (never retried), 75 = transient (retried), 1 = crash (retried)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
import requests
from google.api_core import exceptions as gexc
from trainer_support.helpers import RUN_DATE, seed

from trainer.core.errors import ConcurrentUpdateError, EmptyWindowError
from trainer.step import cli, exit_codes

ATTEMPT_ENV = {"RECSYS_STATUS_NAME": "recommend_predict.predict", "RECSYS_TRY_NUMBER": "3",
               "RECSYS_AIRFLOW_RUN_ID": "manual__2026-11-30",
               "RECSYS_TRAINER_IMAGE": "recsys-trainer@sha256:" + "a" * 64}


@pytest.mark.parametrize("exc, code", [
    (EmptyWindowError("no events"), 2),
    (ConcurrentUpdateError("models/LATEST changed"), 75),
    (gexc.NotFound("Table p:d.events not found"), 2),
    (gexc.BadRequest("Syntax error at [1:1]"), 2),
    (gexc.Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]), 2),
    (gexc.Forbidden("Exceeded rate limits", errors=[{"reason": "rateLimitExceeded"}]), 75),
    (gexc.BadRequest("Transaction is aborted due to concurrent update against table p.d.t"), 75),
    (gexc.ServiceUnavailable("backend unavailable"), 75),
    (gexc.InternalServerError("oops"), 75),
    (gexc.TooManyRequests("slow down"), 75),
    (gexc.RetryError("Timeout of 600.0s exceeded", gexc.ServiceUnavailable("down")), 75),
    (requests.ConnectionError("Connection refused"), 75),
    (KeyError("model_id"), 1),
])
def test_each_failure_gets_the_exit_code_of_its_kind(exc, code):
    got, message = exit_codes.classify(exc)
    assert got == code, message
    assert "\n" not in message and message


def _record(path) -> dict:
    return json.loads(path.read_text())


def test_a_permanent_error_exits_2_and_leaves_a_status_record_of_this_attempt(step, tmp_path, monkeypatch):
    for name, value in ATTEMPT_ENV.items():
        monkeypatch.setenv(name, value)
    rc, err = step("predict_task", "--run-date", str(RUN_DATE), "--artifacts-uri", str(tmp_path))
    assert rc == 2
    last = err.strip().splitlines()[-1]
    record = _record(tmp_path / "runs" / str(RUN_DATE) / "status" / "recommend_predict.predict.json")
    assert last == f"ERROR: predict_task: {record['error']}" and "no published model" in last
    assert {k: record[k] for k in ("step", "exit_code", "outcome", "run_date", "try", "airflow_run_id",
                                   "image")} == {
        "step": "predict_task", "exit_code": 2, "outcome": "permanent", "run_date": str(RUN_DATE),
        "try": 3, "airflow_run_id": "manual__2026-11-30", "image": ATTEMPT_ENV["RECSYS_TRAINER_IMAGE"]}
    assert dt.datetime.fromisoformat(record["finished_at"]) >= dt.datetime.fromisoformat(record["started_at"])


def test_bad_arguments_are_permanent_and_still_recorded_when_the_run_is_known(step, tmp_path):
    rc, err = step("train_task", "--run-date", str(RUN_DATE), "--artifacts-uri", str(tmp_path),
                   "--factors", "many")
    assert rc == 2 and "bad arguments: argument --factors: invalid int value: 'many'" in err
    record = _record(tmp_path / "runs" / str(RUN_DATE) / "status" / "train_task.json")
    assert record["outcome"] == "permanent" and "--factors" in record["error"]


def test_a_successful_step_records_success(step, tmp_path):
    seed(step)
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE), "--lookback-days", "20",
                   "--artifacts-uri", str(tmp_path))
    assert rc == 0, err
    record = _record(tmp_path / "runs" / str(RUN_DATE) / "status" / "create_cf_matrices_task.json")
    assert (record["exit_code"], record["outcome"], record["error"]) == (0, "succeeded", "")
    # What the step measured of itself (make bench reads it): this step's phases and rows only.
    manifest = _record(tmp_path / "runs" / str(RUN_DATE) / "manifest.json")
    profile = record["profile"]
    assert set(profile["phases"]) == {"check", "read", "build", "write"}
    assert min(profile["phases"].values()) > 0
    counts = manifest["counts"]
    assert profile["counts"] == {"rows_in": manifest["quality"]["rows_read"],
                                 "rows_out": counts["train_nnz"] + counts["holdout_nnz"],
                                 "event_scans": 1}  # one scan: the quality counts and the aggregation
    assert sum(profile["phases"].values()) <= record["seconds"] and profile["peak_rss_mib"] > 50


def test_an_unexpected_exception_is_a_crash_with_its_traceback(tmp_path, capsys):
    def main(args):
        raise KeyError("model_id")

    parser = cli.base_parser("crash")
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    rc = cli.run_step("crashing_step", main, parser, ["--run-date", str(RUN_DATE),
                                                      "--artifacts-uri", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err
    assert err.strip().splitlines()[-1] == "ERROR: crashing_step: unexpected KeyError: 'model_id'"
    assert _record(tmp_path / "runs" / str(RUN_DATE) / "status" / "crashing_step.json")["outcome"] == "crash"


@pytest.fixture
def unavailable_bigquery():
    from outage import unavailable  # docker/emulators, on sys.path through conftest

    with unavailable() as url:
        yield url


def test_bigquery_answering_503_is_transient_in_a_real_process(emulators, project, tmp_path,
                                                                unavailable_bigquery):
    env = {**emulators["env"], "BIGQUERY_EMULATOR_HOST": unavailable_bigquery,
           "RECSYS_BQ_RETRY_DEADLINE_S": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.create_cf_matrices_task", "--project", project,
         "--dataset", "d", "--run-date", str(RUN_DATE), "--artifacts-uri", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 75, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "ServiceUnavailable" in errors[0], errors
    record = _record(tmp_path / "runs" / str(RUN_DATE) / "status" / "create_cf_matrices_task.json")
    assert record["outcome"] == "transient" and record["exit_code"] == 75


def test_the_status_record_holds_exactly_the_contracts_fields_at_the_contracts_path(monkeypatch):
    """The launchers read the record by trainer/contract.py (its twin beside the DAGs): a field
    added or dropped on one side only would be read as missing."""
    from trainer import contract
    from trainer.step import status_record

    for name, value in ATTEMPT_ENV.items():
        monkeypatch.setenv(name, value)
    started = dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC)
    record = status_record.build("predict_task", 75, "ServiceUnavailable: down", RUN_DATE, started,
                                 started + dt.timedelta(seconds=2))
    assert set(record) == set(contract.RECORD_FIELDS)
    assert record["outcome"] == "transient" and record["try"] == 3
    assert contract.is_record_of(record, "manual__2026-11-30", 3)
    assert status_record.record_uri("gs://b/p/", RUN_DATE, "predict_task") == (
        f"gs://b/p/runs/{RUN_DATE.isoformat()}/status/recommend_predict.predict.json")
