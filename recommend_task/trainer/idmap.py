"""Bidirectional maps between external string ids and dense matrix indices."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _arrow(values: Iterable[str]) -> pa.Array | pa.ChunkedArray:
    """Strings as Arrow, without a copy where they already are (a column read from BigQuery)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray):
        return pa.array(values.astype(object) if values.dtype.kind == "U" else values)
    return pa.array(list(values), type=pa.string())


def _chunks(encoded: pa.Array | pa.ChunkedArray) -> list[pa.DictionaryArray]:
    """A dictionary-encoded column's chunks, at least one (an empty column has none)."""
    if isinstance(encoded, pa.Array):
        return [encoded]
    return encoded.chunks or [pa.array([], pa.string()).dictionary_encode()]


class IdMap:
    """Sorted unique ids <-> 0..n-1. Sorting makes the mapping independent of input order.

    Arrow's hash kernels do the work: building a map from millions of event rows and looking
    them up take well under a second each (numpy's sort-based unique and pandas' indexer took
    several; measured in docs/benchmarks.md)."""

    def __init__(self, ids: Iterable[str]) -> None:
        if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
            unique = np.unique(ids)  # already strings (e.g. read back from an artifact)
        else:
            unique = np.sort(np.asarray(pc.unique(_arrow(ids)).drop_null().to_numpy(zero_copy_only=False),
                                        dtype=str))
        self.ids: np.ndarray = unique  # sorted, unique, fixed-width unicode (no pickle)
        self._lookup: pa.Array | None = None

    @classmethod
    def encode(cls, values: Iterable[str]) -> tuple[IdMap, np.ndarray]:
        """The map of ``values`` (no nulls) and the index (int32) of each value in it, from one
        hash pass (Arrow's dictionary encoding), where a map then :meth:`index_of` hash them
        twice. A column of many chunks is encoded as it is: Arrow gives its chunks one shared
        dictionary, so the strings are never copied into one array (a gigabyte at 100M
        events)."""
        array = _arrow(values)
        chunks = _chunks(pc.dictionary_encode(array))
        dictionary = chunks[-1].dictionary
        if any(len(chunk.dictionary) != len(dictionary) for chunk in chunks):  # not shared after all
            chunks = _chunks(pc.dictionary_encode(array.combine_chunks()))
            dictionary = chunks[-1].dictionary
        idmap = cls(dictionary)
        # The dictionary is in order of first appearance; the map is sorted.
        rank = np.empty(len(idmap), dtype=np.int32)
        rank[np.argsort(np.asarray(dictionary.to_numpy(zero_copy_only=False), dtype=str),
                        kind="stable")] = np.arange(len(idmap), dtype=np.int32)
        indices = np.concatenate([chunk.indices.to_numpy() for chunk in chunks])
        return idmap, rank[indices]

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    def index_of(self, values: Iterable[str]) -> np.ndarray:
        """Indices of ``values``; -1 where a value is unknown."""
        if self._lookup is None:
            self._lookup = pa.array(self.ids.astype(object), type=pa.string())
        found = pc.index_in(_arrow(values), value_set=self._lookup)
        return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)

    def id_of(self, indices: np.ndarray) -> np.ndarray:
        """Ids of ``indices`` (all must be valid)."""
        return self.ids[indices]
