"""The run date's event statistics against the 7 days before it: what the anomaly rules judge
(:mod:`trainer.data.anomaly_rules`) and what the ``event_stats`` table keeps, one row per run date.

One query over the partitions of the run date and the 7 days before it, collapsed by grouping
sets into three small results: events per (day, event type, reason a row is invalid), events
per (user, run date or not) and per (item, run date or not). Its own query, not a grouping set
of the window's aggregation: these figures need each event's day and type, which that
aggregation drops, and two more key columns on each of its millions of (user, item) rows cost
more to transfer than this query of 8 of the window's days (docs/benchmarks.md).

Definitions (the day: the run date's partition; the trailing days: the 7 partitions before it
that hold valid events; a valid row as in :mod:`trainer.data.events`):

* events by type: valid events of each known type on the day; each type's trailing median:
  the median of its daily counts over the trailing days (0 on a trailing day without it);
* events per user: median (the mean of the two middle values for an even count), p99 (nearest
  rank: the ``ceil(0.99 n)``-th smallest count) and max over the day's active users;
* top user share: the largest share of the day's events made by one user;
* new user / new item event share: the share of the day's events made by users, or on items,
  with no valid event in the trailing days;
* item drift, type drift: the Jensen-Shannon distance between the day's distribution of events
  over items (over event types) and the trailing days' pooled distribution,
  ``JSD(P, Q) = sqrt(½ KL(P ‖ M) + ½ KL(Q ‖ M))`` with ``M = ½ (P + Q)`` and base-2 logarithms:
  0 for the same distribution, 1 for disjoint ones. None without trailing days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer import contract
from trainer.data.events import COPY_BITS, REASON_BITS, check_params, checked_rows, day_start
from trainer.storage import bq

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.event_stats")

TRAILING_DAYS = contract.DATA_CHECK_TRAILING_DAYS


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors over the same keys."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return float(min(1.0, math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))))


def nearest_rank(sorted_values: np.ndarray, fraction: float) -> int:
    """The nearest-rank percentile of ascending ``sorted_values``: its ``ceil(fraction n)``-th."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return int(sorted_values[rank - 1])


@dataclasses.dataclass(frozen=True)
class DayStats:
    """The run date's figures; the trailing ones are None without a trailing day."""

    run_date: dt.date
    events: int
    events_by_type: dict[str, int]
    trailing_median_by_type: dict[str, float] | None
    trailing_days: int
    trailing_median_events: float | None
    active_users: int
    active_items: int
    events_per_user_median: float | None
    events_per_user_p99: int | None
    events_per_user_max: int | None
    top_user_id: str | None
    top_user_share: float | None
    new_users: int | None
    new_user_event_share: float | None
    new_items: int | None
    new_item_event_share: float | None
    item_drift: float | None
    type_drift: float | None
    rows_read: int
    bad_rows: dict[str, int]
    duplicate_rows: int = 0  # copies of the day's events (not in ``events``, nor bad)
    conflicting_rows: int = 0  # those whose content differs from the event's

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["run_date"] = self.run_date.isoformat()
        return out


def statistics_query(table: str, run_date: dt.date, weights: dict[str, float],
                     valid_from: dt.date, max_id_bytes: int) -> tuple[str, dict[str, object]]:
    """The query of :func:`read_day_stats`; a row is valid with a timestamp in
    ``[valid_from, run_date + 1)`` (the run's window, or the trailing days if they reach further)
    and counts once per event id (:func:`trainer.data.events.checked_rows`)."""
    params = check_params(weights, max_id_bytes)
    rows = checked_rows(table, weights, "event_date BETWEEN @trailing_start AND @day")
    sql = f"""
        SELECT CASE WHEN GROUPING(v_user) = 0 THEN 'user' WHEN GROUPING(v_item) = 0 THEN 'item'
                    ELSE 'day' END AS kind,
               event_date, v_type AS event_type, reasons, v_user AS user_id, v_item AS item_id, on_day,
               COUNT(*) AS events
        FROM (
          SELECT event_date, reasons, IF(reasons = 0, event_type, NULL) AS v_type,
                 IF(reasons = 0, user_id, NULL) AS v_user, IF(reasons = 0, item_id, NULL) AS v_item,
                 event_date = @day AS on_day
          FROM ({rows}))
        GROUP BY GROUPING SETS ((event_date, v_type, reasons), (v_user, on_day), (v_item, on_day))
    """
    params.update({"day": run_date, "trailing_start": run_date - dt.timedelta(days=TRAILING_DAYS),
                   "start_ts": day_start(min(valid_from, run_date - dt.timedelta(days=TRAILING_DAYS))),
                   "end_ts": day_start(run_date + dt.timedelta(days=1))})
    return sql, params


def read_day_stats(client, table: str, run_date: dt.date, weights: dict[str, float],
                   valid_from: dt.date, max_id_bytes: int) -> DayStats:
    """Query and compute the run date's statistics."""
    sql, params = statistics_query(table, run_date, weights, valid_from, max_id_bytes)
    result = bq.to_arrow(client, sql, params)
    return compute(result, run_date, sorted(weights))


def _counts(table: pa.Table, kind: str, key: str, on_day: bool) -> tuple[pa.Array, np.ndarray]:
    """(ids, events) of the ``kind`` rows of the day (``on_day``) or of the trailing days."""
    rows = table.filter(pc.and_(pc.equal(table["kind"], kind),
                                pc.and_(pc.is_valid(table[key]), pc.equal(table["on_day"], on_day))))
    return rows[key].combine_chunks(), rows["events"].to_numpy().astype(np.int64)


