"""Slack alerts for the recommendation DAGs, sent through the Slack provider's stock webhook
notifier (slack-sdk underneath) and its Airflow connection.

:class:`RecsysSlackNotifier` wraps the stock notifier for two things it can't do: it must never
fail, block or slow a run (an unconfigured or broken Slack is a logged warning, after a short
timeout and no retries), and success messages carry a run summary (the day's data, evaluation
metrics, rows written, the served model's alerts: :mod:`operators.run_summaries`) from the run's
artifacts (read by :class:`operators.artifacts.ArtifactsHook`), which are not in the template
context; an alert-only notifier sends nothing when its summary is empty. Every value a
template puts into a message is escaped for Slack (:mod:`operators.mrkdwn`): a run id, an image,
an error line or an id from the data is shown as text, never as a ping or a link; only the
notifier's own links and the run summaries, built as markup from escaped parts, are not. Links
come from Airflow's own ``[api] base_url``, as the task instance's ``log_url`` does. The message texts
themselves are ordinary notifier templates. It builds the stock notifier only when it sends:
importing the Slack provider (slack-sdk, aiohttp) costs every fresh parse of a DAG file
0.4-0.8 s, for callbacks that run once per run or failure.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

from airflow.sdk import BaseNotifier

from operators import contract
from operators.artifacts import ArtifactsHook
from operators.config import RecsysConfig
from operators.macros import run_date_for
from operators.mrkdwn import Mrkdwn, escape, link
from operators.redaction import error_line, redact
from operators.run_summaries import SUMMARIES
from operators.ui_links import required_action_url, run_url

_HEAD = "*{{ dag.dag_id }}*"
_RUN = ("run `{{ dag_run.run_id }}` | run date {{ recsys.run_date }} | "
        "logical date {{ dag_run.logical_date or 'none (asset-triggered)' }}"
        "{% if recsys.image %}\nimage `{{ recsys.image }}`{% endif %}")

TASK_FAILED = (":red_circle: Task *{{ ti.task_id }}* of " + _HEAD + " failed "
               "(try {{ ti.try_number }}/{{ ti.max_tries + 1 }}, {{ recsys.duration }})\n"
               + _RUN + "\nError: {{ recsys.error }}\n{{ recsys.link }}")
TASK_RETRY = (":large_orange_circle: Task *{{ ti.task_id }}* of " + _HEAD + " will be retried "
              "(try {{ ti.try_number }}/{{ ti.max_tries + 1 }}, {{ recsys.duration }})\n"
              + _RUN + "\nError: {{ recsys.error }}\n{{ recsys.link }}")
DAG_SUCCEEDED = (":white_check_mark: " + _HEAD + " succeeded in {{ recsys.duration }}\n" + _RUN
                 + "{% if recsys.summary %}\n{{ recsys.summary }}{% endif %}"
                 "\n{{ recsys.link }}")
# recommend_feedback's success: sent only when the served model did worse (an alert, not a failure).
SERVING_ALERT = (":warning: " + _HEAD + ": the served recommendations did worse than they should\n"
                 + _RUN + "\n{{ recsys.summary }}\nLook at the model's evaluation (model_metrics, "
                 "serving_metrics) or roll back: trigger recommend_rollback with an earlier model_id."
                 "\n{{ recsys.link }}")
# approve_anomalous_day, when it starts waiting (the stock HITL notifiers hook); a timeout or a
# rejection is then the task's failure message, naming the rules again.
DECISION_NEEDED = (":raising_hand: " + _HEAD + " needs a decision: the events of {{ recsys.run_date }} "
                   "broke anomaly rules\n" + _RUN + "\n{{ recsys.summary }}\nApprove or reject under "
                   "Browse → Required Actions, or here (nothing is trained until then): {{ recsys.link }}")
DAG_FAILED = (":x: " + _HEAD + " failed after {{ recsys.duration }}"
              "{% if reason %} ({{ reason }}){% endif %}\n" + _RUN
              + "\n{{ recsys.link }}")

_URL = re.compile(r"https?://\S+")
# An anomaly refusal names every broken rule with its figure and limit: keep all of it, but
# bound what an arbitrary exception can put in a message.
_ERROR_CHARS = 800


def _error(exception: BaseException) -> str:
    """The error's last line (a trainer step's ``ERROR:`` line), never naming a credentials file."""
    if isinstance(exception, OSError) and (exception.filename or exception.filename2):
        return error_line(exception)
    lines = str(exception).strip().splitlines() or [type(exception).__name__]
    return redact(lines[-1])[:_ERROR_CHARS]


def _duration(start: dt.datetime | None, end: dt.datetime | None = None) -> str:
    if start is None:
        return "unknown duration"
    seconds = ((end or dt.datetime.now(dt.UTC)) - start).total_seconds()
    if seconds < 0:  # `dags test` starts runs at their (future) logical date
        return "unknown duration"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_started(dag_run: Any) -> dt.datetime | None:
    """When the run really started. ``airflow dags test`` (and ``dag.test()``) give a run its
    logical date as start date, which can be hours off; they run in-process, where the metadata
    DB holds the first task's real start. Runs of the scheduler start after their logical date,
    never on it, so production callbacks never take that branch (nor touch the DB)."""
    start = getattr(dag_run, "start_date", None)
    if start is None or start != getattr(dag_run, "logical_date", None):
        return start
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        first = (session.query(TaskInstance.start_date)
                 .filter(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id,
                         TaskInstance.start_date.isnot(None))
                 .order_by(TaskInstance.start_date).first())
    return first[0] if first else start


class RecsysSlackNotifier(BaseNotifier):
    """The stock Slack webhook notifier, made never to raise, plus ``recsys.*`` template values:
    ``run_date``, ``duration``, ``error``, ``link``, ``image`` (the run's pinned trainer image)
    and (for ``summary="train"|"predict"|"feedback"|"forget"|"decision"``) a ``summary`` of the
    run's results, or of the day to decide on. With ``only_with_summary``, a run whose summary is
    empty sends nothing (an alert-only message)."""

    template_fields = ("text",)

    def __init__(self, *, config: RecsysConfig, level: str, text: str,
                 summary: str | None = None, only_with_summary: bool = False) -> None:
        super().__init__()
        self.text = text
        self.recsys_config = config
        self.slack_webhook_conn_id = config.slack_conn_id
        self.timeout = config.slack_timeout_s
        self.level = level  # "task" or "dag": DAG callbacks may carry a ti too
        self.summary = summary
        self.only_with_summary = only_with_summary

    def notify(self, context: Any) -> None:
        """Send the rendered text with the stock notifier (its hook, connection and payload)."""
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        SlackWebhookNotifier(slack_webhook_conn_id=self.slack_webhook_conn_id, text=self.text,
                             timeout=self.timeout,
                             retry_handlers=[],  # a slow Slack must not hold the task up
                             ).notify(context)

    def __call__(self, *args: Any) -> None:
        # Rendering mutates template fields in place: work on a copy so the notifier object,
        # shared by every task of the DAG, keeps its templates for the next call.
        notifier = copy.copy(self)
        try:
            context = args[0]
            context["recsys"] = notifier._values(context)
            if self.only_with_summary and not context["recsys"]["summary"]:
                self.log.info("nothing to alert on: no Slack message")
                return
            notifier._update_context(context)
            # Our texts need no DAG-level macros (recsys.* is precomputed), and DAG callbacks may
            # get a serialized DAG that cannot build a template environment.
            env = notifier.get_template_env()
            env.finalize = escape  # every {{ value }} is text to Slack, unless built as Mrkdwn
            notifier.render_template_fields(context, jinja_env=env)
            notifier.notify(context)
        except Exception as exc:
            message = _URL.sub("<url>", str(exc))[:300]
            self.log.warning("Slack notification not sent: %s: %s", type(exc).__name__, message)

    def _values(self, context: dict[str, Any]) -> dict[str, Any]:
        dag_run, ti = context["dag_run"], context.get("ti")
        base = run_url(dag_run.dag_id, dag_run.run_id)
        exception = context.get("exception")
        error = _error(exception) if exception else "unknown"
        if self.summary == "decision" and ti is not None:
            url = required_action_url(dag_run.dag_id, dag_run.run_id, ti.task_id)
            duration = _duration(getattr(ti, "start_date", None))
        elif self.level == "task" and ti is not None:
            url = ti.log_url
            duration = _duration(getattr(ti, "start_date", None))
        else:
            url = base
            duration = _duration(run_started(dag_run), dag_run.end_date)
        run_date = run_date_for(dag_run)
        return {"run_date": run_date, "duration": duration, "error": error,
                "link": link(url, "Open in Airflow"),
                "image": self._image(ti, dag_run, run_date),
                "summary": self._summary(run_date) if self.summary else ""}

    def _image(self, ti: Any, dag_run: Any, run_date: str) -> str:
        """The image ``resolve_image`` pinned for this run (its XCom); where a callback cannot read
        XCom, what the run's last step recorded having run."""
        try:
            image = ti.xcom_pull(task_ids="resolve_image", key="return_value") if ti is not None else None
            if image:
                return str(image)
        except Exception as exc:
            self.log.debug("no XCom in this callback: %s", type(exc).__name__)
        last_task = {"train": "promote_model", "predict": "publish_predictions",
                     "feedback": "feedback", "forget": "forget"}.get(self.summary or "")
        if not last_task:
            return ""
        cfg = self.recsys_config
        try:
            name = contract.status_name(dag_run.dag_id, last_task)
            uri = contract.status_record_uri(cfg.artifacts_uri, run_date, name)
            record = self._artifacts().read_json(uri)
        except Exception as exc:
            self.log.warning("run image unavailable: %s", type(exc).__name__)
            return ""
        if record and record.get("airflow_run_id") == dag_run.run_id:
            return record.get("image") or ""
        return ""

    def _artifacts(self) -> ArtifactsHook:
        return ArtifactsHook(gcp_conn_id=self.recsys_config.gcp_conn_id)

    def _summary(self, run_date: str) -> Mrkdwn:
        try:
            run = contract.run_prefix(self.recsys_config.artifacts_uri, run_date)
            return SUMMARIES[self.summary](self._artifacts().read_json, run)
        except Exception as exc:
            self.log.warning("run summary unavailable: %s", type(exc).__name__)
            return Mrkdwn("" if self.only_with_summary else "run summary unavailable")


def task_callbacks(config: RecsysConfig) -> dict[str, Any]:
    """Task-level ``on_failure_callback`` and ``on_retry_callback`` (for default_args)."""
    return {
        "on_failure_callback": RecsysSlackNotifier(config=config, level="task", text=TASK_FAILED),
        "on_retry_callback": RecsysSlackNotifier(config=config, level="task", text=TASK_RETRY),
    }


def decision_notifier(config: RecsysConfig) -> RecsysSlackNotifier:
    """The message that a run waits for a person's decision on an anomalous day, with the rules."""
    return RecsysSlackNotifier(config=config, level="task", text=DECISION_NEEDED, summary="decision")


def dag_callbacks(config: RecsysConfig, summary: str | None) -> dict[str, Any]:
    """DAG-level ``on_success_callback`` (with the run summary; for ``feedback`` the serving
    alert, sent only when there is one) and ``on_failure_callback``."""
    alert_only = summary == "feedback"
    return {
        "on_success_callback": RecsysSlackNotifier(
            config=config, level="dag", text=SERVING_ALERT if alert_only else DAG_SUCCEEDED,
            summary=summary, only_with_summary=alert_only),
        "on_failure_callback": RecsysSlackNotifier(config=config, level="dag", text=DAG_FAILED),
    }
