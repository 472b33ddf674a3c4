"""Top-k ranking metrics on a holdout.

``recommended`` is an (users x k) array of item indices (-1 = empty slot) and ``relevant`` a
users x items sparse matrix whose non-zeros are the holdout items. Only users with at least
one relevant item count. Definitions (k = cut-off, R = relevant set of a user):

* precision@k = |top-k ∩ R| / k
* recall@k    = |top-k ∩ R| / |R|
* MAP@k       = mean over users of AP@k = Σ_{i≤k, rec_i ∈ R} precision@i / min(k, |R|)
* NDCG@k      = DCG@k / IDCG@k with binary gains and log2(i + 1) discounts
* coverage    = distinct recommended items / catalog size (over all given users)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hits_matrix(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean (users x k): is the item in each slot relevant for that user?"""
    users = np.repeat(np.arange(recommended.shape[0]), recommended.shape[1]).reshape(recommended.shape)
    valid = recommended >= 0
    hits = np.zeros(recommended.shape, dtype=bool)
    if not valid.any():
        return hits  # scipy indexes with empty arrays into a sparse matrix, not an array
    rel = relevant.tocsr()
    hits[valid] = np.asarray(rel[users[valid], recommended[valid]]).ravel() > 0
    return hits


def ranking_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> dict[str, float]:
    """precision, recall, map, ndcg @k averaged over users with relevant items, and coverage."""
    recommended = recommended[:, :k]
    n_relevant = relevant.getnnz(axis=1)
    users = n_relevant > 0
    hits = hits_matrix(recommended, relevant)[users]
    n_rel = n_relevant[users].astype(np.float64)
    n_hits = hits.sum(axis=1)
    ranks = np.arange(1, k + 1)

    precision_at_i = np.cumsum(hits, axis=1) / ranks
    ap = (precision_at_i * hits).sum(axis=1) / np.minimum(k, n_rel)
    discounts = 1.0 / np.log2(ranks + 1)
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(k, n_rel).astype(int) - 1]

    valid = recommended[recommended >= 0]
    n_items = relevant.shape[1]
    if not users.any():
        return {"precision": 0.0, "recall": 0.0, "map": 0.0, "ndcg": 0.0,
                "coverage": len(np.unique(valid)) / n_items if n_items else 0.0, "users": 0}
    return {
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_rel)),
        "map": float(np.mean(ap)),
        "ndcg": float(np.mean(dcg / ideal)),
        "coverage": float(len(np.unique(valid)) / n_items) if n_items else 0.0,
        "users": int(users.sum()),
    }


def popularity_ranking(train: sp.csr_matrix, k: int, head: int = 64) -> np.ndarray:
    """Top-k most popular unseen items per user (popularity = distinct users per item).

    Vectorised over the ``k + head`` most popular items: a user's answer lies among them unless
    they have seen more than ``head`` of them, and those few users are done one by one."""
    popularity = np.asarray((train > 0).sum(axis=0)).ravel()
    order = np.argsort(-popularity, kind="stable")
    n_users, width = train.shape[0], min(k + head, train.shape[1])
    rank = np.full(train.shape[1], width, dtype=np.int64)  # position in `order`; width = not in head
    rank[order[:width]] = np.arange(width)
    seen = np.zeros((n_users, width + 1), dtype=bool)
    rows = np.repeat(np.arange(n_users), np.diff(train.indptr))
    seen[rows, rank[train.indices]] = True
    seen = seen[:, :width]
    # Stable sort puts each row's unseen (False) slots first, in popularity order.
    picks = np.argsort(seen, axis=1, kind="stable")[:, :k]
    out = order[picks].astype(np.int64)
    unseen_in_head = width - seen.sum(axis=1)
    short = unseen_in_head < k
    out[short] = -1
    for u in np.flatnonzero(short):
        row = train.indices[train.indptr[u]:train.indptr[u + 1]]
        candidates = order[: k + len(row)]
        found = candidates[~np.isin(candidates, row)][:k]
        out[u, : len(found)] = found
    return out
