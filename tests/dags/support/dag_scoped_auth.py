"""A test-only auth manager that knows DAG ids, for the Recommender page's permission tests.

Airflow's SimpleAuthManager grants by role alone (a VIEWER reads every DAG); Cloud Composer's
auth manager (Airflow's FAB roles) can grant one DAG and not another. This subclass keeps
SimpleAuthManager's tokens and roles and, for the user ``train-only``, allows nothing but reading
``recommend_train``. Selected with ``[core] auth_manager = dag_scoped_auth.DagScopedAuthManager``
(tests/dags is on sys.path in the tests); never deployed.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

TRAIN_ONLY = "train-only"
READABLE_BY_TRAIN_ONLY = "recommend_train"


class DagScopedAuthManager(SimpleAuthManager):
    """SimpleAuthManager, except that user ``train-only`` may read recommend_train only."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.get_name() == TRAIN_ONLY:
            return (method == "GET" and details is not None and details.id == READABLE_BY_TRAIN_ONLY
                    and super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                                  details=details))
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                         details=details)
