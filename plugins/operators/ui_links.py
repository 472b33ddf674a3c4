"""Links into the Airflow UI and the Recommender page, under Airflow's own ``[api] base_url``
(the base of the task instances' ``log_url``): Slack messages, the evaluate task's extra link and
the Recommender page all build them here."""

from __future__ import annotations

import urllib.parse
from typing import Any

from airflow.sdk import BaseOperatorLink

RECOMMENDER_PREFIX = "/recommender"  # where recommender_plugin mounts its app


def base_url() -> str:
    """``[api] base_url`` without its trailing slash."""
    try:  # Airflow >= 3.2; 3.1's task SDK has no configuration module of its own
        from airflow.sdk.configuration import conf
    except ImportError:
        from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def run_url(dag_id: str, run_id: str, base: str | None = None) -> str:
    """The run's page in the Airflow UI."""
    return f"{base_url() if base is None else base}/dags/{_quote(dag_id)}/runs/{_quote(run_id)}"


def task_url(dag_id: str, run_id: str, task_id: str, base: str | None = None) -> str:
    """A task instance's page (its log) in the Airflow UI."""
    return f"{run_url(dag_id, run_id, base)}/tasks/{_quote(task_id)}"


def required_action_url(dag_id: str, run_id: str, task_id: str, base: str | None = None) -> str:
    """A task's pending decision (its Required Actions tab). Not the provider's
    ``HITLOperator.generate_link_to_ui``: it drops ``[api] base_url``'s path and leaves the run
    id unquoted."""
    return f"{task_url(dag_id, run_id, task_id, base)}/required_actions"


def recommender_url(path: str = "/", base: str | None = None) -> str:
    """A page of the Recommender plugin, e.g. ``/models/ID``."""
    return f"{base_url() if base is None else base}{RECOMMENDER_PREFIX}{path}"


def report_url(model_id: str, base: str | None = None) -> str:
    """A model's evaluation report, as the Recommender page serves it."""
    return recommender_url(f"/models/{_quote(model_id)}/report", base)


def run_report_url(run_id: str, base: str | None = None) -> str:
    """The evaluation report of the model a recommend_train run evaluated (the page looks the
    model up by the run in ``model_metrics``)."""
    return recommender_url(f"/runs/{_quote(run_id)}/report", base)


class EvaluationReportLink(BaseOperatorLink):
    """The evaluate task's "Evaluation report" link: built on the worker at the end of a try, so
    it names the try's run, whose model the page finds once ``model_metrics`` has its row."""

    name = "Evaluation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return run_report_url(ti_key.run_id)
