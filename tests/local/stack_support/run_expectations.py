"""What ``recommendations`` must hold, derived from the DAG runs that actually exist.

Which runs exist depends on the wall clock: unpausing ``recommend_predict`` creates a run for the
latest 05:00 UTC at once (before 05:00 that is yesterday's, writing the day before the seeded
one), and another run appears at every 05:00 while the DAG is unpaused. A test that assumes
which days were written therefore passes at some hours and fails at others. Tests read the runs
back (REST API) and derive the expected days from them with these functions instead.

Stdlib only, plus the DAGs' own run-date rule (``plugins/operators/macros.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins"))
from operators.macros import run_date_for  # the rule the DAGs render

DEFAULT_N = 10  # the n_recommendations param's default, also what `make up` seeds with
# Task instance states in which a predict may still write (or is about to).
ACTIVE = {"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "restarting", "deferred"}


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclasses.dataclass(frozen=True)
class Write:
    """One successful ``predict``: the day it replaced and how many items per user it wrote."""

    run_id: str
    run_date: dt.date
    n: int
    finished: dt.datetime


def writes(runs: Iterable[Mapping[str, Any]], predict_tis: Iterable[Mapping[str, Any]],
           default_n: int = DEFAULT_N) -> list[Write]:
    """The writes of every successful predict task instance, oldest first.

    ``runs`` and ``predict_tis`` are REST API objects (``dag_run_id``, ``logical_date``,
    ``run_after``, ``conf``; ``state``, ``end_date``)."""
    by_id = {run["dag_run_id"]: run for run in runs}
    out = []
    for ti in predict_tis:
        if ti["state"] != "success":
            continue
        run = by_id[ti["dag_run_id"]]
        day = dt.date.fromisoformat(run_date_for(SimpleNamespace(
            logical_date=_when(run.get("logical_date")), run_after=_when(run["run_after"]))))
        n = int((run.get("conf") or {}).get("n_recommendations") or default_n)
        out.append(Write(run["dag_run_id"], day, n, _when(ti["end_date"])))
    return sorted(out, key=lambda w: w.finished)


def items_per_user(seeded: Mapping[dt.date, int], done: Iterable[Write]) -> dict[dt.date, int]:
    """run date -> items per user that ``recommendations`` must hold: what was seeded, then each
    write replacing its whole day, the last one winning."""
    days = dict(seeded)
    for write in sorted(done, key=lambda w: w.finished):
        days[write.run_date] = write.n
    return days


def still_writing(predict_tis: Iterable[Mapping[str, Any]]) -> list[str]:
    """Runs whose predict may still change ``recommendations``."""
    return [ti["dag_run_id"] for ti in predict_tis if ti["state"] in ACTIVE]
