"""`docker compose up` of docker-compose.yaml in a real engine, then real DAG runs through it.

What a user's first `docker compose up --build -d` does, checked: every service healthy, the
one-shot services done, `recommend_train` and `recommend_predict` triggered through the REST API
and succeeding with each trainer step in a sibling container (the docker launcher through the engine's
socket, on the stack's `recsys` network), recommendations in the BigQuery emulator and Slack
messages in the loopback receiver, the Recommender page in the API server showing
the models it trained; then `docker compose down -v` leaves nothing of the project.

The images this repository builds (Airflow, BigQuery emulator, trainer) come from the session
fixtures (docker/build-image.sh: the same Dockerfiles and contexts as the compose file's `build`
sections, the same classic builder as Debian's docker-compose v1) and `up` runs with
`--no-build`. The official images that run unchanged (PostgreSQL, fake-gcs-server, Python) are
pulled where a registry answers, else stood in for by tests/docker/compose.standin.yaml.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from dags_conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "local"))
sys.path.insert(0, str(REPO / "docker" / "emulators"))
from emulators import free_port
from stack_support.run_expectations import DEFAULT_N, items_per_user, still_writing, writes
from stack_support.stack_client import api, bigquery_client, recommendation_days

COMPOSE_FILE = REPO / "docker-compose.yaml"
STANDIN_FILE = REPO / "tests" / "docker" / "compose.standin.yaml"
PROJECT = "recsys-compose-test"
NETWORK = "recsys"  # fixed by docker-compose.yaml: the docker launcher attaches the trainer to it
ONE_SHOT = {"airflow-init", "trainer-image", "seed-events"}
# Bounds, not delays: on a loaded 2-core machine Airflow's first start (migrations) and a run of
# five trainer containers take minutes (the services' health checks allow 5 minutes to start).
HEALTHY_TIMEOUT_S = 600
RUN_TIMEOUT_S = 900
SLACK_CALLBACK_TIMEOUT_S = 120  # a DAG callback runs in the dag-processor, after the run is done


def _compose_cli() -> str:
    found = shutil.which("docker-compose") or shutil.which("/usr/bin/docker-compose")
    if not found:
        pytest.fail("docker-compose not found: `make test` installs Debian's docker-compose")
    return found


def _docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _pullable(image: str) -> bool:
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        return True
    try:
        pulled = subprocess.run(["docker", "pull", "-q", image], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return pulled.returncode == 0


def _compose_files() -> list[str]:
    """docker-compose.yaml, plus the stand-in override where an official image cannot be pulled."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    standins = yaml.safe_load(STANDIN_FILE.read_text())["services"]
    official = {name: services[name]["image"] for name in standins}
    missing = {name: image for name, image in official.items() if not _pullable(image)}
    if not missing:
        return ["-f", str(COMPOSE_FILE)]
    print(f"\n  compose: {sorted(missing.values())} cannot be pulled: stand-ins ({STANDIN_FILE.name})")
    builders = {"postgres": ["docker/standin/service-image.sh", "postgres"],
                "gcs": ["docker/standin/service-image.sh", "fake-gcs-server"],
                "slack-receiver": ["docker/standin/python-base.sh", "3.11"]}
    for name in standins:
        built = subprocess.run(builders[name], cwd=REPO, capture_output=True, text=True)
        assert built.returncode == 0, built.stderr[-2000:]
        assert built.stdout.strip() == standins[name]["image"], (built.stdout, standins[name])
    return ["-f", str(COMPOSE_FILE), "-f", str(STANDIN_FILE)]


def _project_containers() -> dict[str, dict]:
    """service -> `docker inspect` of its container, for every container of the test project."""
    ids = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").split()
    if not ids:
        return {}
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c
            for c in json.loads(_docker("inspect", *ids))}


def _not_ready(containers: dict[str, dict]) -> dict[str, str]:
    out = {}
    for name, c in containers.items():
        state = c["State"]
        if name in ONE_SHOT:
            if state["Status"] != "exited" or state["ExitCode"] != 0:
                out[name] = f"{state['Status']} (exit {state['ExitCode']})"
        elif (state.get("Health") or {}).get("Status") != "healthy":
            out[name] = f"{state['Status']}, health {(state.get('Health') or {}).get('Status')}"
    return out


