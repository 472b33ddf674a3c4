"""recommend_train, recommend_predict for DAY and recommend_feedback for the day after, in a
fresh interpreter: the OpenLineage provider reads its transport once, when its plugin loads, so
a run with lineage on needs an interpreter whose plugins load with it set (the test's own has
them loaded with lineage off, as every other test runs).

``python lineage_run.py PLUGINS TESTS DAY TRAIN_CONF PREDICT_CONF`` prints ``RESULT=`` and a JSON
object mapping each DAG to its run's state and task states.
"""

from __future__ import annotations

import datetime as dt
import json
import sys


def main() -> None:
    plugins, tests, day, train_conf, predict_conf = sys.argv[1:6]
    sys.path[:0] = [tests, plugins]
    import conftest  # the test session's settings (a throwaway Airflow home) and 3.1 fixes
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils import db
    from airflow.utils.session import create_session

    db.resetdb()

    dags = conftest.load_dagbag().dags
    run_date = dt.date.fromisoformat(day)
    logical = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(3), tzinfo=dt.UTC)
    runs = {
        "recommend_train": dags["recommend_train"].test(logical_date=logical,
                                                        run_conf=json.loads(train_conf)),
        "recommend_predict": dags["recommend_predict"].test(logical_date=logical.replace(hour=5),
                                                            run_conf=json.loads(predict_conf)),
        # Its run date is the day after: it measures the day just served.
        "recommend_feedback": dags["recommend_feedback"].test(
            logical_date=logical + dt.timedelta(days=1, minutes=30), run_conf={"lookback_days": 20}),
    }
    result = {}
    with create_session() as session:
        for dag_id, run in runs.items():
            tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id).all()
            result[dag_id] = {"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in tis}}
    print("RESULT=" + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
