"""BigQuery and Cloud Storage access for the Airflow side (sensors, Slack summaries).

On Google Cloud the stock provider hooks build the clients from the Airflow connection. The
stock hooks cannot point at an endpoint of our choosing, so when the emulator variables are
set (local development, tests) the same client classes are built against the emulators with
anonymous credentials. The trainer has the same switch in its own client factory; the two
sides share the variables, not code (the DAGs never import the trainer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _anonymous():
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def bigquery_client(conn_id: str, project: str, location: str | None = None):
    from google.cloud import bigquery

    endpoint = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if endpoint:
        return bigquery.Client(project=project, location=location, credentials=_anonymous(),
                               client_options={"api_endpoint": endpoint})
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    return BigQueryHook(gcp_conn_id=conn_id, location=location).get_client(
        project_id=project, location=location)


def storage_client(conn_id: str, project: str):
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint:
        from google.cloud import storage

        return storage.Client(project=project, credentials=_anonymous(),
                              client_options={"api_endpoint": endpoint})
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    return GCSHook(gcp_conn_id=conn_id).get_conn()


def read_json(uri: str, conn_id: str, project: str) -> Any | None:
    """Read a JSON artifact from ``gs://`` or a local path; ``None`` if it does not exist."""
    if uri.startswith("gs://"):
        bucket, _, name = uri[len("gs://"):].partition("/")
        blob = storage_client(conn_id, project).bucket(bucket).get_blob(name)
        return None if blob is None else json.loads(blob.download_as_bytes())
    path = Path(uri)
    return json.loads(path.read_text()) if path.exists() else None


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
