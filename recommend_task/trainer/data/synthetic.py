"""Synthetic learning-app events with planted structure, for demos, tests and benchmarks.

Users belong to taste clusters; every item belongs to one topic; a user mostly picks items
of their cluster's topic (``affinity``), otherwise anything, and within either choice items
follow a power-law popularity. A collaborative-filtering model can learn the clusters, so it
should clearly beat a popularity ranking, which cannot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator

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

    @property
    def id_prefix(self) -> str:
        """What every event id of this spec starts with: its seed and a digest of the whole spec,
        so that seeding other days (an overlapping range, a later end date) with the same seed
        never writes an id that events left from an earlier seeding already have."""
        digest = hashlib.sha256(repr(dataclasses.astuple(self)).encode()).hexdigest()[:12]
        return f"s{self.seed}-{digest}-"


# Events generated at a time by generate_chunks: about 0.6 GB of columns and scratch arrays.
CHUNK_EVENTS = 5_000_000


@dataclasses.dataclass(frozen=True)
class _World:
    """What every event is drawn from: item popularity and topics, user clusters and activity."""

    popularity: np.ndarray
    item_topic: np.ndarray
    user_cluster: np.ndarray
    activity: np.ndarray
    user_ids: pa.Array
    item_ids: pa.Array


def _world(spec: SyntheticSpec, rng: np.random.Generator) -> _World:
    # Power-law popularity over a random permutation so popularity and topic are independent.
    popularity = 1.0 / np.arange(1, spec.items + 1) ** spec.popularity_exponent
    popularity = popularity[rng.permutation(spec.items)]
    item_topic = rng.integers(0, spec.clusters, size=spec.items)
    user_cluster = rng.integers(0, spec.clusters, size=spec.users)
    activity = rng.lognormal(mean=0.0, sigma=0.8, size=spec.users)
    width_u, width_i = len(str(spec.users)), len(str(spec.items))
    # Each id is formatted once and taken per event by Arrow, not formatted per event in Python.
    return _World(popularity, item_topic, user_cluster, activity,
                  pa.array([f"u{u:0{width_u}d}" for u in range(spec.users)], pa.string()),
                  pa.array([f"i{i:0{width_i}d}" for i in range(spec.items)], pa.string()))


def _events(spec: SyntheticSpec, world: _World, rng: np.random.Generator, n: int, first_id: int) -> pa.Table:
    """``n`` events drawn from ``world``, numbered from ``first_id``."""
    users = rng.choice(spec.users, size=n, p=world.activity / world.activity.sum())
    on_topic = rng.random(n) < spec.affinity
    items = np.empty(n, dtype=np.int64)
    off = ~on_topic
    popularity = world.popularity
    items[off] = rng.choice(spec.items, size=int(off.sum()), p=popularity / popularity.sum())
    for cluster in range(spec.clusters):
        mask = on_topic & (world.user_cluster[users] == cluster)
        topic_items = np.flatnonzero(world.item_topic == cluster)
        if topic_items.size == 0:  # a topic with no items: fall back to global popularity
            topic_items = np.arange(spec.items)
        p = popularity[topic_items] / popularity[topic_items].sum()
        items[mask] = rng.choice(topic_items, size=int(mask.sum()), p=p)

    start = dt.datetime.combine(spec.end_date - dt.timedelta(days=spec.days - 1), dt.time(),
                                tzinfo=dt.UTC)
    seconds = int(start.timestamp()) + rng.integers(0, spec.days * 86_400, size=n)
    event_types = rng.choice(3, size=n, p=EVENT_TYPE_P)
    return pa.table({
        "event_id": pc.binary_join_element_wise(
            spec.id_prefix, pc.cast(pa.array(np.arange(first_id, first_id + n)), pa.string()), ""),
        "user_id": world.user_ids.take(users),
        "item_id": world.item_ids.take(items),
        "event_type": pa.array(EVENT_TYPES.astype(object), pa.string()).take(event_types),
        "event_timestamp": pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC")),
        "event_date": pa.array((seconds // 86_400).astype(np.int32), pa.date32()),
    })


def generate(spec: SyntheticSpec) -> pa.Table:
    """Events with the ``events`` table's columns (ids as strings), all in memory."""
    rng = np.random.default_rng(spec.seed)
    world = _world(spec, rng)
    return _events(spec, world, rng, spec.events, 0)


def generate_chunks(spec: SyntheticSpec, chunk_events: int | None = None) -> Iterator[pa.Table]:
    """The same kind of events in tables of at most ``chunk_events`` rows, so that memory does
    not grow with ``spec.events``. A spec that fits in one chunk gives exactly :func:`generate`'s
    table; beyond that chunk k draws from its own stream (seed, k) of the same world.
    ``chunk_events`` defaults to :data:`CHUNK_EVENTS`."""
    chunk_events = chunk_events or CHUNK_EVENTS
    if spec.events <= chunk_events:
        yield generate(spec)
        return
    world = _world(spec, np.random.default_rng(spec.seed))
    for k, first in enumerate(range(0, spec.events, chunk_events)):
        yield _events(spec, world, np.random.default_rng([spec.seed, k]),
                      min(chunk_events, spec.events - first), first)


def _stream(seed: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng(seed if chunk == 0 else [seed, chunk])


def corrupt(events: pa.Table, fraction: float, seed: int, chunk: int = 0) -> pa.Table:
    """Damage ``fraction`` of the rows the way real logs are damaged: a missing user id, a
    missing item id, or a timestamp from outside its partition (clock skew, late replays).
    ``chunk``: which of :func:`generate_chunks`' tables ``events`` is (each gets its own draws)."""
    if fraction <= 0:
        return events
    rng = _stream(seed + 1, chunk)
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


def with_anomaly(events: pa.Table, anomaly: str, day: dt.date, seed: int, chunk: int = 0) -> pa.Table:
    """The events with ``day`` made anomalous the way real logging breaks (for the anomaly
    rules' tests and demos):

    * ``drop-type=TYPE``: the app stopped logging TYPE that day (its events are gone);
    * ``bot=SHARE``: one extra user, ``bot``, makes SHARE of the day's events, on random items;
    * ``renumber-items``: the catalogue was renumbered that day (every item id gets a new prefix).

    Applied to each of :func:`generate_chunks`' tables (``chunk``), the whole is anomalous the same
    way: the bot's share holds in each chunk's part of the day.
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
        rng = _stream(seed + 2, chunk)
        catalogue = pc.unique(today["item_id"])
        items = catalogue.take(pa.array(rng.integers(0, len(catalogue), n)))
        start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())
        seconds = start + rng.integers(0, 86_400, size=n)
        bot = pa.table({
            "event_id": pc.binary_join_element_wise(f"bot-{day:%Y%m%d}-{seed}-{chunk}-",
                                                    pc.cast(pa.array(np.arange(n)), pa.string()), ""),
            "user_id": pa.repeat(pa.scalar("bot"), n), "item_id": items,
            "event_type": pa.repeat(pa.scalar("view"), n),
            "event_timestamp": pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC")),
            "event_date": pa.repeat(pa.scalar(day, pa.date32()), n),
        }, schema=events.schema)
        return pa.concat_tables([events, bot])
    raise ValueError(f"unknown anomaly {anomaly!r}: expected one of {', '.join(ANOMALIES)}")
