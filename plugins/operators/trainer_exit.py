"""The trainer image's exit-code contract (``recommend_task/trainer/outcome.py``), applied the
same way by every launcher: 2 fails the task at once, 75 (transient) and anything else (a
crash) fail the try and let Airflow retry with backoff. The task's error is the trainer's own
``ERROR:`` line, so the Slack alert shows it.

The launchers also hand each step its Airflow attempt (environment variables the trainer puts
in its status record, ``runs/<run_date>/status/<dag_id>.<task_id>[.<map_index>].json``), so a launcher that
cannot see the step's output (Vertex AI) reads that record and refuses one left by another try.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk.exceptions import AirflowException

from operators.artifacts import ArtifactsHook, join

EXIT_PERMANENT = 2
EXIT_TRANSIENT = 75

IMAGE_ENV = "RECSYS_TRAINER_IMAGE"


class TrainerStepRetriable(AirflowException):
    """A transient error or a crash: the try fails, Airflow retries with backoff."""


class TrainerStepFailed(AirflowFailException):
    """A permanent error (exit code 2): the same input fails again, so the task fails now."""


def attempt_env(image: str) -> dict[str, str]:
    """What a step is told about the Airflow attempt running it (templated; see module doc)."""
    return {
        # A mapped task (one shard each) has one record per task instance.
        "RECSYS_STATUS_NAME": "{{ dag.dag_id }}.{{ task.task_id }}"
                              "{% if ti.map_index|int(-1) >= 0 %}.{{ ti.map_index }}{% endif %}",
        "RECSYS_AIRFLOW_RUN_ID": "{{ run_id }}",
        "RECSYS_TRY_NUMBER": "{{ ti.try_number }}",
        IMAGE_ENV: image,
    }


def last_error_line(lines: Iterable[str | bytes]) -> str:
    """The step's own one-line error: its last ``ERROR:`` line, without the prefix."""
    error = ""
    for line in lines:
        text = line.decode(errors="replace") if isinstance(line, bytes) else line
        for part in text.splitlines():
            if part.startswith("ERROR:"):
                error = part.removeprefix("ERROR:").strip()
    return error


def raise_for_exit(step: str, code: int, error: str, *, logs_url: str | None = None) -> NoReturn:
    """Raise the exception that makes Airflow do what exit code ``code`` asks for."""
    message = error or f"trainer.{step} exited with code {code} without an error line"
    where = f"; logs: {logs_url}" if logs_url else ""
    if code == EXIT_PERMANENT:
        raise TrainerStepFailed(f"{message} (exit 2: permanent, not retried{where})")
    kind = "transient" if code == EXIT_TRANSIENT else "crash"
    raise TrainerStepRetriable(f"{message} (exit {code}: {kind}, retried{where})")


def _argument(command: Sequence[str], flag: str) -> str | None:
    args = [str(a) for a in command]
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def status_record_uri(command: Sequence[str], dag_id: str, task_id: str,
                      map_index: int | None = -1) -> str | None:
    """Where the step of ``command`` (as rendered) writes its status record."""
    artifacts, run_date = _argument(command, "--artifacts-uri"), _argument(command, "--run-date")
    if not artifacts or not run_date:
        return None
    name = f"{dag_id}.{task_id}" + (f".{map_index}" if map_index is not None and map_index >= 0 else "")
    return join(artifacts, "runs", run_date, "status", f"{name}.json")


def read_status_record(command: Sequence[str], context: Any, conn_id: str, try_number: int) -> dict | None:
    """The status record of this run's try ``try_number`` of this task, or None (never written:
    the container did not start or was killed, or it belongs to another attempt)."""
    ti = context["ti"]
    uri = status_record_uri(command, ti.dag_id, ti.task_id, getattr(ti, "map_index", -1))
    if uri is None:
        return None
    record = ArtifactsHook(gcp_conn_id=conn_id).read_json(uri)
    if not record or record.get("airflow_run_id") != ti.run_id or record.get("try") != try_number:
        return None
    return record
