"""Pending decisions on the Recommender page: a recommend_train run waiting for a person to approve
or reject an anomalous day (``approve_anomalous_day``, Airflow's human-in-the-loop flow).

Read from Airflow's own metadata database (the page runs in the API server, as Airflow's REST
routes do): the human-in-the-loop details not yet answered whose task has not ended. The answer
itself is given in Airflow (Required Actions), where Airflow checks who may give it.
"""

from __future__ import annotations

from typing import Any

from operators.approval import TASK_ID

DAG_ID = "recommend_train"


def pending(limit: int = 10) -> list[dict[str, Any]]:
    """recommend_train's unanswered decisions, oldest first: run id, subject, asked at."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import State

    with create_session() as session:
        rows = (session.query(TaskInstance.run_id, HITLDetail.subject, HITLDetail.created_at)
                .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
                .filter(TaskInstance.dag_id == DAG_ID, TaskInstance.task_id == TASK_ID,
                        HITLDetail.responded_at.is_(None),
                        TaskInstance.state.notin_([str(s) for s in State.finished]))
                .order_by(HITLDetail.created_at).limit(limit).all())
    return [{"dag_id": DAG_ID, "run_id": run_id, "task_id": TASK_ID, "subject": subject,
             "asked_at": created.isoformat() if created else None}
            for run_id, subject, created in rows]
