"""Synthetic learning-app events with planted structure, for demos, tests and benchmarks.

Users belong to taste clusters; every item belongs to one topic; a user mostly picks items
of their cluster's topic (``affinity``), otherwise anything, and within either choice items
follow a power-law popularity. A collaborative-filtering model can learn the clusters, so it
should clearly beat a popularity ranking, which cannot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

EVENT_TYPES = np.array(["view", "start", "complete"])
EVENT_TYPE_P = np.array([0.6, 0.25, 0.15])


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    users: int = 2000
    items: int = 300
    events: int = 60_000
    days: int = 30
    end_date: dt.date = dt.date(2026, 11, 29)
    clusters: int = 10
    affinity: float = 0.85
    popularity_exponent: float = 0.9
    seed: int = 42


def generate(spec: SyntheticSpec) -> pd.DataFrame:
    """Events as a frame with the ``events`` table's columns (ids as strings)."""
    rng = np.random.default_rng(spec.seed)
    # Power-law popularity over a random permutation so popularity and topic are independent.
    popularity = 1.0 / np.arange(1, spec.items + 1) ** spec.popularity_exponent
    popularity = popularity[rng.permutation(spec.items)]
    item_topic = rng.integers(0, spec.clusters, size=spec.items)
    user_cluster = rng.integers(0, spec.clusters, size=spec.users)
    activity = rng.lognormal(mean=0.0, sigma=0.8, size=spec.users)

    users = rng.choice(spec.users, size=spec.events, p=activity / activity.sum())
    on_topic = rng.random(spec.events) < spec.affinity
    items = np.empty(spec.events, dtype=np.int64)
    off = ~on_topic
    items[off] = rng.choice(spec.items, size=int(off.sum()), p=popularity / popularity.sum())
    for cluster in range(spec.clusters):
        mask = on_topic & (user_cluster[users] == cluster)
        topic_items = np.flatnonzero(item_topic == cluster)
        if topic_items.size == 0:  # a topic with no items: fall back to global popularity
            topic_items = np.arange(spec.items)
        p = popularity[topic_items] / popularity[topic_items].sum()
        items[mask] = rng.choice(topic_items, size=int(mask.sum()), p=p)

    start = dt.datetime.combine(spec.end_date - dt.timedelta(days=spec.days - 1), dt.time(),
                                tzinfo=dt.UTC)
    offsets = rng.integers(0, spec.days * 86_400, size=spec.events)
    timestamps = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    width_u, width_i = len(str(spec.users)), len(str(spec.items))
    return pd.DataFrame({
        "event_id": [f"s{spec.seed}-{i}" for i in range(spec.events)],
        "user_id": pd.Series(users).map(lambda u: f"u{u:0{width_u}d}").astype(object),
        "item_id": pd.Series(items).map(lambda i: f"i{i:0{width_i}d}").astype(object),
        "event_type": EVENT_TYPES[rng.choice(3, size=spec.events, p=EVENT_TYPE_P)].astype(object),
        "event_timestamp": timestamps,
        "event_date": timestamps.date,
    })


def corrupt(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Damage ``fraction`` of the rows the way real logs are damaged: a missing user id, a
    missing item id, or a timestamp from outside its partition (clock skew, late replays)."""
    if fraction <= 0:
        return frame
    rng = np.random.default_rng(seed + 1)
    out = frame.copy()
    bad = np.flatnonzero(rng.random(len(out)) < fraction)
    kind = rng.integers(0, 3, size=bad.size)
    out.loc[out.index[bad[kind == 0]], "user_id"] = None
    out.loc[out.index[bad[kind == 1]], "item_id"] = None
    skewed = out.index[bad[kind == 2]]
    out.loc[skewed, "event_timestamp"] = out.loc[skewed, "event_timestamp"] - pd.Timedelta(days=400)
    return out
