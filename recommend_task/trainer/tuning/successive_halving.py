"""Successive halving on ALS iterations, inside a budget of three refits.

Every candidate is fitted for a few iterations on the validation split's earlier days and
ranked on its last days by ndcg@k; the best third (today's settings always among them) is fitted
again for three times as many, and the best of that rung wins, provided its recall is no worse
than today's settings' by more than the promotion gate's ``max_regression``. Fits start from the
same seeded factors.

The plan (:func:`plan`: how many candidates, how many iterations per rung) is made in
factor-iterations over the fit matrix, so it is the same at any scale and on any machine: at
most ``ratio`` times the refit's, less a share for scoring. While it runs, a trial is started
only if its estimated seconds (measured on today's settings' first fit, scaled by factors and
iterations) fit in what its rung has left, and the step's own time budget caps the whole.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from trainer.evaluation.ranking_metrics import ranking_metrics
from trainer.model import weighting
from trainer.model.topk import top_unseen
from trainer.tuning.settings import Settings
from trainer.tuning.validation_split import ValidationSplit

log = logging.getLogger("trainer.successive_halving")

ETA = 3  # a rung keeps the best 1/ETA of the one before


@dataclasses.dataclass
class Trial:
    """One candidate's fits: the furthest rung it reached and its validation figures there."""

    trial: int
    settings: Settings
    status: str = "pending"  # ok | stopped (not promoted) | nan | over_budget | too_costly
    rung: int = -1
    iterations: int = 0  # iterations of its last fit
    ndcg: float | None = None
    recall: float | None = None
    seconds: float = 0.0  # every fit and scoring of this candidate
    note: str | None = None
    winner: bool = False

    def to_dict(self, k: int) -> dict[str, Any]:
        return {"trial": self.trial, **self.settings.to_dict(), "status": self.status,
                "rung": self.rung, "iterations": self.iterations, f"ndcg_at_{k}": self.ndcg,
                f"recall_at_{k}": self.recall, "seconds": round(self.seconds, 3),
                "note": self.note, "winner": self.winner}


@dataclasses.dataclass
class Costs:
    """Seconds per unit of work, measured on the first fit and scoring of today's settings."""

    fit_per_nnz_iteration_factor: float
    score_per_user_item_factor: float


@dataclasses.dataclass(frozen=True)
class Budget:
    """The search's budget: ``ratio`` times the refit's cost (today's settings' factors and the
    run's iterations over the whole training part), at most ``cap_s`` seconds (what the step's
    own time budget leaves)."""

    ratio: float
    train_nnz: int
    cap_s: float | None = None

    def factor_iterations(self, fit_nnz: int, iterations: int, factors: int) -> float:
        """The budget in factor-iterations over a fit matrix of ``fit_nnz`` non-zeros."""
        return self.ratio * iterations * factors * self.train_nnz / max(1, fit_nnz)

    def seconds(self, fit_seconds_per_nnz: float) -> float:
        wanted = self.ratio * fit_seconds_per_nnz * self.train_nnz
        return min(wanted, self.cap_s) if self.cap_s is not None else wanted


@dataclasses.dataclass
class SearchResult:
    winner: Settings
    trials: list[Trial]
    costs: Costs | None
    seconds: float
    budget_s: float | None
    rungs: list[int]
    dropped_numeric: int

    @property
    def tried(self) -> int:
        return sum(1 for t in self.trials if t.rung >= 0)


FIT_SHARE = 0.85  # of the budget planned for fits; the rest is scoring and overheads


