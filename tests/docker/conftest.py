"""The docker runtime against a real Docker engine and the real trainer image.

A session fixture starts the engine (docker/engine/engine.sh: the running one, or one started
and stopped here) and builds the trainer image (docker/build-image.sh). Where no engine can
be had, the tests fail with the script's one-line reason, unless RECSYS_SKIP_DOCKER_TESTS=1
says so on purpose (never set by .ci/run).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "dags"))

# The DAG tests' conftest configures Airflow's test home and holds the emulator, metadata DB and
# Slack receiver fixtures; loaded under its own name (pytest imports this file as `conftest`).
_spec = importlib.util.spec_from_file_location("dags_conftest", REPO / "tests" / "dags" / "conftest.py")
dags_conftest = importlib.util.module_from_spec(_spec)
sys.modules["dags_conftest"] = dags_conftest
_spec.loader.exec_module(dags_conftest)
airflow_db, emulators, slack = dags_conftest.airflow_db, dags_conftest.emulators, dags_conftest.slack
unavailable_bigquery = dags_conftest.unavailable_bigquery
no_operator_built_while_another_runs = dags_conftest.no_operator_built_while_another_runs

ENGINE = REPO / "docker" / "engine" / "engine.sh"


@pytest.fixture(scope="session")
def docker_engine():
    if os.environ.get("RECSYS_SKIP_DOCKER_TESTS") == "1":
        pytest.skip("RECSYS_SKIP_DOCKER_TESTS=1: the Docker tests are off on purpose")
    started = subprocess.run([str(ENGINE), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(started.stderr.strip().splitlines()[-1] if started.stderr.strip() else "no Docker engine")
    print(started.stdout.strip())
    yield
    if "using the engine already running" not in started.stdout:  # stop only what we started
        stopped = subprocess.run([str(ENGINE), "stop"], capture_output=True, text=True)
        print(stopped.stdout.strip(), stopped.stderr.strip())


def _build(kind: str, tag: str, pytestconfig) -> str:
    built = subprocess.run([str(REPO / "docker" / "build-image.sh"), kind, tag],
                           capture_output=True, text=True, cwd=REPO)
    assert built.returncode == 0, built.stderr[-3000:]
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # build time and size, in make test's output
        print("\n" + "\n".join(line for line in (built.stderr + built.stdout).splitlines()
                                if line.startswith(("build-image:", "built "))))
    return tag


@pytest.fixture(scope="session")
def trainer_image(docker_engine, pytestconfig) -> str:
    return _build("trainer", "recsys-trainer:dev", pytestconfig)


@pytest.fixture(scope="session")
def emulator_image(docker_engine, pytestconfig) -> str:
    return _build("emulator", "recsys-bigquery-emulator:local", pytestconfig)


@pytest.fixture(scope="session")
def airflow_image(docker_engine, pytestconfig) -> str:
    return _build("airflow", "recsys-airflow:local", pytestconfig)
