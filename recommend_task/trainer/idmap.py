"""Bidirectional maps between external string ids and dense matrix indices."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


class IdMap:
    """Sorted unique ids <-> 0..n-1. Sorting makes the mapping independent of input order."""

    def __init__(self, ids: Iterable[str]) -> None:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=str)
        self.ids: np.ndarray = np.unique(arr)  # sorted, unique, fixed-width unicode (no pickle)
        self._index = pd.Index(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    def index_of(self, values: Iterable[str]) -> np.ndarray:
        """Indices of ``values``; -1 where a value is unknown."""
        return self._index.get_indexer(pd.Index(np.asarray(values, dtype=object))).astype(np.int64)

    def id_of(self, indices: np.ndarray) -> np.ndarray:
        """Ids of ``indices`` (all must be valid)."""
        return self.ids[indices]