@pytest.fixture(scope="module")
def stack(docker_engine, trainer_image, emulator_image, airflow_image, pytestconfig, tmp_path_factory):
    """The compose stack up on free host ports; `down -v` afterwards (the last test checks it)."""
    if _docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$").strip():
        pytest.fail(f"a network `{NETWORK}` exists: another compose stack of this project is up "
                    "(docker compose down it first)")
    ports = {name: str(free_port()) for name in ("RECSYS_API_PORT", "RECSYS_BQ_EMULATOR_PORT",
                                                 "RECSYS_BQ_EMULATOR_GRPC_PORT", "RECSYS_GCS_EMULATOR_PORT")}
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    env = {**os.environ, **ports, "DOCKER_GID": str(socket_gid),
           "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}
    cli = [_compose_cli(), "-p", PROJECT, "--project-directory", str(REPO), *_compose_files()]
    info = {"cli": cli, "env": env, "url": f"http://127.0.0.1:{ports['RECSYS_API_PORT']}",
            "request_timeout_s": 180,  # a bound: see stack_client
            "bq": f"http://127.0.0.1:{ports['RECSYS_BQ_EMULATOR_PORT']}",
            "volumes_before": set(_docker("volume", "ls", "-q").split()),
            "events": tmp_path_factory.mktemp("docker-events") / "events.jsonl",
            "trainer_id": _docker("image", "inspect", "-f", "{{.Id}}", trainer_image).strip()}
    # Streamed from before `up`: the engine keeps only its last 256 events for `docker events
    # --since`, and the stack's health checks alone fill that in about a minute and a half.
    events = subprocess.Popen(
        ["docker", "events", "--filter", "type=container", "--filter", "type=network",
         "--filter", "event=start", "--filter", "event=connect", "--format", "{{json .}}"],
        stdout=info["events"].open("w"), stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        up = subprocess.run([*cli, "up", "-d", "--no-build"], env=env, capture_output=True, text=True,
                            timeout=HEALTHY_TIMEOUT_S)
        assert up.returncode == 0, (f"docker-compose up failed:\n{up.stderr[-3000:]}\n"
                                    f"{_health_report()}\n{_logs(info, tail=25)}")
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while (waiting := _not_ready(_project_containers())) and time.monotonic() < deadline:
            time.sleep(2)
        assert not waiting, f"not ready within {HEALTHY_TIMEOUT_S}s: {waiting}\n{_logs(info)}"
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n  docker compose up: every service healthy after {time.monotonic() - started:.0f}s")
        yield info
    finally:
        subprocess.run([*cli, "down", "-v", "--remove-orphans", "-t", "20"], env=env, capture_output=True)
        events.terminate()
        events.wait(timeout=30)


def _health_report() -> str:
    """Each project container's state and its last health-check outputs (why it is unhealthy)."""
    lines = []
    for service, c in sorted(_project_containers().items()):
        health = c["State"].get("Health") or {}
        checks = " ".join(f"[{h['ExitCode']}: {h['Output'].strip()[:120]}]"
                          for h in health.get("Log", [])[-3:])
        lines.append(f"{service}: {c['State']['Status']} {health.get('Status', '')} {checks}".rstrip())
    return "\n".join(lines)


def _logs(stack: dict, *services: str, tail: int = 60) -> str:
    done = subprocess.run([*stack["cli"], "logs", "--no-color", "--tail", str(tail), *services],
                          env=stack["env"], capture_output=True, text=True)
    return done.stdout[-8000:]


def _wait_for_dag(stack: dict, dag_id: str) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while time.monotonic() < deadline:
        dags = api(stack, "/api/v2/dags?dag_id_pattern=recommend")["dags"]
        if dag_id in {d["dag_id"] for d in dags}:
            return
        time.sleep(3)
    pytest.fail(f"{dag_id} not parsed within {HEALTHY_TIMEOUT_S}s: {api(stack, '/api/v2/importErrors')}")


def _runs(stack: dict, dag_id: str) -> list[dict]:
    return api(stack, f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]


def _task_instances(stack: dict, dag_id: str, run_id: str = "~") -> list[dict]:
    return api(stack, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


def _wait_for_runs(stack: dict, dag_id: str, done) -> list[dict]:
    """Poll the DAG's runs until ``done(runs)``; fail at once, with the failed tasks' states, if a
    run fails."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = _runs(stack, dag_id)
        failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
        if failed:
            states = {(t["dag_run_id"], t["task_id"]): t["state"] for t in _task_instances(stack, dag_id)}
            pytest.fail(f"{dag_id} runs failed: {failed}: {states}\n{_logs(stack, 'airflow-scheduler')}")
        if runs and done(runs):
            return runs
        time.sleep(3)
    pytest.fail(f"{dag_id} runs not done within {RUN_TIMEOUT_S}s: "
                f"{[(r['dag_run_id'], r['state']) for r in runs]}\n{_logs(stack, 'airflow-scheduler')}")


def _events(stack: dict, kind: str) -> list[dict]:
    """The engine's events of type ``kind`` since just before the stack came up, oldest first."""
    lines = stack["events"].read_text().splitlines()
    return [e for e in map(json.loads, filter(str.strip, lines)) if e.get("Type") == kind]


def _slack_messages(stack: dict) -> list[str]:
    """What the loopback Slack receiver service has been sent so far."""
    received = subprocess.run([*stack["cli"], "exec", "-T", "slack-receiver", "cat", "/tmp/slack.jsonl"],
                              env=stack["env"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line)["text"] for line in received.splitlines()]


def _container_starts(stack: dict) -> list[dict]:
    """Containers started since the stack came up."""
    return [e for e in _events(stack, "container") if e.get("Action") == "start"]


def _network_connects(stack: dict) -> dict[str, str]:
    """container id -> name of the network it was connected to, since the stack came up."""
    return {e["Actor"]["Attributes"]["container"]: e["Actor"]["Attributes"]["name"]
            for e in _events(stack, "network") if e.get("Action") == "connect"}


def test_every_service_is_healthy_and_the_one_shots_succeeded(stack):
    containers = _project_containers()
    services = set(yaml.safe_load(COMPOSE_FILE.read_text())["services"])
    assert set(containers) == services
    assert not _not_ready(containers)
    # The stack's Airflow is the locked one, runs the project's DAGs and has its pools.
    locked = re.search(r"^apache-airflow==(\S+)", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    assert api(stack, "/api/v2/version")["version"] == locked.group(1)
    _wait_for_dag(stack, "recommend_predict")
    assert api(stack, "/api/v2/importErrors")["import_errors"] == []
    assert api(stack, "/api/v2/pools/recsys_bigquery_writers")["slots"] == 1
    trainer = api(stack, "/api/v2/pools/recsys_trainer_jobs")
    assert (trainer["slots"], trainer["include_deferred"]) == (16, True), trainer
    # The scheduler runs as the image's airflow user, in the socket's group (it starts the trainer).
    scheduler = containers["airflow-scheduler"]
    assert scheduler["Config"]["User"].split(":")[0] == "50000"
    assert str(os.stat("/var/run/docker.sock").st_gid) in scheduler["HostConfig"]["GroupAdd"]


def test_train_then_predict_through_the_rest_api_in_sibling_trainer_containers(stack):
    # Unpausing starts the run of the latest 05:00 UTC at once (catchup is off); seed-events
    # seeded the 30 days up to yesterday, so whichever day that run is about has events.
    _wait_for_dag(stack, "recommend_train")
    api(stack, "/api/v2/dags/recommend_train", {"is_paused": False}, method="PATCH")
    _wait_for_runs(stack, "recommend_train", lambda runs: {r["state"] for r in runs} == {"success"})

    # Then predict: unpausing adds its 05:00 run (and one for the model train just published);
    # the run triggered here through the REST API runs after them (at most one active run).
    api(stack, "/api/v2/dags/recommend_predict", {"is_paused": False}, method="PATCH")
    manual = api(stack, "/api/v2/dags/recommend_predict/dagRuns", {"logical_date": None, "conf": {}})
    runs = _wait_for_runs(stack, "recommend_predict", lambda runs: {r["state"] for r in runs} == {"success"}
                          and manual["dag_run_id"] in {r["dag_run_id"] for r in runs})
    # A run the clock added meanwhile (a cron time passed) must be done too before counting.
    _wait_for_runs(stack, "recommend_train", lambda runs: {r["state"] for r in runs} == {"success"})
    predicts = [t for t in _task_instances(stack, "recommend_predict")
                if t["task_id"] == "publish_predictions"]
    assert not still_writing(predicts)
    assert {t["state"] for t in predicts} == {"success"}

    # Every day a predict wrote holds DEFAULT_N items per learner, once each: no partial or
    # duplicated day, whatever order the runs ran in.
    expected = items_per_user({}, writes(runs, predicts))
    days = recommendation_days(stack)
    assert set(days) == set(expected) and expected, (days, expected)
    for day, (rows, users, slots) in days.items():
        assert rows == slots == DEFAULT_N * users and users > 100, (day, days[day])

    # Each trainer step ran as a sibling container of the stack: started by the engine from the
    # image ID resolve_image pinned, on the stack's network, not a compose service, and removed
    # after it succeeded (auto_remove).
    trainer_tis = [t for dag_id in ("recommend_train", "recommend_predict")
                   for t in _task_instances(stack, dag_id) if t["operator"] == "TrainerStepOperator"]
    assert {t["task_id"] for t in trainer_tis} == {
        "check_events", "create_cf_matrices", "train", "evaluate", "promote_model", "predict_window",
        "predict", "publish_predictions"}, trainer_tis
    starts = [e for e in _container_starts(stack)
              if e["Actor"]["Attributes"].get("image") == stack["trainer_id"]]
    names = [e["Actor"]["Attributes"].get("name") for e in starts]
    assert len(starts) == sum(t["try_number"] for t in trainer_tis), names  # one container per try
    assert not any("com.docker.compose.project" in e["Actor"]["Attributes"] for e in starts)
    connects = _network_connects(stack)
    assert {connects.get(e["id"]) for e in starts} == {NETWORK}
    assert not {e["id"] for e in starts} & set(_docker("ps", "-aq", "--no-trunc").split())

    # The trainer's own log lines reach the task log through the API server.
    run_path = f"/api/v2/dags/recommend_predict/dagRuns/{manual['dag_run_id']}"
    log = api(stack, f"{run_path}/taskInstances/predict/logs/1?map_index=0")
    assert "trainer.predict_task" in json.dumps(log)

    # Slack (the loopback receiver service) got the manual run's success with what it wrote. A
    # DAG's success callback runs in the dag-processor after the run is marked done, so the
    # message may follow the run's state by a moment: wait for it, within a deadline.
    deadline = time.monotonic() + SLACK_CALLBACK_TIMEOUT_S
    while not (found := [m for m in _slack_messages(stack)
                         if m.startswith(":white_check_mark: *recommend_predict*")
                         and manual["dag_run_id"] in m]):
        assert time.monotonic() < deadline, (_slack_messages(stack), _logs(stack, "airflow-dag-processor"))
        time.sleep(1)
    [text] = found
    rows, users = map(int, re.search(r"rows written: (\d+) for (\d+) users", text).groups())
    run_day = dt.date.fromisoformat(manual["run_after"][:10]) - dt.timedelta(days=1)
    assert rows == DEFAULT_N * users == days[run_day][0], (text, days)

    # The Recommender page, in the stack's API server from the mounted plugins/, reads the same
    # emulators: its models are model_metrics' and it names the model predict served. Nothing
    # of it without signing in.
    trained = {r["model_id"] for r in bigquery_client(stack).query(
        "SELECT model_id FROM `local-project.recsys.model_metrics`").result()}
    overview = api(stack, "/recommender/api/overview?days=30")
    assert {m["model_id"] for m in overview["models"]} == trained and trained, overview
    served = {r["model_id"] for r in bigquery_client(stack).query(
        "SELECT DISTINCT model_id FROM `local-project.recsys.recommendations`").result()}
    assert overview["published_model_id"] in served, (overview["published_model_id"], served)
    page = api(stack, "/recommender/")["text"]
    assert all(model_id in page for model_id in trained), page[:2000]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{stack['url']}/recommender/api/overview", timeout=stack["request_timeout_s"])
    assert refused.value.code in (401, 403)


def test_down_removes_every_container_network_and_volume_of_the_project(stack):
    down = subprocess.run([*stack["cli"], "down", "-v", "--remove-orphans", "-t", "20"], env=stack["env"],
                          capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr[-3000:]
    label = f"label=com.docker.compose.project={PROJECT}"
    assert _docker("ps", "-aq", "--filter", label).strip() == ""
    assert _docker("volume", "ls", "-q", "--filter", label).strip() == ""
    # Nor an anonymous one (an image's VOLUME without a named volume on it).
    assert set(_docker("volume", "ls", "-q").split()) <= stack["volumes_before"]
    assert _docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$").strip() == ""
    # Nor any container of the trainer image: the steps' siblings are removed as they finish.
    assert _docker("ps", "-aq", "--filter", f"ancestor={stack['trainer_id']}").strip() == ""
