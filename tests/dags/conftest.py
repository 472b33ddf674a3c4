"""DAG tests: Airflow configured for a throwaway home before anything imports it, ``plugins/``
on sys.path (as Airflow does in real deployments), emulators and a loopback Slack receiver for
the end-to-end tests."""

from __future__ import annotations

import http.server
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"
TESTS = str(Path(__file__).resolve().parent)  # for probes in a fresh interpreter
SLACK_TOKEN = "/services/T000TEST/B000TEST/not-a-real-secret-4f9d"
AIRFLOW_BASE_URL = "https://airflow.recsys.test/ui-root/"

_home = tempfile.mkdtemp(prefix="airflow-test-home-")
os.environ.update({
    "AIRFLOW_HOME": _home,
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home}/airflow.db",
    # Not the default: the Slack links must come from Airflow's own setting.
    "AIRFLOW__API__BASE_URL": AIRFLOW_BASE_URL,
    "RECSYS_RUNTIME": "local",
    # The trainer's clock (recommend_task/trainer/core/clock.py, passed to every runtime): the fixed
    # 2026 and 2027 run dates of these tests are all before it, whatever the real date.
    "RECSYS_TODAY": "2028-01-01",
    "RECSYS_TASK_RETRIES": "1",
    "RECSYS_RETRY_DELAY_S": "0",
    "RECSYS_BQ_RETRY_DEADLINE_S": "30",
    "RECSYS_IMAGE_ALLOWLIST": "europe-west1-docker.pkg.dev/test-project/recsys/trainer:,recsys-trainer:",
})
sys.path.insert(0, str(PLUGINS))
sys.path.insert(0, str(REPO / "docker" / "emulators"))


def _in_process_callbacks_see_the_exception() -> None:
    """Airflow 3.1's in-process runner (``dag.test()``, ``airflow dags test``) runs the failure
    and retry callbacks without the task's exception in their context, while its worker
    (``task_runner.main``) and Airflow 3.2+'s in-process runner both set it first. Production
    runs through the worker, the tests through ``dag.test()``: give 3.1's in-process runner the
    worker's context so the Slack tests check what production sends. A no-op from 3.2 on."""
    from airflow.sdk.execution_time import task_runner

    original = task_runner.finalize

    def finalize(ti, state, context, log, error=None):
        if error is not None and context.get("exception") is None:
            context["exception"] = error  # as task_runner.main does before calling finalize
        return original(ti, state, context, log, error)

    task_runner.finalize = finalize


_in_process_callbacks_see_the_exception()


def _one_in_process_api_per_session() -> None:
    """Airflow 3.1's ``dag.test()`` builds a new in-process Execution API (a FastAPI app with
    Cadwyn's versioned routes, plus an event-loop thread) for every task it runs: 2-4 s a task
    on a 2-core machine, most of the 3.1 DAG suite's time. Airflow caches it from 3.2 on
    (apache/airflow#65235: ``functools.lru_cache`` on ``in_process_api_server``); do the same on
    3.1. Only the test runner is affected: production tasks run through the worker. A no-op
    where the function is already cached."""
    import functools

    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


_one_in_process_api_per_session()


def _in_process_triggers_read_decisions() -> None:
    """Airflow 3.1's ``dag.test()`` runs a deferred task's trigger in process, and its in-process
    supervisor does not answer the human-in-the-loop trigger's ``GetHITLDetailResponse`` (the
    triggerer does): the trigger's first poll fails with ``'NoneType' object has no attribute
    'response_received'``, so no decision could ever be answered under ``dag.test()``. Answer it
    as the triggerer does (``client.hitl.get_detail_response``). Only the test runner is
    affected: in production the triggerer runs the trigger (tests/local/test_decisions_rest.py
    proves that on a 3.1 stack). A no-op where the supervisor already answers it, and on 3.3,
    whose operator waits in ``awaiting_input`` instead of deferring."""
    import inspect

    from airflow.sdk.execution_time import comms, supervisor

    if not hasattr(comms, "GetHITLDetailResponse"):
        return
    test_supervisor = supervisor.InProcessTestSupervisor
    if "GetHITLDetailResponse" in inspect.getsource(test_supervisor._handle_request):
        return
    handle = test_supervisor._handle_request

    def _handle_request(self, msg, log, req_id):
        if not isinstance(msg, comms.GetHITLDetailResponse):
            return handle(self, msg, log, req_id)
        from airflow.jobs.triggerer_job_runner import HITLDetailResponseResult

        answer = self.client.hitl.get_detail_response(ti_id=msg.ti_id)
        self.send_msg(HITLDetailResponseResult.from_api_response(response=answer), request_id=req_id,
                      error=None)

    test_supervisor._handle_request = _handle_request


