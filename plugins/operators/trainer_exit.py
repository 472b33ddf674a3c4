"""The trainer image's exit-code contract (:mod:`operators.contract`), applied the same way by
every launcher: 2 fails the task at once, 75 (transient) and anything else (a crash) fail the try
and let Airflow retry with backoff. The task's error is the trainer's own ``ERROR:`` line, so the
Slack alert shows it.

A launcher that cannot see the step's output (Vertex AI) reads the step's status record instead
(:func:`read_status_record`), refusing one left by another try.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk.exceptions import AirflowException

from operators import contract
from operators.artifacts import ArtifactsHook


class TrainerStepRetriable(AirflowException):
    """A transient error or a crash: the try fails, Airflow retries with backoff."""


class TrainerStepFailed(AirflowFailException):
    """A permanent error (exit code 2): the same input fails again, so the task fails now."""


def last_error_line(lines: Iterable[str | bytes]) -> str:
    """The step's own one-line error: its last ``ERROR:`` line, without the prefix."""
    error = ""
    for line in lines:
        text = line.decode(errors="replace") if isinstance(line, bytes) else line
        for part in text.splitlines():
            if part.startswith(contract.ERROR_PREFIX):
                error = part.removeprefix(contract.ERROR_PREFIX).strip()
    return error


def raise_for_exit(step: str, code: int, error: str, *, logs_url: str | None = None) -> NoReturn:
    """Raise the exception that makes Airflow do what exit code ``code`` asks for."""
    message = error or f"trainer.{step} exited with code {code} without an error line"
    where = f"; logs: {logs_url}" if logs_url else ""
    if code == contract.EXIT_PERMANENT:
        raise TrainerStepFailed(f"{message} (exit 2: permanent, not retried{where})")
    kind = "transient" if code == contract.EXIT_TRANSIENT else "crash"
    raise TrainerStepRetriable(f"{message} (exit {code}: {kind}, retried{where})")


def read_status_record(artifacts_uri: str, run_date: str, ti: Any, conn_id: str,
                       try_number: int) -> dict | None:
    """The status record of try ``try_number`` of task instance ``ti`` in this run, or None
    (never written: the step did not start or was killed; or it belongs to another attempt)."""
    if not artifacts_uri or not run_date:
        return None
    name = contract.status_name(ti.dag_id, ti.task_id, getattr(ti, "map_index", -1))
    record = ArtifactsHook(gcp_conn_id=conn_id).read_json(
        contract.status_record_uri(artifacts_uri, run_date, name))
    return record if contract.is_record_of(record, ti.run_id, try_number) else None
