"""What the stack tests read from a running stack: its Airflow REST API and its BigQuery emulator.

Shared by the browser test (`make up`) and the compose test (`docker compose up`). A stack is a
dict with ``url`` (the Airflow UI/API base) and ``bq`` (the BigQuery emulator's endpoint); the
API token of the dev-only admin login is cached in it. ``request_timeout_s`` (default 30) bounds
each request: the compose stack's single api-server also serves every running task's execution
API, and on a loaded 2-core machine one of its answers took longer than 30 s.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

# docker/airflow/simple_auth_manager_passwords.json and `make up`'s login: dev only.
ADMIN = {"username": "admin", "password": "admin"}


def api(stack: dict, path: str, body: dict | None = None, method: str | None = None) -> dict:
    """GET (or POST ``body``, or ``method`` it) on the Airflow REST API as the stack's admin."""
    if "token" not in stack:
        request = urllib.request.Request(f"{stack['url']}/auth/token", data=json.dumps(ADMIN).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=stack.get("request_timeout_s", 30)) as resp:
            stack["token"] = json.loads(resp.read())["access_token"]
    request = urllib.request.Request(
        f"{stack['url']}{path}", data=None if body is None else json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Bearer {stack['token']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=stack.get("request_timeout_s", 30)) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else {"text": raw.decode()}


def bigquery_client(stack: dict):
    """The real BigQuery client, anonymous, against the stack's emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project="local-project", credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": stack["bq"]})


def recommendation_days(stack: dict) -> dict[dt.date, tuple[int, int, int]]:
    """run_date -> (rows, users, distinct (user, rank) slots) of ``recommendations``."""
    rows = bigquery_client(stack).query("""
        SELECT run_date, COUNT(*) AS n, COUNT(DISTINCT user_id) AS users,
               COUNT(DISTINCT CONCAT(user_id, '#', CAST(rank AS STRING))) AS slots
        FROM `local-project.recsys.recommendations` GROUP BY run_date""").result()
    return {r["run_date"]: (r["n"], r["users"], r["slots"]) for r in rows}
