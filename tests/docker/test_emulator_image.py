"""The BigQuery emulator image of docker-compose.yaml, built from docker/emulators/Dockerfile and
run in a real engine: consistent dependencies, a non-root user, and it answers the real
BigQuery client (on this machine's loopback: the engine started here has no bridge)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_bigquery_emulator_image_serves_the_bigquery_client(emulator_image, emulators):
    checked = subprocess.run(["docker", "run", "--rm", "--network", "none", emulator_image, "pip", "check"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    uid = subprocess.run(["docker", "run", "--rm", "--network", "none", emulator_image, "id", "-u"],
                         capture_output=True, text=True).stdout.strip()
    assert uid not in ("", "0")

    port, grpc_port = _free_port(), _free_port()
    container = subprocess.run(
        ["docker", "run", "-d", "--network", "host",
         "-e", f"STORAGE_EMULATOR_HOST={os.environ['STORAGE_EMULATOR_HOST']}",
         emulator_image, "local-bigquery", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--grpc-port", str(grpc_port), "--project", "local-project", "--data-dir", "/data"],
        capture_output=True, text=True, check=True).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}/bigquery/v2/projects/local-project/datasets"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the compose health check's request, until it answers or the container exits
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            # Not answering yet: refused, reset, or accepted but not answered within the request's
            # timeout (the first request waits for the server's start-up; seen on a loaded machine).
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container],
                                       capture_output=True, text=True).stdout.strip()
                logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
                assert state == "true", f"emulator container exited: {logs.stderr[-2000:]}"
                assert time.monotonic() < deadline, f"no answer in {START_TIMEOUT_S}s: {logs.stderr[-2000:]}"
                time.sleep(1)
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        client = bigquery.Client(project="local-project", credentials=AnonymousCredentials(),
                                 client_options={"api_endpoint": f"http://127.0.0.1:{port}"})
        client.create_dataset("smoke", exists_ok=True)
        rows = list(client.query("SELECT 40 + 2 AS answer").result())
        assert [r["answer"] for r in rows] == [42]
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True)  # -v: its /data volume
