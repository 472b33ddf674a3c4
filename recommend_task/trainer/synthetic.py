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
import pyarrow as pa
import pyarrow.compute as pc

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


def generate(spec: SyntheticSpec) -> pa.Table:
    """Events with the ``events`` table's columns (ids as strings)."""
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
    seconds = int(start.timestamp()) + rng.integers(0, spec.days * 86_400, size=spec.events)
    event_types = rng.choice(3, size=spec.events, p=EVENT_TYPE_P)
    width_u, width_i = len(str(spec.users)), len(str(spec.items))
    # Each id is formatted once and taken per event by Arrow, not formatted per event in Python.
    user_ids = pa.array([f"u{u:0{width_u}d}" for u in range(spec.users)], pa.string())
    item_ids = pa.array([f"i{i:0{width_i}d}" for i in range(spec.items)], pa.string())
    return pa.table({
        "event_id": pc.binary_join_element_wise(
            f"s{spec.seed}-", pc.cast(pa.array(np.arange(spec.events)), pa.string()), ""),
        "user_id": user_ids.take(users),
        "item_id": item_ids.take(items),
        "event_type": pa.array(EVENT_TYPES.astype(object), pa.string()).take(event_types),
        "event_timestamp": pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC")),
        "event_date": pa.array((seconds // 86_400).astype(np.int32), pa.date32()),
    })


def corrupt(events: pa.Table, fraction: float, seed: int) -> pa.Table:
    """Damage ``fraction`` of the rows the way real logs are damaged: a missing user id, a
    missing item id, or a timestamp from outside its partition (clock skew, late replays)."""
    if fraction <= 0:
        return events
    rng = np.random.default_rng(seed + 1)
    bad = np.flatnonzero(rng.random(len(events)) < fraction)
    kind = rng.integers(0, 3, size=bad.size)

    def at(rows: np.ndarray) -> pa.Array:
        mask = np.zeros(len(events), dtype=bool)
        mask[rows] = True
        return pa.array(mask)

    out = events.combine_chunks()
    for name, rows in (("user_id", bad[kind == 0]), ("item_id", bad[kind == 1])):
        column = out[name]
        out = out.set_column(out.schema.get_field_index(name), name,
                             pc.if_else(at(rows), pa.scalar(None, column.type), column))
    timestamps = out["event_timestamp"]
    skewed = pc.subtract(timestamps, pa.scalar(dt.timedelta(days=400), pa.duration("us")))
    return out.set_column(out.schema.get_field_index("event_timestamp"), "event_timestamp",
                          pc.if_else(at(bad[kind == 2]), skewed, timestamps))


ANOMALIES = ("drop-type=TYPE", "bot=SHARE", "renumber-items")


def with_anomaly(events: pa.Table, anomaly: str, day: dt.date, seed: int) -> pa.Table:
    """The events with ``day`` made anomalous the way real logging breaks (for the anomaly
    rules' tests and demos):

    * ``drop-type=TYPE``: the app stopped logging TYPE that day (its events are gone);
    * ``bot=SHARE``: one extra user, ``bot``, makes SHARE of the day's events, on random items;
    * ``renumber-items``: the catalogue was renumbered that day (every item id gets a new prefix).
    """
    kind, _, value = anomaly.partition("=")
    on_day = pc.equal(events["event_date"], pa.scalar(day, pa.date32()))
    if kind == "drop-type" and value:
        return events.filter(pc.invert(pc.and_(on_day, pc.equal(events["event_type"], value))))
    if kind == "renumber-items" and not value:
        renumbered = pc.binary_join_element_wise("v2-", events["item_id"], "")
        return events.set_column(events.schema.get_field_index("item_id"), "item_id",
                                 pc.if_else(on_day, renumbered, events["item_id"]))
    if kind == "bot" and value:
        share = float(value)
        if not 0 < share < 1:
            raise ValueError(f"bot share must be in (0, 1), got {share}")
        today = events.filter(on_day)
        n = round(len(today) * share / (1 - share))
        rng = np.random.default_rng(seed + 2)
        catalogue = pc.unique(today["item_id"])
        items = catalogue.take(pa.array(rng.integers(0, len(catalogue), n)))
        start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())
        seconds = start + rng.integers(0, 86_400, size=n)
        bot = pa.table({
            "event_id": pc.binary_join_element_wise("bot-", pc.cast(pa.array(np.arange(n)), pa.string()), ""),
            "user_id": pa.repeat(pa.scalar("bot"), n), "item_id": items,
            "event_type": pa.repeat(pa.scalar("view"), n),
            "event_timestamp": pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC")),
            "event_date": pa.repeat(pa.scalar(day, pa.date32()), n),
        }, schema=events.schema)
        return pa.concat_tables([events, bot])
    raise ValueError(f"unknown anomaly {anomaly!r}: expected one of {', '.join(ANOMALIES)}")
