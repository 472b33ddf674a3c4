"""The time-ordered validation split: fit on the training part's earlier days, rank its last.

create_cf_matrices keeps the weights of the training part's last days apart (``validation``,
already summed into ``train``); the evaluation holdout after them is never touched here, so the
promotion gate judges the refit model on days the search never saw.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from trainer.model.matrices import CFMatrices, remove_seen

MIN_USERS = 20  # fewer validation users and one lucky hit decides the search
MAX_USERS = 5_000  # scored per trial; a fixed sample beyond (every trial judged on the same users)


@dataclasses.dataclass
class ValidationSplit:
    fit: sp.csr_matrix  # the training part without its validation days (raw summed weights)
    target: sp.csr_matrix  # users x items: the validation days' items each user had not seen
    users: np.ndarray  # rows scored: users with earlier interactions and validation items


def carve(matrices: CFMatrices, k: int, seed: int,
          max_users: int = MAX_USERS) -> ValidationSplit | str:
    """The split of ``matrices``, or why there is none (one line: the search is skipped)."""
    if matrices.validation is None or matrices.validation.nnz == 0:
        return "no validation days (a window too short, or matrices built before tuning)"
    fit = (matrices.train - matrices.validation).tocsr()
    # Weights are sums of event weights: the difference of two sums is exact up to float rounding.
    fit.data[np.abs(fit.data) < 1e-4] = 0
    fit.eliminate_zeros()
    fit.sort_indices()
    target = remove_seen(matrices.validation, fit)
    users = np.flatnonzero((fit.getnnz(axis=1) > 0) & (target.getnnz(axis=1) > 0))
    items = int((fit.getnnz(axis=0) > 0).sum())
    if users.size < MIN_USERS or items <= k:
        return (f"validation split too small to choose: {users.size} users with validation items "
                f"(need {MIN_USERS}), {items} items trained on (need more than k={k})")
    if users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    return ValidationSplit(fit=fit, target=target, users=users)
