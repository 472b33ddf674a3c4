"""The status record each step leaves in its run's artifacts: how it ended and why.

``runs/<run_date>/status/<name>.json``, where ``name`` is ``RECSYS_STATUS_NAME`` (the DAGs set
``<dag_id>.<task_id>``) or the step. Launchers that cannot see the step's output (Vertex AI)
read it to apply the exit-code rule of :mod:`trainer.outcome` and to report the step's own
message. The Airflow attempt that ran the step (``RECSYS_AIRFLOW_RUN_ID``, ``RECSYS_TRY_NUMBER``)
and the image (``RECSYS_TRAINER_IMAGE``) come from the environment, so a reader can refuse a
record left by another attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from trainer import artifacts, profile
from trainer.outcome import OUTCOMES

log = logging.getLogger("trainer")


def record_uri(artifacts_uri: str, run_date: dt.date, step: str) -> str:
    name = os.environ.get("RECSYS_STATUS_NAME") or step
    return artifacts.join(artifacts_uri, "runs", run_date.isoformat(), "status", f"{name}.json")


def build(step: str, exit_code: int, error: str, run_date: dt.date | None,
          started_at: dt.datetime, finished_at: dt.datetime) -> dict[str, Any]:
    try_number = os.environ.get("RECSYS_TRY_NUMBER", "")
    return {
        "step": step,
        "exit_code": exit_code,
        "outcome": OUTCOMES.get(exit_code, "crash"),
        "error": error,
        "run_date": run_date.isoformat() if run_date else None,
        "airflow_run_id": os.environ.get("RECSYS_AIRFLOW_RUN_ID") or None,
        "try": int(try_number) if try_number.isdigit() else None,
        "image": os.environ.get("RECSYS_TRAINER_IMAGE") or None,
        "uid": os.getuid(),  # the image's user runs the step (never root)
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "seconds": round((finished_at - started_at).total_seconds(), 3),
        "profile": profile.snapshot(),  # phases, rows in/out, peak RSS (make bench reads these)
    }


def write(artifacts_uri: str | None, run_date: dt.date | None, step: str, record: dict[str, Any],
          project: str | None = None) -> None:
    """Best effort: a record that cannot be written (the store is what failed) is a warning, and
    the exit code still tells the launcher what happened."""
    if not artifacts_uri or run_date is None:
        return
    uri = record_uri(artifacts_uri, run_date, step)
    try:
        artifacts.ArtifactStore(project).write_json(uri, record)
    except Exception as exc:
        log.warning("status record %s not written: %s: %s", uri, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