def _distribution_drift(day_ids: pa.Array, day_events: np.ndarray, trailing_ids: pa.Array,
                        trailing_events: np.ndarray) -> float:
    """:func:`js_distance` of two (id, events) lists over the union of their ids."""
    keys = pc.unique(pa.concat_arrays([day_ids, trailing_ids]))
    p = np.bincount(pc.index_in(day_ids, value_set=keys).to_numpy(), weights=day_events, minlength=len(keys))
    q = np.bincount(pc.index_in(trailing_ids, value_set=keys).to_numpy(), weights=trailing_events,
                    minlength=len(keys))
    return js_distance(p, q)


def compute(table: pa.Table, run_date: dt.date, known_types: list[str]) -> DayStats:
    """:class:`DayStats` from the rows of :func:`statistics_query`."""
    days = table.filter(pc.equal(table["kind"], "day")).to_pylist()
    valid_by_day: dict[dt.date, dict[str, int]] = {}
    rows_read, bad = 0, {name: 0 for name, _ in REASON_BITS}
    copies = {name: 0 for name, _ in COPY_BITS}
    for row in days:
        if row["event_date"] == run_date:
            rows_read += row["events"]
            for name, bit in REASON_BITS + COPY_BITS:
                if row["reasons"] & bit:
                    (copies if name in copies else bad)[name] += row["events"]
        if row["reasons"] == 0:
            per_type = valid_by_day.setdefault(row["event_date"], {})
            per_type[row["event_type"]] = per_type.get(row["event_type"], 0) + row["events"]
    today = valid_by_day.pop(run_date, {})
    by_type = {t: int(today.get(t, 0)) for t in known_types}
    events = sum(by_type.values())
    trailing = [valid_by_day[d] for d in sorted(valid_by_day)]  # days before, with valid events
    trailing_by_type = ({t: float(np.median([day.get(t, 0) for day in trailing])) for t in known_types}
                        if trailing else None)
    trailing_median = float(np.median([sum(day.values()) for day in trailing])) if trailing else None

    user_ids, user_events = _counts(table, "user", "user_id", True)
    trailing_users, _ = _counts(table, "user", "user_id", False)
    item_ids, item_events = _counts(table, "item", "item_id", True)
    trailing_items, trailing_item_events = _counts(table, "item", "item_id", False)

    per_user = np.sort(user_events)
    top_user_id = top_events = None
    if user_events.size:  # the most events, the smallest id among equals: the same every run
        top_events = int(user_events.max())
        top_user_id = min(user_ids.take(pa.array(np.flatnonzero(user_events == top_events))).to_pylist())
    new_user = new_item = None
    item_drift = type_drift = None
    if trailing:
        new_user = ~pc.is_in(user_ids, value_set=trailing_users).to_numpy(zero_copy_only=False)
        new_item = ~pc.is_in(item_ids, value_set=trailing_items).to_numpy(zero_copy_only=False)
        if events:
            item_drift = _distribution_drift(item_ids, item_events, trailing_items, trailing_item_events)
            pooled = [sum(day.get(t, 0) for day in trailing) for t in known_types]
            type_drift = js_distance(np.array([by_type[t] for t in known_types]), np.array(pooled))

    def share(mask: np.ndarray | None, counts: np.ndarray) -> float | None:
        if mask is None or not events:
            return None
        return float(counts[mask].sum() / events)

    return DayStats(
        run_date=run_date, events=events, events_by_type=by_type,
        trailing_median_by_type=trailing_by_type, trailing_days=len(trailing),
        trailing_median_events=trailing_median, active_users=len(user_ids),
        active_items=len(item_ids),
        events_per_user_median=float(np.median(per_user)) if per_user.size else None,
        events_per_user_p99=nearest_rank(per_user, 0.99) if per_user.size else None,
        events_per_user_max=int(per_user[-1]) if per_user.size else None,
        top_user_id=top_user_id,
        top_user_share=top_events / events if top_events is not None and events else None,
        new_users=int(new_user.sum()) if new_user is not None else None,
        new_user_event_share=share(new_user, user_events),
        new_items=int(new_item.sum()) if new_item is not None else None,
        new_item_event_share=share(new_item, item_events),
        item_drift=item_drift, type_drift=type_drift, rows_read=int(rows_read), bad_rows=bad,
        duplicate_rows=copies["duplicate_rows"], conflicting_rows=copies["conflicting_rows"],
    )


def summary_lines(stats: DayStats) -> list[str]:
    """Two lines for the logs and the Slack summary."""
    types = ", ".join(f"{t} {n:,}" for t, n in stats.events_by_type.items())
    first = (f"events {stats.run_date}: {stats.events:,} ({types}) from {stats.active_users:,} users on "
             f"{stats.active_items:,} items; per user median {_num(stats.events_per_user_median)}, "
             f"p99 {_num(stats.events_per_user_p99)}, max {_num(stats.events_per_user_max)}; "
             f"{sum(stats.bad_rows.values()):,} of {stats.rows_read:,} rows invalid, "
             f"{stats.duplicate_rows:,} duplicate copies ({stats.conflicting_rows:,} conflicting)")
    if not stats.trailing_days:
        return [first, "no trailing day with events: drift and new users/items not computed"]
    second = (f"vs the {stats.trailing_days} days before: new users {_pct(stats.new_user_event_share)} "
              f"and new items {_pct(stats.new_item_event_share)} of events, top user "
              f"{_pct(stats.top_user_share)}, drift (Jensen-Shannon) items {_num(stats.item_drift, 3)} "
              f"types {_num(stats.type_drift, 3)}")
    return [first, second]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"
