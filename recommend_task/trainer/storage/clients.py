"""The one place that knows whether we talk to Google Cloud or to the local emulators.

Real Google Cloud uses application default credentials. When the emulator variables are set
(``BIGQUERY_EMULATOR_HOST``, ``BIGQUERY_STORAGE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``) the
same client classes point at those endpoints with anonymous credentials. Nothing else in the
trainer knows the difference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from google.api_core.retry import Retry
from google.cloud import bigquery, storage
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

BQ_EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
BQ_STORAGE_EMULATOR_ENV = "BIGQUERY_STORAGE_EMULATOR_HOST"
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.clients")


def _anonymous():
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def _logged(predicate: Callable[[BaseException], bool], what: str) -> Callable[[BaseException], bool]:
    """The client's own retry rule, plus a warning for each retry, so a step's log shows an
    outage it rode out (the client itself logs retries only at DEBUG)."""
    def should_retry(exc: BaseException) -> bool:
        retry = predicate(exc)
        if retry:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            log.warning("BigQuery %s failed, retrying within %.0fs: %s: %s", what, _deadline(),
                        type(exc).__name__, first)
        return retry
    return should_retry


def bq_retry() -> Retry:
    """Client-side retry for BigQuery calls; the deadline is shortened locally so a broken
    emulator fails in seconds rather than after the default ten minutes."""
    # _predicate: the client library's own rule (google.cloud.bigquery.retry._should_retry).
    return DEFAULT_RETRY.with_deadline(_deadline()).with_predicate(
        _logged(DEFAULT_RETRY._predicate, "request"))


def bq_job_retry() -> Retry:
    """Re-running a whole query job that failed for a retriable reason, within the same deadline."""
    return DEFAULT_JOB_RETRY.with_deadline(_deadline()).with_predicate(
        _logged(DEFAULT_JOB_RETRY._predicate, "query job"))


def _deadline() -> float:
    return float(os.environ.get("RECSYS_BQ_RETRY_DEADLINE_S", "600"))


def gcs_retry() -> Retry:
    """Client-side retry for Cloud Storage calls, bounded by ``RECSYS_GCS_RETRY_DEADLINE_S``
    (default 120 s, the client's own)."""
    from google.cloud.storage.retry import DEFAULT_RETRY as GCS_DEFAULT_RETRY

    return GCS_DEFAULT_RETRY.with_deadline(float(os.environ.get("RECSYS_GCS_RETRY_DEADLINE_S", "120")))


def gcs_endpoint() -> str:
    """Where the Cloud Storage client sends its requests (named in errors)."""
    return os.environ.get(GCS_EMULATOR_ENV) or "https://storage.googleapis.com"


def bigquery_client(project: str, location: str | None = None) -> bigquery.Client:
    """A BigQuery client for ``project``: the emulator if configured, else Google Cloud."""
    endpoint = os.environ.get(BQ_EMULATOR_ENV)
    if endpoint:
        return bigquery.Client(
            project=project,
            location=location,
            credentials=_anonymous(),
            client_options={"api_endpoint": endpoint},
        )
    return bigquery.Client(project=project, location=location)


def bigquery_read_client():
    """A BigQuery Storage Read API client (the fast path for large query results)."""
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

    endpoint = os.environ.get(BQ_STORAGE_EMULATOR_ENV)
    if endpoint:
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        # The message limits the library sets on its own channel to the service: with gRPC's
        # 4 MB default, a result whose record batches grow past it fails to read.
        channel = grpc.insecure_channel(endpoint, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    return BigQueryReadClient()


def storage_client(project: str) -> storage.Client:
    """A Cloud Storage client for ``project``: the emulator if configured, else Google Cloud."""
    endpoint = os.environ.get(GCS_EMULATOR_ENV)
    if endpoint:
        return storage.Client(
            project=project, credentials=_anonymous(), client_options={"api_endpoint": endpoint}
        )
    return storage.Client(project=project)
