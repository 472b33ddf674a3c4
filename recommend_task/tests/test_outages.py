"""Outages of the Google APIs during a step, against the real emulators behind a loopback
endpoint that fails for a while (docker/emulators/outage.py): a short outage is ridden out by
the clients' bounded retries, which the step's log shows; a dead endpoint fails the step within
the retry deadline, naming the endpoint, with nothing half-written."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from helpers import RUN_DATE, seed
from outage import flaky, unavailable

from trainer import artifacts


def _matrices(emulators, project, dataset, art: str, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.create_cf_matrices_task", "--project", project, "--dataset", dataset,
         "--run-date", str(RUN_DATE), "--artifacts-uri", art, "--lookback-days", "20"],
        capture_output=True, text=True, env={**emulators["env"], **env}, timeout=300)
    return proc, time.monotonic() - started


@pytest.mark.parametrize("mode, outage_s", [("503", 20), ("drop", 10)])
def test_a_bigquery_outage_of_seconds_is_ridden_out_and_logged(emulators, step, project, dataset,
                                                               gcs_artifacts, mode, outage_s):
    seed(step)
    with flaky(emulators["env"]["BIGQUERY_EMULATOR_HOST"], outage_s, mode) as (url, counts):
        proc, seconds = _matrices(emulators, project, dataset, gcs_artifacts,
                                  {"BIGQUERY_EMULATOR_HOST": url, "RECSYS_BQ_RETRY_DEADLINE_S": "90"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert counts["failed"] >= 2 and counts["passed"] >= 1, counts
    retries = [line for line in proc.stderr.splitlines() if "failed, retrying within 90s" in line]
    assert len(retries) >= 2, proc.stderr[-3000:]
    expected = "ServiceUnavailable" if mode == "503" else "ConnectionError"
    assert any(expected in line for line in retries), retries
    assert seconds >= outage_s  # it really waited the outage out (a lower bound, not a timing test)
    store = artifacts.ArtifactStore(project)
    assert store.exists(f"{gcs_artifacts}/runs/{RUN_DATE}/matrices.npz")


@pytest.mark.parametrize("service", ["BIGQUERY_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"])
def test_a_dead_endpoint_fails_the_step_within_its_retry_deadline_naming_it(emulators, step, project, dataset,
                                                                           gcs_artifacts, service):
    """The bound is each client's retry deadline: RECSYS_BQ_RETRY_DEADLINE_S and
    RECSYS_GCS_RETRY_DEADLINE_S (10 and 2 minutes by default; 5 s here). Nothing is left
    half-written either way."""
    seed(step)
    with unavailable() as url:
        proc, _ = _matrices(emulators, project, dataset, gcs_artifacts,
                            {service: url, "RECSYS_BQ_RETRY_DEADLINE_S": "5",
                             "RECSYS_GCS_RETRY_DEADLINE_S": "5"})
    assert proc.returncode == 75, proc.stderr[-3000:]  # transient: Airflow retries the task
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("ERROR: create_cf_matrices_task: "), error
    assert url in error if service == "STORAGE_EMULATOR_HOST" else url.removeprefix("http://") in error, error
    assert ("ServiceUnavailable" if service == "BIGQUERY_EMULATOR_HOST" else "503") in error, error
    store = artifacts.ArtifactStore(project)
    assert not store.exists(f"{gcs_artifacts}/runs/{RUN_DATE}/matrices.npz")
    assert not store.exists(f"{gcs_artifacts}/runs/{RUN_DATE}/window.npz")
