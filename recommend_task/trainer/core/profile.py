"""What a step measures about itself: seconds per phase, rows in and out, peak memory.

Phases are the split every benchmark reports (check: the input's statistics and rules, then
read, build, fit, score, write); the figures go
into the step's log and its status record (:mod:`trainer.step.status_record`), so ``make bench`` and an
operator read the same numbers from a real run.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("trainer")

PHASES = ("check", "read", "build", "fit", "score", "write")

_phases: dict[str, float] = {}
_counts: dict[str, int] = {}


@contextlib.contextmanager
def phase(kind: str, what: str) -> Iterator[None]:
    """Time a block, log it as ``what``, and add it to phase ``kind`` (one of :data:`PHASES`)."""
    if kind not in PHASES:
        raise ValueError(f"unknown phase {kind!r}")
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    _phases[kind] = _phases.get(kind, 0.0) + seconds
    log.info("%s took %.2fs", what, seconds)


def count(name: str, value: int) -> None:
    """Add to a counter such as ``rows_in`` or ``rows_out``."""
    _counts[name] = _counts.get(name, 0) + int(value)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far. Linux's ``VmHWM`` where there is one:
    ``ru_maxrss`` survives exec, so a step started by a big process (Airflow's task runner forks
    it) would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset() -> None:
    """Start counting afresh (a step run in-process after another, as the tests do)."""
    _phases.clear()
    _counts.clear()


def snapshot() -> dict[str, Any]:
    return {"phases": {k: round(v, 3) for k, v in _phases.items()}, "counts": dict(_counts),
            "peak_rss_mib": round(peak_rss_mib(), 1)}