def rungs_for(iterations: int) -> list[int]:
    """The most iterations each rung takes: about a seventh, then a third of a full fit (15: 2
    and 5). The winner's refit does the full count on the whole training part."""
    first = max(1, iterations // 7)
    return [first, max(first + 1, iterations // 3)] if iterations > 2 else [iterations]


def plan(factors: list[int], iterations: int, budget: float) -> tuple[int, list[int]]:
    """How many of the candidates (``factors``: each one's, today's settings first) the search
    tries within ``budget`` factor-iterations, and each rung's iterations (:func:`rungs_for`):
    the first rung fits them all, the second today's settings and the best third of the rest.
    Fewer candidates rather than fewer iterations: after one iteration a strongly regularized
    candidate ranks far below where it ends (measured at 10M events: ndcg@10 0.023 after one,
    the best of all after two). ``(1, [])``: not even one challenger fits."""
    rungs = rungs_for(iterations)
    for count in range(len(factors), 1, -1):
        if sum(planned_cost(factors[:count], rungs)) <= FIT_SHARE * budget:
            return count, rungs
    return 1, []


def planned_cost(factors: list[int], rungs: list[int]) -> list[float]:
    """The factor-iterations of each rung of :func:`plan`'s answer."""
    challengers = factors[1:]
    costs = [sum(factors) * rungs[0]]
    if len(rungs) > 1:
        promoted = math.ceil(len(challengers) / ETA)
        costs.append((factors[0] + promoted * sum(challengers) / max(1, len(challengers))) * rungs[1])
    return costs


def fit_factors(fit: Any, settings: Settings, iterations: int, seed: int,
                num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """ALS user and item factors of ``settings`` on ``fit`` (summed weights), its weighting applied."""
    with threadpool_limits(1, "blas"):  # before the model: implicit checks the BLAS when built
        model = AlternatingLeastSquares(
            factors=settings.factors, regularization=settings.regularization, alpha=settings.alpha,
            iterations=iterations, random_state=seed, num_threads=num_threads,
            calculate_training_loss=False)
        model.fit(weighting.apply(fit, settings.weighting), show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


class Search:
    """The trials of one search (see the module docstring)."""

    def __init__(self, split: ValidationSplit, candidates: list[Settings], *, iterations: int, k: int,
                 seed: int, num_threads: int, max_regression: float, budget: Budget,
                 too_costly: Callable[[Settings, Costs], str | None]) -> None:
        self.split, self.k, self.seed, self.num_threads = split, k, seed, num_threads
        self.max_regression, self.budget, self.too_costly = max_regression, budget, too_costly
        self.budget_s = budget.cap_s if budget.cap_s is not None else math.inf
        self.full_iterations = iterations
        factors = [c.factors for c in candidates]
        self.planned, self.rungs = plan(factors, iterations, budget.factor_iterations(
            split.fit.nnz, iterations, candidates[0].factors))
        costs = planned_cost(factors[:self.planned], self.rungs) if self.rungs else [0.0]
        self.first_rung_share = costs[0] / sum(costs) if sum(costs) else 1.0
        self.trials = [Trial(i, s) for i, s in enumerate(candidates)]
        for trial in self.trials[self.planned:]:
            trial.status = "over_budget"
            trial.note = f"the budget of {budget.ratio:g} refits plans {self.planned} candidates"
        self.costs: Costs | None = None
        self.started = time.perf_counter()
        self.dropped_numeric = 0

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def estimate(self, settings: Settings, iterations: int) -> float:
        if self.costs is None:
            return 0.0
        fit = self.costs.fit_per_nnz_iteration_factor * self.split.fit.nnz * iterations * settings.factors
        score = (self.costs.score_per_user_item_factor * self.split.users.size
                 * self.split.fit.shape[1] * settings.factors)
        return fit + score

    def _run(self, trial: Trial, rung: int) -> None:
        iterations = self.rungs[rung]
        began = time.perf_counter()
        users_f, items_f = fit_factors(self.split.fit, trial.settings, iterations, self.seed,
                                       self.num_threads)
        fitted = time.perf_counter()
        trial.rung, trial.iterations = rung, iterations
        if not (np.isfinite(users_f).all() and np.isfinite(items_f).all()):
            trial.status, trial.note = "nan", "non-finite factors"
            trial.seconds += fitted - began
            self.dropped_numeric += 1
            log.warning("trial %d (%s): non-finite factors after %d iterations: dropped",
                        trial.trial, trial.settings, iterations)
            return
        users = self.split.users
        with threadpool_limits(1, "blas"):
            picks, _ = top_unseen(items_f, users_f[users], self.split.fit[users], self.k,
                                  num_threads=self.num_threads)
        figures = ranking_metrics(picks, self.split.target[users], self.k)
        done = time.perf_counter()
        trial.seconds += done - began
        trial.ndcg, trial.recall, trial.status = figures["ndcg"], figures["recall"], "ok"
        if self.costs is None:  # today's settings' first fit: the unit every estimate scales
            self.costs = costs = Costs(
                fit_per_nnz_iteration_factor=(fitted - began) / max(1, self.split.fit.nnz * iterations
                                                                     * trial.settings.factors),
                score_per_user_item_factor=(done - fitted) / max(1, users.size * self.split.fit.shape[1]
                                                                 * trial.settings.factors))
            self.budget_s = self.budget.seconds(costs.fit_per_nnz_iteration_factor
                                                * self.full_iterations * trial.settings.factors)
        log.info("trial %d rung %d (%d iterations) %s: ndcg@%d=%.4f recall@%d=%.4f (%.2fs)",
                 trial.trial, rung, iterations, trial.settings, self.k, trial.ndcg, self.k,
                 trial.recall, done - began)

    def _rung(self, rung: int, entrants: list[Trial]) -> None:
        default = entrants[0]
        for trial in entrants:
            if trial is not default:
                # The first rung keeps its planned share: the second needs the rest.
                allowance = self.budget_s * (self.first_rung_share if rung + 1 < len(self.rungs) else 1.0)
                if self.costs is not None:
                    reason = self.too_costly(trial.settings, self.costs)
                    if reason:
                        trial.status, trial.note = "too_costly", reason
                        log.info("trial %d %s not tried: %s", trial.trial, trial.settings, reason)
                        continue
                cost = self.estimate(trial.settings, self.rungs[rung])
                if self.spent() + cost > allowance:
                    trial.status = "over_budget"
                    trial.note = (f"estimated {cost:.1f}s, {max(0.0, allowance - self.spent()):.1f}s "
                                  f"left of rung {rung}'s share of the budget")
                    log.info("trial %d %s not tried at rung %d: %s", trial.trial, trial.settings,
                             rung, trial.note)
                    continue
            self._run(trial, rung)

    def run(self) -> SearchResult:
        """Fit every rung, choose and mark the winner."""
        entrants = self.trials[:self.planned]
        for rung in range(len(self.rungs)):
            self._rung(rung, entrants)
            ranked = [t for t in entrants if t.status == "ok" and t.rung == rung]
            if rung + 1 == len(self.rungs):
                break
            keep = max(1, math.ceil((len(ranked) - 1) / ETA))  # as the plan promotes
            best = sorted((t for t in ranked if t is not self.trials[0]), key=lambda t: -t.ndcg)[:keep]
            for trial in ranked:
                if trial is not self.trials[0] and trial not in best:
                    trial.status = "stopped"
            entrants = [self.trials[0], *best]
        winner = self._choose(rung)
        winner.winner = True
        log.info("search chose trial %d (%s) of %d candidates in %.1fs (budget %.1fs)",
                 winner.trial, winner.settings, len(self.trials), self.spent(), self.budget_s)
        return SearchResult(winner=winner.settings, trials=self.trials, costs=self.costs,
                            seconds=round(self.spent(), 3),
                            budget_s=round(self.budget_s, 3) if math.isfinite(self.budget_s) else None,
                            rungs=self.rungs, dropped_numeric=self.dropped_numeric)

    def _choose(self, last_rung: int) -> Trial:
        """Best ndcg@k of the last rung whose recall@k is within ``max_regression`` of today's
        settings' (the gate's rule on its primary metric); today's settings when none is."""
        default = self.trials[0]
        finalists = [t for t in self.trials if t.status == "ok" and t.rung == last_rung]
        if default.status != "ok":
            return default  # cannot judge the others against it
        floor = default.recall * (1 - self.max_regression)
        eligible = [t for t in finalists if t.recall >= floor]
        for trial in finalists:
            if trial not in eligible:
                trial.note = (f"recall@{self.k} {trial.recall:.4f} below today's settings' "
                              f"{default.recall:.4f}")
        return max(eligible, key=lambda t: (t.ndcg, t is default))
