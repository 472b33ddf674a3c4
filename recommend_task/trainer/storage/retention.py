"""What the product keeps, and for how long (cost figures: docs/retention.md).

BigQuery: the partitions of ``recommendations`` and ``model_metrics`` expire after a number of
days (:class:`TableRetention`, set by :func:`trainer.storage.tables.ensure_table` whenever a step that
writes them starts, so a changed setting applies to existing tables too); staging tables expire
a day after they are created (:data:`trainer.storage.partitions.STAGING_TTL`).

Cloud Storage: ``deploy/gcs-lifecycle.json`` deletes ``runs/`` objects after a number of days,
and model objects a grace period after their ``customTime``. A lifecycle rule cannot know which
model is published or which are the newest, so promotion marks the others
(:func:`mark_superseded_models`): every model except the published one and the newest ``keep``
gets ``customTime`` = now, once. A rollback to a marked model moves its ``customTime`` to
:data:`KEEP_FOREVER` first (Cloud Storage lets it move only forward), so a published model is
never deleted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import re

from trainer.core.errors import TrainerError
from trainer.storage import artifacts, layout

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.retention")

DAY_MS = 24 * 3600 * 1000
# A week-long outage must not empty recommendations_latest: the newest day outlives it.
MIN_RECOMMENDATIONS_DAYS = 7
MIN_METRICS_DAYS = 30
DEFAULT_RECOMMENDATIONS_DAYS = 90
DEFAULT_METRICS_DAYS = 730
DEFAULT_KEEP_MODELS = 7
KEEP_FOREVER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
_MODEL_DIR = re.compile(r"als-(\d{8})-[0-9a-f]{10}")


@dataclasses.dataclass(frozen=True)
class TableRetention:
    """Days a partition of each table is kept; 0 keeps it forever."""

    recommendations_days: int = DEFAULT_RECOMMENDATIONS_DAYS
    metrics_days: int = DEFAULT_METRICS_DAYS

    def __post_init__(self) -> None:
        for name, days, minimum in (("recommendations", self.recommendations_days, MIN_RECOMMENDATIONS_DAYS),
                                    ("model_metrics", self.metrics_days, MIN_METRICS_DAYS)):
            if days != 0 and days < minimum:
                raise TrainerError(f"{name} retention must be 0 (keep forever) or at least {minimum} "
                                 f"days, got {days}")


def expiration_ms(days: int) -> int | None:
    """BigQuery's ``timePartitioning.expirationMs`` for ``days`` (None: never expires)."""
    return days * DAY_MS if days else None


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recommendations-retention-days`` and ``--metrics-retention-days``."""
    parser.add_argument(
        "--recommendations-retention-days", type=int,
        default=int(os.environ.get("RECSYS_RECOMMENDATIONS_RETENTION_DAYS", DEFAULT_RECOMMENDATIONS_DAYS)),
        help=f"days a day of recommendations is kept; 0 = forever, else >= {MIN_RECOMMENDATIONS_DAYS} "
        "(env RECSYS_RECOMMENDATIONS_RETENTION_DAYS)")
    parser.add_argument(
        "--metrics-retention-days", type=int,
        default=int(os.environ.get("RECSYS_METRICS_RETENTION_DAYS", DEFAULT_METRICS_DAYS)),
        help=f"days a day of model_metrics is kept; 0 = forever, else >= {MIN_METRICS_DAYS} "
        "(env RECSYS_METRICS_RETENTION_DAYS)")


def table_retention(args: argparse.Namespace) -> TableRetention:
    """The table retention the arguments ask for; a bad value raises TrainerError naming it."""
    return TableRetention(args.recommendations_retention_days, args.metrics_retention_days)


def _model_order(model_id: str) -> str:
    found = _MODEL_DIR.fullmatch(model_id)
    return found.group(1) if found else ""


def mark_superseded_models(store: artifacts.ArtifactStore, artifacts_uri: str, published_id: str | None,
                           keep: int, now: dt.datetime | None = None) -> list[str]:
    """Set ``customTime`` on the objects of every model but the published one and the newest
    ``keep`` (by run date, then id), where not set yet; returns the ids newly marked. Only
    Cloud Storage has lifecycle rules: a local artifacts directory is left as it is."""
    if not artifacts.is_gcs(artifacts_uri):
        log.info("artifacts in a local directory: no lifecycle, no model marked")
        return []
    now = now or dt.datetime.now(dt.UTC)
    bucket, prefix = store.bucket_and_name(layout.model_prefix(artifacts_uri, ""))  # ".../models/"
    by_model: dict[str, list] = {}
    for blob in bucket.client.list_blobs(bucket, prefix=prefix):  # one listing for all models
        model_id = blob.name[len(prefix):].split("/", 1)[0]
        if _MODEL_DIR.fullmatch(model_id):
            by_model.setdefault(model_id, []).append(blob)
    models = sorted(by_model, key=lambda m: (_model_order(m), m), reverse=True)
    kept = set(models[:keep]) | ({published_id} if published_id else set())
    marked = []
    for model_id in models:
        unmarked = [b for b in by_model[model_id] if b.custom_time is None]
        if model_id in kept or not unmarked:
            continue
        for blob in unmarked:
            blob.custom_time = now
            blob.patch()
        marked.append(model_id)
    log.info("models: %d found, %d kept (published %s and the newest %d), %d newly marked for the "
             "lifecycle rule: %s", len(models), len(kept & set(models)), published_id, keep, len(marked),
             ", ".join(marked) or "none")
    return marked


def keep_model(store: artifacts.ArtifactStore, model_uri: str) -> bool:
    """Take ``model_uri`` out of the lifecycle rule's reach (before it is published again);
    True if it had been marked."""
    if not artifacts.is_gcs(model_uri):
        return False
    bucket, prefix = store.bucket_and_name(model_uri.rstrip("/") + "/")
    rescued = False
    for blob in bucket.client.list_blobs(bucket, prefix=prefix):
        if blob.custom_time is not None and blob.custom_time < KEEP_FOREVER:
            blob.custom_time = KEEP_FOREVER
            blob.patch()
            rescued = True
    if rescued:
        log.warning("model %s had been marked for deletion; kept for good now that it is published again",
                    model_uri)
    return rescued
