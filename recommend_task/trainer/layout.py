"""Where each artifact lives under ``--artifacts-uri`` (see :mod:`trainer.artifacts`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from trainer import artifacts
from trainer.artifacts import sha256
from trainer.errors import TrainerError

if TYPE_CHECKING:
    from trainer.matrices import CFMatrices

LATEST_POINTER = "models/LATEST"


def run_prefix(artifacts_uri: str, run_date: dt.date) -> str:
    return artifacts.join(artifacts_uri, "runs", run_date.isoformat())


def model_prefix(artifacts_uri: str, model_id: str) -> str:
    return artifacts.join(artifacts_uri, "models", model_id)


def latest_pointer(artifacts_uri: str) -> str:
    return artifacts.join(artifacts_uri, LATEST_POINTER)


# predict_window_task's window for the run's predict shards (a file each), and its record
# (written last).
PREPARED_WINDOW_DIR, PREPARED_WINDOW_RECORD = "predict-window", "predict-window.json"


def prepared_window_file(index: int, count: int) -> str:
    """Shard ``index`` of ``count``'s part of the prepared window, under the run's prefix."""
    return f"{PREPARED_WINDOW_DIR}/{index}-of-{count}.npz"


def prepared_window_record(artifacts_uri: str, run_date: dt.date) -> str:
    return artifacts.join(run_prefix(artifacts_uri, run_date), PREPARED_WINDOW_RECORD)


def candidate_record(artifacts_uri: str, run_date: dt.date) -> str:
    """The hand-off from train_task to evaluate/promote: which model a run produced."""
    return artifacts.join(run_prefix(artifacts_uri, run_date), "candidate.json")


def load_matrices(store: artifacts.ArtifactStore, artifacts_uri: str,
                  run_date: dt.date) -> tuple[CFMatrices, dict]:
    """Read a run's matrices and manifest, refusing a file whose checksum does not match."""
    manifest_uri = artifacts.join(run_prefix(artifacts_uri, run_date), "manifest.json")
    try:
        manifest = store.read_json(manifest_uri)
        payload = store.read_bytes(manifest["matrices_uri"])
    except FileNotFoundError as exc:
        raise TrainerError(f"no matrices for run date {run_date}: {exc} not found "
                           "(run create_cf_matrices_task first)") from None
    if sha256(payload) != manifest["sha256"]:
        raise TrainerError(f"checksum mismatch for {manifest['matrices_uri']}: "
                           "file does not match its manifest")
    from trainer.matrices import CFMatrices  # scipy: only the steps that read matrices

    return CFMatrices.from_bytes(payload), manifest


def candidate_model_uri(store: artifacts.ArtifactStore, artifacts_uri: str, run_date: dt.date) -> str:
    """The model train_task produced for ``run_date``."""
    uri = candidate_record(artifacts_uri, run_date)
    try:
        return store.read_json(uri)["model_uri"]
    except FileNotFoundError:
        raise TrainerError(f"no trained model for run date {run_date}: {uri} not found "
                           "(run train_task first)") from None
