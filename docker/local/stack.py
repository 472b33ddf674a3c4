"""`make up` / `make down`: the whole Airflow stack on this machine, without Docker.

up:   PostgreSQL (SQLite with a warning where PostgreSQL is absent), the BigQuery and GCS
      emulators seeded with synthetic events and a first published model, a loopback Slack
      receiver that prints messages, and `airflow standalone` (api-server, scheduler,
      dag-processor, triggerer; LocalExecutor) with this checkout's dags/ and plugins/ and
      RECSYS_RUNTIME=local. Returns once everything is healthy; prints the URL and login.
down: stops every process `up` started (Airflow with SIGINT, so it stops its children),
      keeps the data unless --wipe.

Stdlib only; state, logs and pid files live in RECSYS_STACK_DIR (default .local/stack).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docker" / "emulators"))
import emulators  # noqa: E402 - stdlib-only sibling launcher

VENV = REPO / ".venv"
TRAINER_PY = VENV / "trainer" / "bin" / "python"
USER, PASSWORD = "admin", "admin"
# A read-only login beside the admin: what a person who may look but not decide sees.
VIEWER, VIEWER_PASSWORD = "viewer", "viewer"
BUCKET = "recsys-artifacts"
POOLS = REPO / "docker" / "airflow" / "pools.json"


class Settings:
    """Ports and paths, overridable from the environment (tests run a second stack)."""

    def __init__(self) -> None:
        env = os.environ
        self.dir = Path(env.get("RECSYS_STACK_DIR", REPO / ".local" / "stack")).resolve()
        self.api_port = int(env.get("RECSYS_API_PORT", "8080"))
        self.pg_port = int(env.get("RECSYS_PG_PORT", "5433"))
        self.slack_port = int(env.get("RECSYS_SLACK_PORT", "9098"))
        # Not the demo's 9050/9060/9025: `make demo` must work while the stack is up.
        env.setdefault("RECSYS_BQ_EMULATOR_PORT", "9051")
        env.setdefault("RECSYS_BQ_EMULATOR_GRPC_PORT", "9061")
        env.setdefault("RECSYS_GCS_EMULATOR_PORT", "9026")
        # The stack's own names, whatever the calling shell has set.
        env["RECSYS_GCP_PROJECT"] = "local-project"
        env["RECSYS_BQ_DATASET"] = "recsys"
        # The Airflow it runs: .venv/airflow (the newest supported), or another virtualenv
        # (the tests run .venv/airflow-3.1, the oldest, through its API server and triggerer).
        self.airflow_venv = Path(env.get("RECSYS_STACK_AIRFLOW_VENV", VENV / "airflow")).resolve()
        self.retries = env.get("RECSYS_TASK_RETRIES", "2")
        self.retry_delay = env.get("RECSYS_RETRY_DELAY_S", "30")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# --- processes ---------------------------------------------------------------------------------

def _pidfile(s: Settings, name: str) -> Path:
    return s.dir / f"{name}.pid"


def _running(s: Settings, name: str) -> int | None:
    f = _pidfile(s, name)
    if f.exists():
        pid = int(f.read_text())
        if emulators.alive(pid):
            return pid
    return None


def _spawn(s: Settings, name: str, argv: list[str], env: dict[str, str]) -> int:
    out = open(s.dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=s.dir, start_new_session=True)
    _pidfile(s, name).write_text(str(proc.pid))
    return proc.pid


def _stop(s: Settings, name: str, sig: int, grace_s: float) -> None:
    pid = _running(s, name)
    if pid is None:
        _pidfile(s, name).unlink(missing_ok=True)
        return
    log(f"stopping {name} (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while emulators.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Whatever is left of its process group (standalone's children included) goes now.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _pidfile(s, name).unlink(missing_ok=True)


# --- PostgreSQL ----------------------------------------------------------------------------------

def _pg_bin(tool: str) -> str | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), reverse=True):
        return str(candidate)
    return shutil.which(tool)


def _as_postgres(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; run its tools as the postgres system user then.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def pg_data_dir(s: Settings) -> Path:
    """The cluster's directory: under the stack directory, unless PostgreSQL's own user (when we
    are root) cannot traverse it (a 0700 temp dir, say); then a private one in /var/tmp."""
    recorded = s.dir / "postgres.path"
    if recorded.exists():
        return Path(recorded.read_text())
    data = s.dir / "postgres"
    if os.geteuid() == 0 and subprocess.run(_as_postgres(["test", "-x", str(s.dir)])).returncode != 0:
        digest = hashlib.sha1(str(s.dir).encode()).hexdigest()[:12]
        data = Path("/var/tmp") / f"recsys-stack-postgres-{digest}"
        log(f"the postgres user cannot traverse {s.dir}: cluster in {data}")
    recorded.write_text(str(data))
    return data


def start_postgres(s: Settings) -> str:
    """Start a private PostgreSQL cluster; returns the SQLAlchemy URL (SQLite if unavailable)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        log("WARNING: PostgreSQL not found; using SQLite (one task at a time, slower UI)")
        return f"sqlite:///{s.dir}/airflow.db"
    data = pg_data_dir(s)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
    status = subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "status"]), capture_output=True)
    if status.returncode != 0:
        subprocess.run(_as_postgres([
            pg_ctl, "-D", str(data), "-l", str(data / "server.log"), "-w", "start",
            "-o", f"-p {s.pg_port} -k {data} -c listen_addresses=127.0.0.1",
        ]), check=True, stdout=subprocess.DEVNULL)
    psql = _pg_bin("psql")
    exists = subprocess.run(_as_postgres([psql, "-h", "127.0.0.1", "-p", str(s.pg_port), "-U", "airflow",
                                          "-d", "postgres", "-tAc",
                                          "SELECT 1 FROM pg_database WHERE datname='airflow'"]),
                            capture_output=True, text=True, check=True).stdout.strip()
    if exists != "1":
        subprocess.run(_as_postgres([psql, "-h", "127.0.0.1", "-p", str(s.pg_port), "-U", "airflow",
                                     "-d", "postgres", "-c", "CREATE DATABASE airflow"]),
                       check=True, stdout=subprocess.DEVNULL)
    log(f"PostgreSQL on 127.0.0.1:{s.pg_port}")
    return f"postgresql+psycopg2://airflow@127.0.0.1:{s.pg_port}/airflow"


