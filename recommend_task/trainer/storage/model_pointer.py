"""The published-model pointer (:data:`trainer.contract.LATEST_POINTER`): read it, and swap it
atomically."""

from __future__ import annotations

import json
import logging
from typing import Any

from trainer.core.errors import ModelNotFoundError
from trainer.storage import artifacts, layout

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.model_pointer")


def read_pointer(store: artifacts.ArtifactStore,
                 artifacts_uri: str) -> tuple[dict[str, Any] | None, int | None]:
    """The current pointer record (None if nothing is published) and its generation."""
    current = store.read_versioned(layout.latest_pointer(artifacts_uri))
    if current.data is None:
        return None, None
    return json.loads(current.data), current.generation


def published_model_uri(store: artifacts.ArtifactStore, artifacts_uri: str) -> str:
    """The URI of the published model; a clear error when none is published yet."""
    record, _ = read_pointer(store, artifacts_uri)
    if record is None:
        raise ModelNotFoundError(
            f"no published model: {layout.latest_pointer(artifacts_uri)} does not exist "
            "(train, evaluate and promote a model first, or pass --model-uri)"
        )
    return record["model_uri"]


def swap_pointer(store: artifacts.ArtifactStore, artifacts_uri: str, record: dict[str, Any],
                 expected_generation: int | None) -> None:
    """Replace the pointer only if nobody changed it since it was read."""
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    store.compare_and_swap(layout.latest_pointer(artifacts_uri), data, expected_generation)
