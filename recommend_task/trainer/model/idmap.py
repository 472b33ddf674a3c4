"""Bidirectional maps between external string ids and dense matrix indices.

Ids are held as numpy's variable-width strings (``StringDType``): each id costs its own length,
where fixed-width unicode arrays cost every id four bytes per character of the *longest* one
(one 20,000-character id among 100k made 8 GB) and dropped trailing NULs (``'abc\x00'`` became
``'abc'``). In ``.npz`` artifacts they are stored as UTF-8 bytes and offsets, without pickles;
artifacts of earlier images, with fixed-width arrays, are read as well.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STRINGS = np.dtypes.StringDType()


def _arrow(values: Iterable[str]) -> pa.Array | pa.ChunkedArray:
    """Strings as Arrow, without a copy where they already are (a column read from BigQuery)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray):
        return pa.array(values.astype(object) if values.dtype.kind == "U" else values, pa.string())
    return pa.array(list(values), type=pa.string())


def _strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow strings (no nulls) as a numpy ``StringDType`` array."""
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=STRINGS)


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
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "UT":
            unique = np.unique(ids.astype(STRINGS, copy=False))  # already strings (e.g. a slice)
        else:
            unique = np.sort(_strings(pc.unique(_arrow(ids)).drop_null()))
        self.ids: np.ndarray = unique  # sorted, unique, StringDType
        self._lookup: pa.Array | None = None

    @classmethod
    def _of_sorted(cls, ids: np.ndarray) -> IdMap:
        """A map of ids already sorted and unique (this class's own output, read back)."""
        idmap = cls.__new__(cls)
        idmap.ids, idmap._lookup = ids, None
        return idmap

    def to_arrays(self, name: str) -> dict[str, np.ndarray]:
        """The ids as ``.npz`` arrays ``<name>_utf8`` (their UTF-8 bytes) and ``<name>_offsets``
        (where each starts, and the end): no pickle, no padding to the longest id."""
        strings = pa.array(self.ids, pa.large_string())  # a fresh array: its offsets start at 0
        offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64, count=len(strings) + 1)
        data = strings.buffers()[2]
        utf8 = np.frombuffer(data, dtype=np.uint8, count=int(offsets[-1])) if data else np.zeros(0, np.uint8)
        utf8_name, offsets_name = self.array_names(name)
        return {utf8_name: utf8, offsets_name: offsets}

    @staticmethod
    def array_names(name: str) -> tuple[str, str]:
        """The names of :meth:`to_arrays`' arrays for ``name``."""
        return f"{name}_utf8", f"{name}_offsets"

    @classmethod
    def from_arrays(cls, npz, name: str) -> IdMap:
        """The map :meth:`to_arrays` stored under ``name`` in ``npz``, or an earlier image's
        fixed-width array ``name``."""
        utf8_name, offsets_name = cls.array_names(name)
        if utf8_name not in npz:
            return cls(np.asarray(npz[name]))
        offsets, utf8 = npz[offsets_name], npz[utf8_name]
        strings = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                                   pa.py_buffer(utf8))
        return cls._of_sorted(_strings(strings))

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
        # The dictionary is in order of first appearance; the map is sorted.
        strings = _strings(dictionary)
        order = np.argsort(strings, kind="stable")
        idmap = cls._of_sorted(strings[order])
        rank = np.empty(len(idmap), dtype=np.int32)
        rank[order] = np.arange(len(idmap), dtype=np.int32)
        indices = np.concatenate([chunk.indices.to_numpy() for chunk in chunks])
        return idmap, rank[indices]

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    def index_of(self, values: Iterable[str]) -> np.ndarray:
        """Indices of ``values``; -1 where a value is unknown."""
        if self._lookup is None:
            self._lookup = pa.array(self.ids, type=pa.string())
        found = pc.index_in(_arrow(values), value_set=self._lookup)
        return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)

    def id_of(self, indices: np.ndarray) -> np.ndarray:
        """Ids of ``indices`` (all must be valid)."""
        return self.ids[indices]
