"""How many predict shards a run has: the mapped ``predict`` task expands over this task's list.

Dynamic task mapping needs the list at run time (``n_shards`` is a run parameter), so one small
task turns the parameter into ``[0, 1, ..., n_shards - 1]``; each index becomes one task
instance of ``predict`` (one Vertex job, container or process) that scores the users of that
shard (``trainer/data/shards.py``) and stages them. ``publish_predictions`` then swaps the day in.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context

SHARD_ARGUMENTS = ("--shard", "{{ task.shard }}", "--n-shards", "{{ recsys_whole(params.n_shards) }}")
SHARD_LABEL = "shard {{ task.shard }} of {{ params.n_shards | int }}"  # the UI's name for a mapped try


def shard_indexes(params: dict[str, Any] | None) -> list[int]:
    """The shard indexes of a run, from its ``n_shards`` parameter."""
    n_shards = int((params or {}).get("n_shards") or 1)
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return list(range(n_shards))


class PlanShardsOperator(BaseOperator):
    """Returns (as its XCom) the run's shard indexes for ``predict`` to expand over.

    An operator, not ``@task``: the TaskFlow decorator imports the standard provider's Python
    operator and ``packaging`` at parse, about 75 ms of every fresh parse of the DAG file."""

    ui_color = "#ede7f6"

    def execute(self, context: Context) -> list[int]:
        return shard_indexes(context["params"])
