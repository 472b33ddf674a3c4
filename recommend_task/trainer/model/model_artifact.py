"""The model artifact: ALS factors, id maps, item popularity, parameters and metadata.

Stored as ``model.npz`` (arrays, no pickles) and ``model.json`` (parameters, metadata, the
SHA-256 of the ``.npz``). Recommendations always recompute the user's factors from the
interactions they are given (one ALS half-step), so the same code serves users seen in
training, users new since then, and a published model scored on today's holdout. A user the
model was trained on starts from its trained factors and takes training's own conjugate-gradient
step; implicit's exact solve from nothing, used for the others, cost predict 5-8 s at 10M
events when every user took it (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.core.errors import ModelNotFoundError, TrainerError
from trainer.model import weighting
from trainer.model.idmap import IdMap
from trainer.model.topk import top_unseen
from trainer.storage import artifacts
from trainer.storage.artifacts import sha256

# Scoring needs implicit and scipy; loading, promoting and publishing a model do not, and a
# step's start-up pays for every import (promote_model_task: 2.5 s with them, measured).
if TYPE_CHECKING:
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.model_artifact")


@dataclasses.dataclass
class ModelArtifact:
    model_id: str
    users: IdMap
    items: IdMap
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_popularity: np.ndarray  # distinct training users per item: the cold-user fallback
    params: dict[str, Any]
    metadata: dict[str, Any]

    # -- scoring ---------------------------------------------------------------------------
    def _als(self) -> AlternatingLeastSquares:
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=self.params["factors"],
            regularization=self.params["regularization"],
            alpha=self.params["alpha"],
            random_state=self.params.get("random_seed"),
            num_threads=self.params.get("num_threads", 0),
        )
        model.user_factors = self.user_factors
        model.item_factors = self.item_factors
        return model

    def _factors_of(self, model: AlternatingLeastSquares, rows: sp.csr_matrix,
                    trained: np.ndarray) -> np.ndarray:
        """Factors of the users of ``rows``; ``trained``: each one's row in this model's
        factors, -1 for a user it was not trained on."""
        factors = np.zeros((rows.shape[0], self.item_factors.shape[1]), dtype=self.item_factors.dtype)
        warm = trained >= 0
        if warm.any():
            start = self.user_factors[trained[warm]]  # a copy: the solver updates it in place
            confidence = (model.alpha * rows[warm]).astype(np.float32).tocsr()
            model.solver(confidence, start, self.item_factors, model.regularization,
                         num_threads=model.num_threads)
            factors[warm] = start
        if not warm.all():
            factors[~warm] = model.recalculate_user(np.arange(int((~warm).sum())), rows[~warm])
        return factors

    def reindex(self, interactions: sp.csr_matrix, columns: IdMap) -> sp.csr_matrix:
        """Re-express a user x ``columns`` matrix over this model's items (unknown items dropped)."""
        import scipy.sparse as sp

        if columns == self.items:
            return interactions
        coo = interactions.tocoo()
        mapped = self.items.index_of(columns.ids)[coo.col]
        keep = mapped >= 0
        out = sp.csr_matrix(
            (coo.data[keep], (coo.row[keep], mapped[keep])),
            shape=(interactions.shape[0], len(self.items)),
            dtype=np.float32,
        )
        out.sum_duplicates()
        return out

    def recommend(self, interactions: sp.csr_matrix, n: int,
                  user_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` item indices and scores per row of ``interactions`` (users x this model's
        items), excluding items the user already has. Rows with no known item get the most
        popular unseen items. Slots that cannot be filled are -1 with score NaN.

        Each row's factors are computed again from its interactions (one ALS half-step). A
        user the model was trained on (``user_ids``: each row's external id) gets the step
        training itself takes, conjugate gradient from its trained factors; any other user an
        exact solve from nothing (implicit's Cholesky solve, 3-4x the cost per user). Both
        take the weights through the model's :mod:`~trainer.model.weighting` first."""
        # The model's own input transform (train applied it before fitting): raw or log1p.
        interactions = weighting.apply(interactions, weighting.of(self.params))
        n_users = interactions.shape[0]
        ids = np.full((n_users, n), -1, dtype=np.int64)
        scores = np.full((n_users, n), np.nan, dtype=np.float32)
        seen = interactions.getnnz(axis=1)
        has_items = np.flatnonzero(seen > 0)
        trained = (self.users.index_of(user_ids) if user_ids is not None
                   else np.full(n_users, -1, dtype=np.int64))
        from threadpoolctl import threadpool_limits

        # implicit and top_unseen parallelise themselves; a multi-threaded BLAS underneath
        # only oversubscribes.
        with threadpool_limits(1, "blas"):
            model = self._als()
            batch = interactions[has_items]
            ids[has_items], scores[has_items] = top_unseen(
                self.item_factors, self._factors_of(model, batch, trained[has_items]), batch, n,
                num_threads=model.num_threads)
        cold = np.flatnonzero(seen == 0)
        if cold.size:
            top = np.argsort(-self.item_popularity, kind="stable")[:n]
            ids[cold, : len(top)] = top
            scores[cold, : len(top)] = self.item_popularity[top]
        return ids, scores

    # -- storage ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(  # uncompressed: compressing float32 factors costs seconds and saves little
            buf, **self.users.to_arrays("user_ids"), **self.items.to_arrays("item_ids"),
            user_factors=self.user_factors, item_factors=self.item_factors,
            item_popularity=self.item_popularity,
        )
        return buf.getvalue()

    def save(self, store: artifacts.ArtifactStore, uri: str) -> None:
        """Write ``model.npz`` then ``model.json`` (whose presence marks a complete model)."""
        payload = self.to_bytes()
        store.write_bytes(artifacts.join(uri, "model.npz"), payload)
        store.write_json(artifacts.join(uri, "model.json"), {
            "model_id": self.model_id, "params": self.params, "metadata": self.metadata,
            "sha256": sha256(payload), "md5": artifacts.md5_b64(payload), "bytes": len(payload),
        })


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What promoting a model needs of it: its id and metadata, its file checked intact."""

    model_id: str
    params: dict[str, Any]
    metadata: dict[str, Any]


def _read_meta(store: artifacts.ArtifactStore, uri: str) -> dict[str, Any]:
    try:
        return store.read_json(artifacts.join(uri, "model.json"))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"no model at {uri} ({exc} not found)") from None
    except json.JSONDecodeError:
        raise TrainerError(f"model metadata at {uri}/model.json is not valid JSON") from None


def model_file(uri: str, meta: dict[str, Any]) -> str:
    """The model's array file: ``model.npz``, or the file ``model.json`` names once erasing a
    learner rewrote it under a new name (:mod:`trainer.data.erasure`)."""
    return artifacts.join(uri, meta.get("file") or "model.npz")


def check_model(store: artifacts.ArtifactStore, uri: str) -> ModelInfo:
    """:func:`load_model`'s refusals (missing, damaged) without reading the factors: on Cloud
    Storage the file's checksum comes from the object's metadata (promote: 50 MB not downloaded)."""
    meta = _read_meta(store, uri)
    try:
        intact = store.matches(model_file(uri, meta), meta["sha256"], meta.get("md5"))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"no model at {uri} ({exc} not found)") from None
    if not intact:
        raise TrainerError(f"checksum mismatch for {model_file(uri, meta)}: file does not match model.json")
    return ModelInfo(model_id=meta["model_id"], params=meta["params"], metadata=meta["metadata"])


def load_model(store: artifacts.ArtifactStore, uri: str) -> ModelArtifact:
    """Load a model saved by :meth:`ModelArtifact.save`; a missing or damaged one is an error."""
    meta = _read_meta(store, uri)
    try:
        payload = store.read_bytes(model_file(uri, meta))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"no model at {uri} ({exc} not found)") from None
    if sha256(payload) != meta["sha256"]:
        raise TrainerError(f"checksum mismatch for {model_file(uri, meta)}: file does not match model.json")
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        return ModelArtifact(
            model_id=meta["model_id"], users=IdMap.from_arrays(npz, "user_ids"),
            items=IdMap.from_arrays(npz, "item_ids"),
            user_factors=npz["user_factors"], item_factors=npz["item_factors"],
            item_popularity=npz["item_popularity"], params=meta["params"],
            metadata=meta["metadata"],
        )
