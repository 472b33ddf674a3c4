"""How many predict shards a run has: the mapped ``predict`` task expands over this task's list.

Dynamic task mapping needs the list at run time (``n_shards`` is a run parameter), so one small
task turns the parameter into ``[0, 1, ..., n_shards - 1]``; each index becomes one task
instance of ``predict`` (one Vertex job, container or process) that scores the users of that
shard (``trainer/shards.py``) and stages them. ``publish_predictions`` then swaps the day in.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

SHARD_ARGUMENTS = ("--shard", "{{ task.shard }}", "--n-shards", "{{ params.n_shards }}")
SHARD_LABEL = "shard {{ task.shard }} of {{ params.n_shards }}"  # the UI's name for a mapped try


@task(task_id="plan_shards")
def plan_shards(params: dict[str, Any] | None = None) -> list[int]:
    """The shard indexes of this run, from its ``n_shards`` parameter."""
    n_shards = int((params or {}).get("n_shards") or 1)
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return list(range(n_shards))
