"""How summed event weights become ALS input: one transform shared by train, evaluate and predict.

A model records its ``weighting`` in its parameters; :func:`apply` is the only place it is
applied, before implicit's own ``alpha`` scaling, so a model trained on log1p weights folds
users in on log1p weights wherever it scores them. Models without the key were trained on raw
sums.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

RAW = "raw"
LOG1P = "log1p"
WEIGHTINGS = (RAW, LOG1P)


def of(params: dict[str, Any]) -> str:
    """A model's weighting (raw sums for models saved before it was recorded)."""
    return params.get("weighting") or RAW


def apply(interactions: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """``interactions`` (summed weights) as the model's input: raw, or log(1 + weight)."""
    if weighting == RAW:
        return interactions
    if weighting == LOG1P:
        out = interactions.copy()
        out.data = np.log1p(out.data, dtype=np.float32)
        return out
    raise ValueError(f"unknown weighting {weighting!r} (one of {', '.join(WEIGHTINGS)})")