_in_process_triggers_read_decisions()


def load_dagbag():
    """Parse ``dags/`` as the DAG processor does (bundle path on sys.path)."""
    from support.dagbag_loader import bundle_dagbag

    return bundle_dagbag(DAGS)


def shard_task(task, shard: int = 0):
    """The task instance's operator of one shard of a mapped task (what a worker runs); an
    unmapped task as it is."""
    return task.unmap({"shard": shard}) if hasattr(task, "partial_kwargs") else task


def local_step(step: str, arguments: list[str], *, image: str, trainer_source: str | Path,
               python: str | None = None, **kwargs):
    """A local-runtime trainer step as the DAGs build it, outside any DAG (its fields as a run
    renders them)."""
    from operators.trainer_step import TrainerStepOperator

    return TrainerStepOperator(
        task_id=kwargs.pop("task_id", step.removesuffix("_task")), step=step, arguments=arguments,
        image=image, runtime="local", environment=kwargs.pop("environment", {}),
        run_date=kwargs.pop("run_date", "2026-11-29"), artifacts_uri=kwargs.pop("artifacts_uri", ""),
        allowlist=kwargs.pop("allowlist", ("recsys-trainer:",)),
        launch={"python": python or str(REPO / ".venv" / "trainer" / "bin" / "python"),
                "trainer_source": str(trainer_source)}, **kwargs)


def fake_service_account_key(path: Path) -> dict[str, str]:
    """A service-account key file shaped like Google's, with recognisable values (no real key)."""
    key = {"type": "service_account", "project_id": "test-project", "private_key_id": "5ec7e7-key-id-0b2f",
           "private_key": "-----BEGIN PRIVATE KEY-----\nNOT-A-REAL-KEY-5ec7e7\n-----END PRIVATE KEY-----\n",
           "client_email": "recsys-trainer@test-project.iam.gserviceaccount.com"}
    path.write_text(json.dumps(key))
    return key


class SlackReceiver:
    """A loopback HTTP server standing in for Slack's incoming webhooks."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fault == "hang":  # holds the request until the test lets go
                    receiver.released.wait(timeout=120)
                    receiver.hung += 1
                    return
                if receiver.fault == "500":
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"internal_error")
                    return
                receiver.messages.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.fault: str | None = None  # None, "500" (Slack fails) or "hang" (Slack never answers)
        self.released = threading.Event()
        self.hung = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()


@pytest.fixture(autouse=True)
def no_operator_built_while_another_runs():
    """Every test, whatever it runs (a DAG, a launcher, a sensor): no operator is built inside
    another operator's execute, execute_complete or poke (nested_operators.py)."""
    from support.nested_operators import operators_built_while_executing

    with operators_built_while_executing() as built:
        yield
    assert built == [], f"operators built inside a running operator: {built}"


@pytest.fixture(scope="session")
def slack():
    receiver = SlackReceiver()
    os.environ["AIRFLOW_CONN_SLACK_RECSYS"] = json.dumps(
        {"conn_type": "slackwebhook", "host": receiver.url, "password": SLACK_TOKEN})
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh metadata DB (SQLite) for dag.test()."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture(scope="module")
def api(airflow_db):
    """Airflow's API server app (in-process, same metadata DB): where a decision is answered."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app("core"), base_url=AIRFLOW_BASE_URL.rstrip("/")) as client:
        yield client


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    import emulators as emulator_control

    with emulator_control.running(tmp_path_factory.mktemp("emulators"), ["recsys-test"],
                                  project="test-project") as client_env:
        os.environ.update(client_env)
        os.environ["RECSYS_ARTIFACTS_URI"] = "gs://recsys-test/recsys"
        os.environ["RECSYS_GCP_PROJECT"] = "test-project"
        os.environ["RECSYS_BQ_DATASET"] = "recsys_e2e"
        yield client_env



@pytest.fixture
def unavailable_bigquery():
    """The URL of a BigQuery endpoint that answers 503 to everything."""
    from outage import unavailable

    with unavailable() as url:
        yield url
