"""Where each artifact lives under ``--artifacts-uri`` (see :mod:`trainer.storage.artifacts`).

The folders the Airflow side reads too (run folders, model folders, the published-model pointer)
are defined by :mod:`trainer.contract`; this module adds the trainer's own files within them."""

from __future__ import annotations

import datetime as dt

from trainer import contract
from trainer.contract import LATEST_POINTER, latest_pointer, model_prefix
from trainer.core.errors import TrainerError
from trainer.storage import artifacts

__all__ = ["LATEST_POINTER", "candidate_model_uri", "candidate_record", "latest_pointer", "model_prefix",
           "prepared_window_file", "prepared_window_record", "run_prefix"]


def run_prefix(artifacts_uri: str, run_date: dt.date) -> str:
    """The folder of one run date's artifacts (:func:`trainer.contract.run_prefix`)."""
    return contract.run_prefix(artifacts_uri, run_date.isoformat())


# predict_window_task's window for the run's predict shards (a file each), and its record
# (written last).
PREPARED_WINDOW_DIR, PREPARED_WINDOW_RECORD = contract.PREPARED_WINDOW_DIR, contract.PREPARED_WINDOW_RECORD


def prepared_window_file(index: int, count: int) -> str:
    """Shard ``index`` of ``count``'s part of the prepared window, under the run's prefix."""
    return contract.prepared_window_file(index, count)


def prepared_window_record(artifacts_uri: str, run_date: dt.date) -> str:
    """predict_window_task's record of the run's prepared window (written last)."""
    return artifacts.join(run_prefix(artifacts_uri, run_date), PREPARED_WINDOW_RECORD)


def candidate_record(artifacts_uri: str, run_date: dt.date) -> str:
    """The hand-off from train_task to evaluate/promote: which model a run produced."""
    return artifacts.join(run_prefix(artifacts_uri, run_date), contract.CANDIDATE_RECORD)


def candidate_model_uri(store: artifacts.ArtifactStore, artifacts_uri: str, run_date: dt.date) -> str:
    """The model train_task produced for ``run_date``."""
    uri = candidate_record(artifacts_uri, run_date)
    try:
        return store.read_json(uri)["model_uri"]
    except FileNotFoundError:
        raise TrainerError(f"no trained model for run date {run_date}: {uri} not found "
                           "(run train_task first)") from None
