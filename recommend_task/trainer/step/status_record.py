"""The status record each step leaves in its run's artifacts: how it ended and why.

Where it lives (:func:`trainer.contract.status_record_uri`), what it is named (the variable
:data:`trainer.contract.STATUS_NAME_ENV`: the DAGs set ``<dag_id>.<task_id>``; else the step)
and its fields (:data:`trainer.contract.RECORD_FIELDS`) are the contract with the launchers:
those that cannot see the step's output (Vertex AI) read it to apply the exit-code rule of
:mod:`trainer.step.exit_codes` and to report the step's own message. The Airflow attempt that ran
the step and the image come from the environment (:data:`trainer.contract.AIRFLOW_RUN_ID_ENV`,
:data:`~trainer.contract.TRY_NUMBER_ENV`, :data:`~trainer.contract.IMAGE_ENV`), so a reader can
refuse a record left by another attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from trainer import contract
from trainer.core import profile
from trainer.storage import artifacts

log = logging.getLogger("trainer")


def record_uri(artifacts_uri: str, run_date: dt.date, step: str) -> str:
    """Where ``step``'s record for ``run_date`` goes: under the attempt's status name if the
    launcher gave one, else under the step's own name."""
    name = os.environ.get(contract.STATUS_NAME_ENV) or step
    return contract.status_record_uri(artifacts_uri, run_date.isoformat(), name)


def build(step: str, exit_code: int, error: str, run_date: dt.date | None,
          started_at: dt.datetime, finished_at: dt.datetime) -> dict[str, Any]:
    """The record of one ending of ``step``: exactly the fields of
    :data:`trainer.contract.RECORD_FIELDS`."""
    try_number = os.environ.get(contract.TRY_NUMBER_ENV, "")
    return {
        "step": step,
        "exit_code": exit_code,
        "outcome": contract.outcome(exit_code),
        "error": error,
        "run_date": run_date.isoformat() if run_date else None,
        "airflow_run_id": os.environ.get(contract.AIRFLOW_RUN_ID_ENV) or None,
        "try": int(try_number) if try_number.isdigit() else None,
        "image": os.environ.get(contract.IMAGE_ENV) or None,
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
