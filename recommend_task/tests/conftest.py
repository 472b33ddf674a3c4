"""Fixtures: the real BigQuery and Cloud Storage emulators, started once per test session on
free ports, and a fresh dataset / artifacts location per test."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EMULATORS = REPO / "docker" / "emulators" / "emulators.py"
BUCKET = "test-artifacts"
# The trainer's clock (trainer/core/clock.py): steps refuse run dates on or after today. The tests'
# days are fixed (2026 and 2027) so that they mean the same on any date; this "today" lies after
# all of them. Subprocesses of the tests (real step processes) inherit it.
os.environ["RECSYS_TODAY"] = "2028-01-01"


sys.path.insert(0, str(EMULATORS.parent))
import emulators as emulator_control  # noqa: E402 - stdlib-only launcher, shared with tests/dags


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    """Start local-bigquery and fake-gcs-server; point the client factory at them."""
    saved = dict(os.environ)
    with emulator_control.running(tmp_path_factory.mktemp("emulators"), [BUCKET]) as client_env:
        os.environ.update(client_env)
        # A broken emulator should fail a test in seconds, not after ten minutes of retries.
        os.environ["RECSYS_BQ_RETRY_DEADLINE_S"] = "30"
        yield {"project": client_env["RECSYS_GCP_PROJECT"], "bucket": BUCKET, "env": dict(os.environ)}
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def project(emulators) -> str:
    return emulators["project"]


@pytest.fixture
def dataset(project) -> str:
    """A dataset of the test's own, deleted afterwards: the session's emulator slows down with
    every table it holds (test_forget: 23 s alone, 68 s after two modules, 7 minutes at the end
    of the suite)."""
    from trainer.storage.clients import bigquery_client

    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    # Best effort, briefly: a test may leave BigQuery pointed at an endpoint it made unavailable.
    with contextlib.suppress(Exception):
        bigquery_client(project).delete_dataset(f"{project}.{name}", delete_contents=True,
                                                not_found_ok=True, retry=None, timeout=10)


@pytest.fixture
def bq_client(project):
    from trainer.storage.clients import bigquery_client

    return bigquery_client(project)


@pytest.fixture
def gcs_artifacts(emulators) -> str:
    return f"gs://{emulators['bucket']}/{uuid.uuid4().hex[:10]}"


class StepRunner:
    """Runs ``trainer.<step>`` in-process through its real CLI entry point (argument parsing,
    logging, one-line errors, exit codes) with the project and dataset of the test."""

    def __init__(self, project: str, dataset: str, capsys) -> None:
        self.common = ["--project", project, "--dataset", dataset]
        self.capsys = capsys

    def __call__(self, step: str, *argv: str) -> tuple[int, str]:
        from trainer.step import cli

        module = importlib.import_module(f"trainer.{step}")
        self.capsys.readouterr()
        rc = cli.run_step(step, module.main, module.build_parser(), [*self.common, *argv],
                          validate=getattr(module, "validate", None))
        return rc, self.capsys.readouterr().err


@pytest.fixture
def step(project, dataset, capsys) -> StepRunner:
    return StepRunner(project, dataset, capsys)
