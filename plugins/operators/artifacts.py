"""Read access to the JSON records the trainer leaves under ``RECSYS_ARTIFACTS_URI``: each
step's status record, and the run summaries the Slack messages quote. ``gs://`` URIs, or a local
directory (the trainer accepts both; the DAGs' configuration requires ``gs://``).

A hook over the stock ``GCSHook``: the client comes from the Google connection, so it is the
real Cloud Storage on Composer and, with an anonymous connection (extra ``is_anonymous``), the
GCS emulator wherever ``STORAGE_EMULATOR_HOST`` is set (the storage client reads it itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` -> ``(bucket, name)``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, name


class ArtifactsHook(BaseHook):
    """Reads the trainer's JSON records from Cloud Storage through the stock GCS hook."""

    conn_name_attr = "gcp_conn_id"
    hook_name = "Recommendation artifacts"

    def __init__(self, gcp_conn_id: str = "google_cloud_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gcp_conn_id = gcp_conn_id

    def read_json(self, uri: str) -> Any | None:
        """The JSON object at ``uri``, or ``None`` if there is none yet."""
        if not uri.startswith("gs://"):
            path = Path(uri)
            return json.loads(path.read_text()) if path.exists() else None
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        bucket, name = split_gcs_uri(uri)
        # get_blob answers None for a missing object; GCSHook.download would log an error first.
        blob = GCSHook(gcp_conn_id=self.gcp_conn_id).get_conn().bucket(bucket).get_blob(name)
        return None if blob is None else json.loads(blob.download_as_bytes())
