"""The promotion rule: beat popularity by a margin, and don't regress against what is live."""

from __future__ import annotations

import dataclasses

PASS, FAIL = "pass", "fail"


@dataclasses.dataclass(frozen=True)
class Verdict:
    verdict: str
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


def decide(model: dict[str, float], popularity: dict[str, float], published: dict[str, float] | None,
           metric: str, min_lift: float, max_regression: float) -> Verdict:
    """``model[metric]`` must exceed ``popularity[metric] * (1 + min_lift)`` and, if a model is
    published, reach at least ``published[metric] * (1 - max_regression)``."""
    reasons, ok = [], True
    m, p = model[metric], popularity[metric]
    needed = p * (1 + min_lift)
    if m > p and m >= needed:
        reasons.append(f"{metric} {m:.4f} beats popularity {p:.4f} by more than {min_lift:.0%}")
    else:
        ok = False
        reasons.append(f"{metric} {m:.4f} does not beat popularity {p:.4f} by {min_lift:.0%} "
                       f"(needs >= {needed:.4f})")
    if published is not None:
        q = published[metric]
        floor = q * (1 - max_regression)
        if m >= floor:
            reasons.append(f"{metric} {m:.4f} within {max_regression:.0%} of published {q:.4f}")
        else:
            ok = False
            reasons.append(f"{metric} {m:.4f} regresses more than {max_regression:.0%} against "
                           f"published {q:.4f} (needs >= {floor:.4f})")
    return Verdict(PASS if ok else FAIL, reasons)
