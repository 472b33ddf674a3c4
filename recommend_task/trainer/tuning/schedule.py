"""When a run searches, and which earlier settings a run between searches reuses.

``--tune``: ``off`` (today's settings and the run's own params), ``always``, or ``weekly`` (the
default): search when the newest usable record is a week old or missing, else reuse it. A
record is usable by a run when it was tuned on a run date no later than the run's last training
day, so a backfill never uses settings chosen on its own future. Records live at
``<artifacts>/tuning/<run_date>.json`` (:func:`trainer.contract.tuning_record_uri`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from trainer import contract
from trainer.storage import artifacts

log = logging.getLogger("trainer.schedule")

MODES = ("off", "always", "weekly")
RETUNE_AFTER_DAYS = 7


def usable_record(store: artifacts.ArtifactStore, artifacts_uri: str,
                  train_end: dt.date) -> dict[str, Any] | None:
    """The newest tuning record dated on or before ``train_end``, or None."""
    folder = contract.join(artifacts_uri, contract.TUNING_DIR)
    dates = []
    for name in store.list_names(folder):
        try:
            day = dt.date.fromisoformat(name.removesuffix(".json"))
        except ValueError:
            continue
        if name.endswith(".json") and day <= train_end:
            dates.append(day)
    for day in sorted(dates, reverse=True):
        try:
            return store.read_json(contract.tuning_record_uri(artifacts_uri, day.isoformat()))
        except (FileNotFoundError, ValueError):  # deleted meanwhile, or damaged: the one before
            log.warning("tuning record of %s unreadable: skipped", day)
    return None


def search_due(mode: str, run_date: dt.date, record: dict[str, Any] | None) -> bool:
    """Whether this run searches (``record``: :func:`usable_record`'s answer)."""
    if mode == "off":
        return False
    if mode == "always" or record is None:
        return True
    return (run_date - dt.date.fromisoformat(record["run_date"])).days >= RETUNE_AFTER_DAYS


def write_record(store: artifacts.ArtifactStore, artifacts_uri: str, run_date: dt.date,
                 settings: dict[str, Any], model_id: str, seed: int) -> str:
    """Record the settings this run's search chose and the model they made; returns its URI."""
    uri = contract.tuning_record_uri(artifacts_uri, run_date.isoformat())
    store.write_json(uri, {"run_date": run_date.isoformat(), "settings": settings,
                           "model_id": model_id, "seed": seed})
    return uri
