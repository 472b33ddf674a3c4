"""Answering recommend_train's pending decision from outside the run, through Airflow's own REST
API, while ``dag.test()`` waits for it (on 3.3 it would wait for ever; on 3.1 the provider's
trigger polls for the answer until its timeout; tests/dags/conftest.py lets 3.1's in-process
supervisor answer its polls).

:class:`Decider` is a thread that watches the metadata DB for a pending human-in-the-loop
detail of the DAG, keeps what the person was shown (subject, body), tries the answer first as a
read-only user (whose 403 it records) and then answers as the deciding user with
``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails`` on the API
server's app (in-process, same metadata DB): the route that the Required Actions page calls.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any


def token(username: str, role: str) -> dict[str, str]:
    """A bearer token of Airflow's SimpleAuthManager for ``username`` with ``role``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))
    return {"Authorization": f"Bearer {jwt}"}


# Where a task waits for its answer: 3.3 parks it (awaiting_input), 3.1 defers it (and 3.1's
# dag.test() runs the trigger in line with the task queued). Answered before, on 3.3, the answer
# is stored but nothing resumes the task (as for a person: the decision is listed once the task
# waits).
WAITING = ("awaiting_input", "deferred", "queued")


def pending(dag_id: str) -> list[dict[str, Any]]:
    """The DAG's unanswered decisions whose task waits: run id, task id, subject and body."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(HITLDetail, TaskInstance)
                .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
                .filter(TaskInstance.dag_id == dag_id, HITLDetail.responded_at.is_(None),
                        TaskInstance.state.in_(WAITING)).all())
        return [{"run_id": ti.run_id, "task_id": ti.task_id, "subject": d.subject, "body": d.body}
                for d, ti in rows]


class Decider(threading.Thread):
    """Answers the first pending decision of ``dag_id`` with ``option`` (``None``: never answers,
    only records what was asked) as ``user``, with ``reason``."""

    def __init__(self, api: Any, dag_id: str, option: str | None, user: str = "ana",
                 reason: str = "", look: Callable[[dict[str, Any]], Any] | None = None) -> None:
        super().__init__(daemon=True)
        self.api, self.dag_id, self.option, self.user, self.reason = api, dag_id, option, user, reason
        self.look = look  # what the test looks at while the decision waits (kept in .seen)
        self.seen: Any = None
        self.asked: dict[str, Any] | None = None
        self.read_only_status: int | None = None
        self.answer_status: int | None = None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set() and self.asked is None:
                found = pending(self.dag_id)
                if found:
                    self.asked = found[0]
                    if self.look is not None:
                        self.seen = self.look(found[0])
                    if self.option is not None:
                        self._answer(found[0])
                        self._resumed(found[0])
                    return
                time.sleep(0.5)
        except BaseException as exc:  # reported by stop()
            self.error = exc
            if self.asked:
                _fail_waiting_task(self.dag_id, self.asked["run_id"], self.asked["task_id"])

    def _answer(self, decision: dict[str, Any]) -> None:
        path = (f"/api/v2/dags/{self.dag_id}/dagRuns/{urllib.parse.quote(decision['run_id'], safe='')}"
                f"/taskInstances/{decision['task_id']}/-1/hitlDetails")
        body = {"chosen_options": [self.option], "params_input": {"reason": self.reason}}
        self.read_only_status = self.api.patch(path, json=body, headers=token("viewer", "VIEWER")).status_code
        answered = self.api.patch(path, json=body, headers=token(self.user, "USER"))
        self.answer_status = answered.status_code
        assert answered.status_code == 200, answered.text

    def _resumed(self, decision: dict[str, Any], within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if _state(self.dag_id, decision["run_id"], decision["task_id"]) not in WAITING:
                return
            time.sleep(0.5)
        raise AssertionError(f"answered, but {decision['task_id']} still waits after {within_s} s")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error


def _state(dag_id: str, run_id: str, task_id: str) -> str | None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id).one()
        return str(ti.state) if ti.state else None


def _fail_waiting_task(dag_id: str, run_id: str, task_id: str) -> None:
    """End a wait nobody will answer, so that dag.test() returns and the test reports why
    (instead of waiting for ever)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id).one()
        if str(ti.state) in WAITING:
            ti.state = TaskInstanceState.FAILED
