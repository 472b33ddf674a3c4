"""Outages of the Google APIs during a step, against the real emulators behind a loopback
endpoint that fails for a while (docker/emulators/outage.py): a short outage is ridden out by
the clients' bounded retries, which the step's log shows; a dead endpoint fails the step within
the retry deadline, naming the endpoint, with nothing half-written."""

from __future__ import annotations

import fcntl
import re
import resource
import signal
import subprocess
import sys
import time

import pytest
from outage import flaky, unavailable
from trainer_support.helpers import RUN_DATE, seed

from trainer.storage import artifacts

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


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


def _limited(max_file_bytes: int):
    """Run the child as on a full disk: writing beyond ``max_file_bytes`` fails with EFBIG (the
    file-size limit, without root; a full tmpfs gives ENOSPC, handled the same way)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    return apply


def test_a_full_disk_fails_the_step_cleanly_and_no_truncated_file_is_ever_read(emulators, step, project,
                                                                              tmp_path):
    """FAULT INJECTION: the file-size limit of the step's process stands in for a full local
    artifacts disk. The model file is written whole or not at all; the step fails transient
    (Airflow retries it) naming the file; the retry on a disk with room succeeds."""
    seed(step)
    art = str(tmp_path / "artifacts")
    rc, err = step("create_cf_matrices_task", "--run-date", str(RUN_DATE), "--artifacts-uri", art,
                   "--lookback-days", "20")
    assert rc == 0, err
    command = [sys.executable, "-m", "trainer.train_task", "--project", project, "--dataset", "unused",
               "--run-date", str(RUN_DATE), "--artifacts-uri", art, "--factors", "16", "--iterations", "4"]
    proc = subprocess.run(command, capture_output=True, text=True, env=emulators["env"], timeout=300,
                          preexec_fn=_limited(20_000))
    assert proc.returncode == 75, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"ERROR: train_task: no space left to write \S+/models/als-\S+/model\.npz "
                        r"\([\d,]+ bytes\): File too large", error), error
    models = tmp_path / "artifacts" / "models"
    leftovers = [str(p.relative_to(models)) for p in models.rglob("*") if p.is_file()]
    assert leftovers == []  # no model file, whole or truncated, and no temporary file
    assert not (tmp_path / "artifacts" / "runs" / str(RUN_DATE) / "candidate.json").exists()

    retry = subprocess.run(command, capture_output=True, text=True, env=emulators["env"], timeout=300)
    assert retry.returncode == 0, retry.stderr[-3000:]
    from trainer.model.model_artifact import check_model
    from trainer.storage import layout

    store = artifacts.ArtifactStore(project)
    check_model(store, layout.candidate_model_uri(store, art, RUN_DATE))  # whole and checksummed


def test_a_training_step_killed_mid_fit_changes_nothing_published_and_its_retry_completes(
        emulators, step, project, gcs_artifacts):
    """SIGKILL (no clean-up runs) while ALS iterates, with a published model in place: the
    pointer and the published model stay as they were, no candidate is recorded, and the
    retry (same arguments) trains and records one."""
    from trainer_support.helpers import run_training

    from trainer.storage import layout

    seed(step)
    run_training(step, gcs_artifacts)  # a published model
    store = artifacts.ArtifactStore(project)
    pointer = store.read_bytes(layout.latest_pointer(gcs_artifacts))
    candidate_uri = layout.candidate_record(gcs_artifacts, RUN_DATE)
    published = store.read_json(candidate_uri)
    store.write_bytes(candidate_uri, b"{}")  # so that a new candidate record would be seen
    command = [sys.executable, "-m", "trainer.train_task", "--project", project, "--dataset", "unused",
               "--run-date", str(RUN_DATE), "--artifacts-uri", gcs_artifacts, "--factors", "16",
               "--iterations", "500"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=emulators["env"])
    # A one-page pipe: the step logs a line per iteration, so it cannot run more than about 60
    # iterations ahead of this reader, let alone finish 500 and write a model, however slowly
    # a loaded machine schedules the test (no race with the kill below).
    fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, 4096)
    for line in proc.stdout:
        if "ALS iteration 2/" in line:  # mid-fit
            proc.kill()
            break
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert store.read_bytes(layout.latest_pointer(gcs_artifacts)) == pointer
    assert store.read_bytes(candidate_uri) == b"{}"

    retry = subprocess.run([*command[:-1], "4"], capture_output=True, text=True, env=emulators["env"],
                           timeout=300)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert store.read_json(candidate_uri)["model_id"] != published["model_id"]  # other iterations
    assert store.read_bytes(layout.latest_pointer(gcs_artifacts)) == pointer  # promotion decides
