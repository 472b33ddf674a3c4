"""Template macros the DAGs register (``user_defined_macros``), also callable from Python.

Which day of events a run is about: the last complete UTC day before it was scheduled. The
run at 2026-11-30 03:00 UTC (or a backfill of logical date 2026-11-30) works on the events of
2026-11-29. Asset-triggered runs have no logical date in Airflow 3, so their ``run_after`` is
used instead. DAGs pass ``RUN_DATE`` to the trainer; callbacks call :func:`run_date_for`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

RUN_DATE = "{{ recsys_run_date(dag_run) }}"


def run_date_for(dag_run: Any) -> str:
    """``YYYY-MM-DD`` of the day before the run's logical date (or ``run_after``), in UTC."""
    when = getattr(dag_run, "logical_date", None) or dag_run.run_after
    return (when.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def recsys_label(value: Any) -> str:
    """A Vertex AI label value: lowercase letters, digits, ``_`` and ``-``, at most 63 chars."""
    return re.sub(r"[^a-z0-9_-]+", "-", str(value).lower()).strip("-")[:63]


def recsys_whole(value: Any) -> Any:
    """An integer param as a template renders it: a whole-number float as an int (JSON Schema's
    integer admits 64.0, from a REST client's JSON, which would render "64.0" and a step refuse
    it); any other value as it is, one argument for the step to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def recsys_optional(value: Any) -> Any:
    """A nullable param as an ``--flag=VALUE`` argument: empty for null (the step then leaves
    the value to its own default or search), else the value."""
    return "" if value is None else value


MACROS = {"recsys_run_date": run_date_for, "recsys_label": recsys_label, "recsys_whole": recsys_whole,
          "recsys_optional": recsys_optional}
