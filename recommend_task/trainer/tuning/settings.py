"""The settings the search chooses and the space it draws them from."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from trainer.model import weighting

# The space of the search (issue 41's measurements: the optimum on MovieLens-100k lay at
# regularization 20, alpha 5, 256 factors, log1p weights; today's defaults at the other end).
REGULARIZATION_RANGE = (0.01, 100.0)
ALPHA_RANGE = (1.0, 10.0)
FACTORS_RANGE = (64, 256)
FACTORS_STEP = 32  # factors drawn as multiples of this: BLAS kernels like them


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the search chooses: ALS size, L2 strength, confidence scaling and input weighting."""

    factors: int
    regularization: float
    alpha: float
    weighting: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        return cls(factors=int(data["factors"]), regularization=float(data["regularization"]),
                   alpha=float(data["alpha"]), weighting=str(data.get("weighting") or weighting.RAW))

    def fixing(self, fixed: dict[str, Any]) -> Settings:
        """These settings with the dimensions given in ``fixed`` (non-None values) replaced."""
        return dataclasses.replace(self, **{k: v for k, v in fixed.items() if v is not None})

    def __str__(self) -> str:
        return (f"factors={self.factors} regularization={self.regularization:g} "
                f"alpha={self.alpha:g} weighting={self.weighting}")


# Today's settings: always the first candidate, and what a run without a search uses.
DEFAULTS = Settings(factors=64, regularization=0.05, alpha=2.0, weighting=weighting.RAW)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    value = float(np.exp(rng.uniform(math.log(low), math.log(high))))
    return float(f"{value:.3g}")  # readable in trials.json and Slack; the optimum is not that sharp


def sample(rng: np.random.Generator) -> Settings:
    """One point of the space: log-uniform regularization, alpha and factors, either weighting."""
    factors = _log_uniform(rng, *FACTORS_RANGE)
    return Settings(
        factors=int(min(FACTORS_RANGE[1],
                        max(FACTORS_RANGE[0], round(factors / FACTORS_STEP) * FACTORS_STEP))),
        regularization=_log_uniform(rng, *REGULARIZATION_RANGE),
        alpha=_log_uniform(rng, *ALPHA_RANGE),
        weighting=weighting.WEIGHTINGS[int(rng.integers(len(weighting.WEIGHTINGS)))],
    )


def candidates(count: int, seed: int, fixed: dict[str, Any]) -> list[Settings]:
    """``count`` distinct candidates, today's settings first; a value in ``fixed`` (a param the
    run gave) holds that dimension in every one of them."""
    rng = np.random.default_rng(seed)
    out = [DEFAULTS.fixing(fixed)]
    free = [name for name in Settings.__dataclass_fields__ if fixed.get(name) is None]
    for _ in range(count * 20):  # a space fixed in every dimension has one point
        if len(out) >= count or not free:
            break
        candidate = sample(rng).fixing(fixed)
        if candidate not in out:
            out.append(candidate)
    return out
