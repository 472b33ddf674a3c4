"""``approve_anomalous_day``: a person decides whether recommend_train trains on a day whose
events broke an anomaly rule, in Airflow's own human-in-the-loop flow.

A subclass of the standard provider's ``ApprovalOperator``: the decision is listed under Browse →
Required Actions and on the task, answerable in the UI or through the REST API
(``PATCH …/taskInstances/approve_anomalous_day/-1/hitlDetails``) by a user who may act on the DAG.
On Airflow 3.3 the task waits in ``awaiting_input``; on 3.1 it defers to the provider's trigger.

What it adds to the stock operator, which cannot know the day:

* it waits only when ``check_events`` recorded an anomaly for this run: it skips itself when
  the day passed, or the run was triggered with ``accept_anomalies`` (backfills never reach it:
  their data check fails as before);
* its subject and body name the broken rules and the day's figures, read from the run's
  ``event_stats`` record (escaped: they come from the data);
* reject, or no answer within the response timeout, fails the run naming every broken rule (the
  stock operator says only ``Receive "Reject"``);
* approve returns who, when and why, which ``create_cf_matrices`` records in ``event_stats``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param

from operators import contract
from operators.artifacts import ArtifactsHook

TASK_ID = "approve_anomalous_day"
REASON_LIMIT = 500  # characters: it is recorded in event_stats and reaches the step's environment
# What create_cf_matrices is told of the decision (empty when nobody was asked).
_ANSWER = f"(ti.xcom_pull(task_ids='{TASK_ID}') or {{}})"
ACCEPTANCE_ENV = {
    contract.ACCEPTED_BY_ENV: "{{ " + _ANSWER + ".get('accepted_by', '') }}",
    contract.ACCEPTED_AT_ENV: "{{ " + _ANSWER + ".get('accepted_at', '') }}",
    contract.ACCEPT_REASON_ENV: "{{ " + _ANSWER + ".get('reason', '') }}",
}
ACCEPTED_ARGUMENT = ("{{ (params.accept_anomalies or " + _ANSWER + ".get('accepted_by') is not none)"
                     " | lower }}")
# check_events: a person decides on an anomalous day, except in a backfill (nobody to ask).
DATA_CHECK_MODE = "{{ 'refuse' if dag_run.run_type == 'backfill' else 'decide' }}"
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def markdown_text(value: Any) -> str:
    """``value`` as the Required Actions page shows it: text, never Markdown or HTML."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))


class AnomalousDayApproval(ApprovalOperator):
    """Ask a person whether to train on the run date's anomalous events (see the module)."""

    template_fields = (*ApprovalOperator.template_fields, "run_date")

    def __init__(self, *, artifacts_uri: str, run_date: str, gcp_conn_id: str,
                 response_timeout: timedelta, **kwargs: Any) -> None:
        # The DAG's params reach every task anyway; the form asks only for the reason.
        kwargs.pop("params", None)
        super().__init__(
            subject="Train on an anomalous day?", body=None, response_timeout=response_timeout,
            params={"reason": Param("", type="string", maxLength=REASON_LIMIT, title="Reason",
                                    description="Why the day is right to train on (event_stats)")},
            **kwargs)
        self.artifacts_uri, self.run_date, self.gcp_conn_id = artifacts_uri, run_date, gcp_conn_id

    # What the form asks. On Airflow 3.1 the operator's params also hold the DAG's (3.3 filters
    # them out): the form and the answer's check keep to the reason on both.
    FORM = ("reason",)

    @property
    def serialized_params(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in super().serialized_params.items() if k in self.FORM}

    def validate_params_input(self, params_input: Any) -> None:
        unknown = sorted(set(params_input or {}) - set(self.FORM))
        if unknown:
            raise ValueError(f"params_input {unknown} not asked for: only {', '.join(self.FORM)}")
        if len(str((params_input or {}).get("reason") or "")) > REASON_LIMIT:
            raise ValueError(f"the reason is longer than {REASON_LIMIT} characters")

    def day_record(self) -> dict[str, Any]:
        """The run date's event_stats record (check_events wrote it), empty where there is none."""
        uri = contract.run_record_uri(self.artifacts_uri, self.run_date, contract.EVENT_STATS_RECORD)
        record = ArtifactsHook(gcp_conn_id=self.gcp_conn_id).read_json(uri)
        return record if isinstance(record, dict) else {}

    def broken_rules(self, record: dict[str, Any]) -> str:
        """The record's rule lines, joined for one error line."""
        return "; ".join(map(str, record.get("anomalies") or [])) or "the day's anomalies"

    def execute(self, context: Any) -> Any:
        if context["params"].get("accept_anomalies"):
            raise AirflowSkipException("accept_anomalies is set: no decision needed")
        record = self.day_record()
        if record.get("airflow_run_id") not in (None, context["run_id"]):
            raise AirflowFailException(f"the event_stats record of {self.run_date} is another run's "
                                       f"({record.get('airflow_run_id')}): clear check_events too")
        if record.get("status") != "anomaly":
            raise AirflowSkipException(f"the events of {self.run_date} passed the data check "
                                       f"({record.get('status', 'no record')}): no decision needed")
        anomalies = record.get("anomalies") or []
        self.subject = (f"Train recommend_train on {self.run_date}? Its events broke "
                        f"{len(anomalies)} anomaly rule{'s' if len(anomalies) != 1 else ''}")
        self.body = "\n".join([
            f"The events of **{self.run_date}** broke these rules:", "",
            *(f"- {markdown_text(a)}" for a in anomalies), "", "The day's figures:", "",
            *(f"- {markdown_text(line)}" for line in record.get("summary") or []), "",
            "**Approve** trains and publishes on this day (your name and reason are recorded in "
            "`event_stats`); **Reject**, or no answer in time, fails the run and trains nothing.",
        ])
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        rules = self.broken_rules(self.day_record())
        if "error" in event:
            # 3.1's trigger also ends with an error for an answer whose params fail validation
            if event.get("error_type") == "timeout":
                what = f"no decision within {self.response_timeout or timedelta(0)}"
            else:
                what = f"the answer was refused ({event['error']})"
            raise AirflowFailException(f"{what}: events of {self.run_date} look wrong, "
                                       f"nothing trained: {rules}")
        answer = HITLOperator.execute_complete(self, context, event)
        user = answer.get("responded_by_user") or {}
        who = str(user.get("name") or user.get("id") or "unknown")
        if answer["chosen_options"] != [self.APPROVE]:
            raise AirflowFailException(f"rejected by {who}: events of {self.run_date} look wrong, "
                                       f"nothing trained: {rules}")
        responded = answer.get("responded_at")
        reason = str((answer.get("params_input") or {}).get("reason") or "")
        self.log.info("approved by %s: training on %s (%s)", who, self.run_date, rules)
        return {"accepted_by": who, "reason": reason,
                "accepted_at": responded.isoformat() if hasattr(responded, "isoformat") else str(responded)}
