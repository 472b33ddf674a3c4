"""What the sharded-prediction tests share across runtimes: a fault injected into one predict
shard, and the day's rows read back.

FAULT INJECTION: a wrapper around the trainer's interpreter (the local runtime's
``RECSYS_TRAINER_PYTHON``, or the interpreter the fake Vertex and Docker launchers run the
container's command with) that makes one shard fail the way a real one can: ``fail`` exits 2
before the step runs (a permanent error), ``crash-after`` runs the step, which stages its part,
then exits 1 on the first try (a machine lost after the work was done: Airflow retries the shard,
which stages its part again). Everything else is the real step.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import stat
from pathlib import Path

WRAPPER = """#!/bin/sh
# FAULT INJECTION (tests/dags/support/sharded_runs.py): {mode} predict shard {shard}.
shard=""; prev=""
for arg in "$@"; do [ "$prev" = "--shard" ] && shard=$arg; prev=$arg; done
if [ "$shard" = "{shard}" ] && [ "{mode}" = fail ]; then
  exec "{python}" "$@" --n-recommendations 0
fi
"{python}" "$@"; rc=$?
if [ $rc = 0 ] && [ "$shard" = "{shard}" ] && [ "{mode}" = crash-after ] && [ "$RECSYS_TRY_NUMBER" = 1 ]; then
  echo "injected crash of shard {shard} after its step succeeded"; exit 1
fi
exit $rc
"""


def faulty_python(directory: Path, python: str, mode: str, shard: int) -> str:
    """An interpreter path that runs ``python`` with the fault ``mode`` on predict shard ``shard``."""
    path = directory / f"python-{mode}-{shard}"
    path.write_text(WRAPPER.format(mode=mode, shard=shard, python=python))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def day_rows(project: str, dataset: str, day: dt.date) -> dict[tuple, tuple[float, dt.datetime]]:
    """(user, rank, item, model) -> (score, generated_at) of one day of recommendations."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})
    return {(r["user_id"], r["rank"], r["item_id"], r["model_id"]): (r["score"], r["generated_at"])
            for r in client.query(f"""SELECT user_id, rank, item_id, model_id, score, generated_at
                FROM `{project}.{dataset}.recommendations` WHERE run_date = '{day}'""").result()}


def same_recommendations(rows: dict, expected: dict) -> bool:
    """Same users, ranks, items and model; scores equal to float32 precision (implicit's batched
    user solve rounds differently among other users); generated_at ignored."""
    return rows.keys() == expected.keys() and all(
        math.isclose(rows[k][0], expected[k][0], rel_tol=1e-5, abs_tol=1e-6) for k in rows)


def shard_tries(run) -> dict[int, tuple[str, int]]:
    """map index -> (state, try number) of the run's predict shards."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.map_index: (str(ti.state), ti.try_number) for ti in session.query(TaskInstance)
                .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="predict")}


def check_sharded_predict(predict, unsharded, use_python, tmp_path: Path, python: str, project: str,
                          dataset: str, day: dt.date) -> None:
    """The sharding contract through real Airflow runs of recommend_predict for ``day``:

    * 3 shards publish exactly the rows one unsharded process publishes, each shard its own task
      instance; shard 1 crashing after staging its part is retried, and the re-run shard
      replaces its part (no duplicate rows);
    * a failed shard publishes nothing: the day keeps the rows it had, to the timestamp.

    ``predict(n_shards)`` runs the DAG for ``day``; ``unsharded()`` runs ``predict_task`` for
    ``day`` with the same arguments and no shards (the reference); ``use_python(path)`` makes the
    runtime's launcher run the trainer with the interpreter at ``path``."""
    unsharded()
    expected = day_rows(project, dataset, day)
    assert expected

    use_python(faulty_python(tmp_path, python, "crash-after", 1))
    three = predict(3)
    assert str(three.state) == "success", shard_tries(three)
    assert shard_tries(three) == {0: ("success", 1), 1: ("success", 2), 2: ("success", 1)}
    published = day_rows(project, dataset, day)
    assert same_recommendations(published, expected)
    assert len({generated for _, generated in published.values()}) == 3  # really the 3 shards' rows

    use_python(faulty_python(tmp_path, python, "fail", 2))
    failed = predict(3)
    assert str(failed.state) == "failed"
    tries = shard_tries(failed)
    assert tries[2] == ("failed", 1), tries  # exit 2: permanent, not retried
    assert day_rows(project, dataset, day) == published  # nothing published, not even shards 0 and 1