def stop_postgres(s: Settings) -> None:
    data = pg_data_dir(s) if s.dir.exists() else s.dir / "postgres"
    pg_ctl = _pg_bin("pg_ctl")
    if pg_ctl and (data / "postmaster.pid").exists():
        log("stopping PostgreSQL")
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL)


# --- Airflow -------------------------------------------------------------------------------------

def airflow_env(s: Settings, db_url: str, client_env: dict[str, str]) -> dict[str, str]:
    """Everything Airflow and the DAGs read, for a laptop."""
    home = s.dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD, VIEWER: VIEWER_PASSWORD}))
    env = {
        **os.environ, **client_env,
        "PATH": f"{s.airflow_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(s.api_port),
        "AIRFLOW__API__BASE_URL": s.url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin,{VIEWER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "RECSYS_RUNTIME": "local",
        "RECSYS_TRAINER_PYTHON": str(TRAINER_PY),
        "RECSYS_ARTIFACTS_URI": f"gs://{BUCKET}/recsys",
        "RECSYS_BQ_RETRY_DEADLINE_S": "60",
        "RECSYS_TASK_RETRIES": s.retries,
        "RECSYS_RETRY_DELAY_S": s.retry_delay,
        "AIRFLOW_VAR_RECSYS_TRAINER_IMAGE": "recsys-trainer:dev",
        "AIRFLOW_CONN_SLACK_RECSYS": json.dumps({
            "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{s.slack_port}",
            "password": "/services/local/stack/token"}),
    }
    ours = ("AIRFLOW", "RECSYS", "BIGQUERY", "STORAGE")
    recorded = {k: v for k, v in env.items() if k.startswith(ours)}
    (s.dir / "env.json").write_text(json.dumps(recorded, indent=2))
    return env


def _get(url: str, token: str | None = None, timeout: float = 3) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _send(method: str, url: str, token: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def create_pools(s: Settings) -> None:
    """The pools of docker/airflow/pools.json (what `airflow pools import` reads on Composer and in
    docker-compose), created or updated through the REST API."""
    jwt = token(s)
    for name, pool in json.loads(POOLS.read_text()).items():
        body = {"name": name, "slots": pool["slots"], "description": pool.get("description"),
                "include_deferred": pool.get("include_deferred", False)}
        code = _send("POST", f"{s.url}/api/v2/pools", jwt, body)
        if code == 409:
            code = _send("PATCH", f"{s.url}/api/v2/pools/{name}", jwt, body)
        if code not in (200, 201):
            raise SystemExit(f"ERROR: could not create pool {name}: HTTP {code}")
        log(f"pool {name}: {body['slots']} slot(s), deferred tasks counted: {body['include_deferred']}")


def token(s: Settings) -> str:
    """A JWT for the REST API (simple auth manager)."""
    body = json.dumps({"username": USER, "password": PASSWORD}).encode()
    request = urllib.request.Request(f"{s.url}/auth/token", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())["access_token"]


def wait_healthy(s: Settings, timeout_s: float) -> None:
    """Until every component reports healthy, both DAGs are parsed and the execution API answers."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if _running(s, "airflow") is None:
            tail = (s.dir / "airflow.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"ERROR: airflow standalone exited; log tail:\n{tail}")
        code, health = _get(f"{s.url}/api/v2/monitor/health")
        if code == 200 and health:
            states = {k: (v or {}).get("status") for k, v in health.items()}
            last = ", ".join(f"{k}={v}" for k, v in states.items())
            if all(v == "healthy" for v in states.values()):
                code, dags = _get(f"{s.url}/api/v2/dags", token(s))
                found = {d["dag_id"] for d in (dags or {}).get("dags", [])}
                if not {"recommend_train", "recommend_predict"} <= found:
                    last += f"; DAGs parsed: {sorted(found) or 'none yet'}"
                # The api-server builds its execution API, which every task calls first, on that
                # API's first request: 7 s on an idle machine, more than a task's 5 s request
                # timeout. On a loaded machine the first task failed there (CI, twice).
                elif _get(f"{s.url}/execution/health",
                          timeout=max(1.0, deadline - time.monotonic()))[0] == 200:
                    return
                else:
                    last += "; execution API not answering yet"
        time.sleep(1)
    raise SystemExit(f"ERROR: Airflow not healthy after {timeout_s:.0f}s ({last}); see {s.dir}/airflow.log")


# --- commands ------------------------------------------------------------------------------------

def up(s: Settings, timeout_s: float) -> None:
    started = time.monotonic()
    s.dir.mkdir(parents=True, exist_ok=True)
    if _running(s, "airflow"):
        log(f"already running: {s.url}")
        return
    for needed in (TRAINER_PY, s.airflow_venv / "bin" / "airflow"):
        if not needed.exists():
            raise SystemExit(f"ERROR: {needed} missing: run `make venvs` first")

    db_url = start_postgres(s)
    emulators.start(s.dir / "emulators", 60, [BUCKET])
    client_env = emulators.client_env()
    if not (s.dir / "seeded").exists():
        yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        log(f"seeding 35 days of synthetic events ending {yesterday} and publishing a first model")
        env = {**os.environ, **client_env, "RECSYS_BQ_RETRY_DEADLINE_S": "60",
               "RECSYS_LOG_LEVEL": "WARNING", "TRAINER_PYTHON": str(TRAINER_PY)}
        subprocess.run([str(TRAINER_PY), "-m", "trainer.seed_events", "--end-date", yesterday,
                        "--days", "35"], env=env, check=True)
        subprocess.run([str(REPO / "recommend_task" / "run_chain.sh"), yesterday, f"gs://{BUCKET}/recsys"],
                       env=env, check=True)
        (s.dir / "seeded").write_text(yesterday)

    if _running(s, "slack") is None:
        receiver = REPO / "docker" / "local" / "slack_receiver.py"
        _spawn(s, "slack", [sys.executable, str(receiver), "--port", str(s.slack_port),
                            "--out", str(s.dir / "slack.jsonl")], dict(os.environ))

    env = airflow_env(s, db_url, client_env)
    # standalone calls `airflow` from PATH; SIG_DFL for SIGINT so `down` can stop it cleanly
    # even though it runs as a background job.
    launcher = ("import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "os.execvp('airflow', ['airflow', 'standalone'])")
    _spawn(s, "airflow", [str(s.airflow_venv / "bin" / "python"), "-c", launcher], env)
    log(f"airflow standalone starting (log: {s.dir / 'airflow.log'})")
    wait_healthy(s, timeout_s)
    create_pools(s)
    log(f"ready in {time.monotonic() - started:.0f}s")
    print(f"""
  Airflow UI     {s.url}   (login {USER} / {PASSWORD}; read-only: {VIEWER} / {VIEWER_PASSWORD})
  DAGs           recommend_train, recommend_predict, recommend_feedback, recommend_rollback,
                 recommend_freshness
                 (paused: unpause them in the UI)
  BigQuery       {client_env['BIGQUERY_EMULATOR_HOST']} (project local-project, dataset recsys)
  Cloud Storage  {client_env['STORAGE_EMULATOR_HOST']} (gs://{BUCKET}/recsys)
  Slack          messages printed to {s.dir / 'slack.log'}
  Stop           make down   (make down WIPE=1 also deletes the data)
""", flush=True)


def down(s: Settings, wipe: bool) -> None:
    _stop(s, "airflow", signal.SIGINT, 30)
    _stop(s, "slack", signal.SIGTERM, 5)
    emulators.stop(s.dir / "emulators")
    stop_postgres(s)
    if wipe and s.dir.exists():
        shutil.rmtree(pg_data_dir(s), ignore_errors=True)
        shutil.rmtree(s.dir)
        log(f"wiped {s.dir}")
    log("stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--wipe", action="store_true", help="down: also delete data and logs")
    parser.add_argument("--timeout", type=float, default=180, help="up: seconds to wait for health")
    args = parser.parse_args()
    s = Settings()
    if args.command == "up":
        up(s, args.timeout)
    elif args.command == "down":
        down(s, args.wipe)
    else:
        pid = _running(s, "airflow")
        print(f"airflow: running (pid {pid}) at {s.url}" if pid else "airflow: stopped")
        return 0 if pid else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
