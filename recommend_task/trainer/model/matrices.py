"""User x item interaction matrices (CSR) and their on-disk artifact.

The artifact is a single ``.npz`` (no pickles) with the id maps and the train / holdout CSR
matrices, plus a JSON manifest carrying the window, the counts and the SHA-256 of the ``.npz``
so a later step can refuse a truncated or mismatched file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from trainer import contract
from trainer.core.errors import TrainerError
from trainer.model.idmap import IdMap
from trainer.storage import artifacts
from trainer.storage.layout import run_prefix


def column(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    """A column of ``table`` (no nulls) as a numpy array of ``dtype``."""
    return np.asarray(table[name].to_numpy(), dtype=dtype)


def build_csr(table: pa.Table, users: IdMap, items: IdMap, value: str = "weight") -> sp.csr_matrix:
    """A ``len(users) x len(items)`` float32 CSR of ``table[value]``; rows whose user or item is
    not in the maps are ignored and duplicate (user, item) pairs are summed."""
    rows = users.index_of(table["user_id"])
    cols = items.index_of(table["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    data = column(table, value, np.float32)[keep]
    matrix = sp.coo_matrix((data, (rows[keep], cols[keep])), shape=(len(users), len(items)))
    csr = matrix.tocsr()  # sums duplicates
    csr.sort_indices()
    return csr.astype(np.float32)


@dataclasses.dataclass
class WindowBuild:
    """Everything create_cf_matrices_task builds from one read of the window."""

    users: IdMap  # users with at least one interaction in the training days
    items: IdMap  # items seen in the training days: the columns of every matrix here
    train: sp.csr_matrix
    holdout: sp.csr_matrix | None  # holdout-days interactions of those users, seen pairs removed
    holdout_cold_users: int  # users active in the holdout days only (not evaluated)
    validation: sp.csr_matrix | None  # like train, the validation days' weights only (a part of train)
    window_users: IdMap  # every user of the window
    whole: sp.csr_matrix  # window_users x items: the whole window's weights summed


@dataclasses.dataclass
class WindowCodes:
    """The aggregated window as numbers: each row's user and item as an index into its map, its
    holdout flag and weight. What the matrices are built from, so the string ids, the largest
    part of a read, can be released before the build (about 30 bytes per interaction)."""

    users: IdMap  # every user of the window
    rows: np.ndarray  # int32 index into users, one per aggregated row
    items: IdMap  # every item of the window
    item_codes: np.ndarray  # int32 index into items
    in_holdout: np.ndarray  # bool
    weights: np.ndarray  # float32
    in_validation: np.ndarray | None = None  # bool: a training row of the validation days

    @classmethod
    def encode(cls, table: pa.Table, value: str = "weight") -> WindowCodes:
        """Hash each column of ids once (``user_id``, ``item_id``, ``in_holdout``, ``value``)."""
        users, rows = IdMap.encode(table["user_id"])
        items, item_codes = IdMap.encode(table["item_id"])
        in_validation = (column(table, "in_validation", bool)
                         if "in_validation" in table.column_names else None)
        return cls(users, rows, items, item_codes, column(table, "in_holdout", bool),
                   column(table, value, np.float32), in_validation)


def build_window(window: pa.Table | WindowCodes, value: str = "weight") -> WindowBuild:
    """One pass over the aggregated window (a table of ``user_id``, ``item_id``, ``in_holdout``,
    ``value``, or its :class:`WindowCodes`): each column of ids is hashed once and the matrices
    are rows of one another, where building each from its own rows hashed every id again
    (measured: docs/benchmarks.md)."""
    codes = window if isinstance(window, WindowCodes) else WindowCodes.encode(window, value)
    window_users, rows, in_holdout, data = codes.users, codes.rows, codes.in_holdout, codes.weights
    trained_item = np.bincount(codes.item_codes[~in_holdout], minlength=len(codes.items)) > 0
    items = IdMap(codes.items.ids[trained_item])  # the columns: items of the training days
    column_of = np.where(trained_item, np.cumsum(trained_item) - 1, -1).astype(np.int32)
    cols = column_of[codes.item_codes]
    known = cols >= 0
    shape = (len(window_users), len(items))

    def csr(mask: np.ndarray) -> sp.csr_matrix:
        matrix = sp.coo_matrix((data[mask], (rows[mask], cols[mask])), shape=shape).tocsr()
        matrix.sort_indices()  # tocsr() summed the duplicates
        return matrix.astype(np.float32, copy=False)

    whole = csr(known)
    train_w = csr(known & ~in_holdout)
    trained = np.flatnonzero(train_w.getnnz(axis=1) > 0)
    users = IdMap(window_users.ids[trained])
    train = train_w[trained]
    holdout, cold = None, 0
    if in_holdout.any():
        holdout = remove_seen(csr(known & in_holdout)[trained], train)
        active = np.zeros(len(window_users), dtype=bool)
        active[rows[in_holdout]] = True
        active[trained] = False
        cold = int(active.sum())
    validation = None
    if codes.in_validation is not None and codes.in_validation.any():
        validation = csr(known & codes.in_validation & ~in_holdout)[trained]
    return WindowBuild(users=users, items=items, train=train, holdout=holdout, holdout_cold_users=cold,
                       validation=validation, window_users=window_users, whole=whole)


def remove_seen(holdout: sp.csr_matrix, train: sp.csr_matrix) -> sp.csr_matrix:
    """Holdout entries for (user, item) pairs the user has not already interacted with in train:
    those are what a recommender that filters seen items can possibly get right."""
    seen = (train > 0).astype(np.float32)
    unseen = holdout - holdout.multiply(seen)
    unseen = sp.csr_matrix(unseen)
    unseen.eliminate_zeros()
    return unseen


@dataclasses.dataclass
class CFMatrices:
    """Id maps plus the train matrix and (optionally) the evaluation holdout, same shape.

    ``validation`` holds the weights of the training part's last days, already summed into
    ``train``: the tuning search fits on the rest and ranks on them (:mod:`trainer.tuning`)."""

    users: IdMap
    items: IdMap
    train: sp.csr_matrix
    holdout: sp.csr_matrix | None
    validation: sp.csr_matrix | None = None

    def to_bytes(self) -> bytes:
        arrays = {**self.users.to_arrays("user_ids"), **self.items.to_arrays("item_ids")}
        for name, m in (("train", self.train), ("holdout", self.holdout),
                        ("validation", self.validation)):
            if m is None:
                continue
            arrays[f"{name}_data"], arrays[f"{name}_indices"] = m.data, m.indices
            arrays[f"{name}_indptr"], arrays[f"{name}_shape"] = m.indptr, np.array(m.shape)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # uncompressed: compressing float32 data costs seconds, saves little
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CFMatrices:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            def csr(name: str) -> sp.csr_matrix | None:
                if f"{name}_data" not in npz:
                    return None
                return sp.csr_matrix(
                    (npz[f"{name}_data"], npz[f"{name}_indices"], npz[f"{name}_indptr"]),
                    shape=tuple(npz[f"{name}_shape"]),
                )

            users, items = IdMap.from_arrays(npz, "user_ids"), IdMap.from_arrays(npz, "item_ids")
            train = csr("train")
            if train is None:
                raise TrainerError("matrices artifact has no train matrix")
            return cls(users=users, items=items, train=train, holdout=csr("holdout"),
                       validation=csr("validation"))


sha256 = artifacts.sha256


def load_matrices(store: artifacts.ArtifactStore, artifacts_uri: str,
                  run_date: dt.date) -> tuple[CFMatrices, dict]:
    """Read a run's matrices and manifest, refusing a file whose checksum does not match."""
    manifest_uri = artifacts.join(run_prefix(artifacts_uri, run_date), contract.MANIFEST_RECORD)
    try:
        manifest = store.read_json(manifest_uri)
        payload = store.read_bytes(manifest["matrices_uri"])
    except FileNotFoundError as exc:
        raise TrainerError(f"no matrices for run date {run_date}: {exc} not found "
                           "(run create_cf_matrices_task first)") from None
    if sha256(payload) != manifest["sha256"]:
        raise TrainerError(f"checksum mismatch for {manifest['matrices_uri']}: "
                           "file does not match its manifest")
    return CFMatrices.from_bytes(payload), manifest
