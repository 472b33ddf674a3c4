"""What a served day's recommendations did on the next day, next to what popularity would have
served: hit rate and recall, computed in BigQuery by one query, whose result is one row.

Served day D: the ``recommendations`` rows with ``run_date`` D (what the web app served on D + 1).
Outcome: the valid events of day D + 1. History: the valid events of the ``lookback_days`` ending
at D, the window predict filtered seen items by. For each served user:

* relevant items R: items of their D + 1 events they have no event with in the history (items
  already seen are excluded on both sides, as evaluation does);
* active: served users with at least one relevant item (recall needs one); *returning*: served
  users with any D + 1 event;
* hit rate@k = share of active users with a served item in R; recall@k = mean |served ∩ R| / |R|;
* the popularity counterfactual: for each active user, the k items with the most distinct users
  in the history (ties by item id, as evaluation's baseline) that they have not seen. Computed,
  not served: a user's seen items ranked r_1 < r_2 < ... by popularity, ``j`` of them satisfy
  ``r_i - i < k`` (fewer than k unseen items before them), and their k unseen items are exactly
  the unseen items of rank <= k + j, so a relevant item of rank p is a hit when p <= k + j.

k is the served day's number of recommendations per user (its largest rank).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from trainer.data.events import DEFAULT_MAX_ID_BYTES, check_params, checked_rows, day_start
from trainer.storage import bq


@dataclasses.dataclass(frozen=True)
class ServedDay:
    """The query's counts for one served day."""

    served_date: dt.date
    k: int
    model_ids: tuple[str, ...]
    users_served: int
    users_returning: int
    users_active: int
    model_hit_users: int
    model_recall_sum: float
    popularity_hit_users: int
    popularity_recall_sum: float

    def _mean(self, total: float) -> float | None:
        return total / self.users_active if self.users_active else None

    @property
    def model_hit_rate(self) -> float | None:
        return self._mean(self.model_hit_users)

    @property
    def model_recall(self) -> float | None:
        return self._mean(self.model_recall_sum)

    @property
    def popularity_hit_rate(self) -> float | None:
        return self._mean(self.popularity_hit_users)

    @property
    def popularity_recall(self) -> float | None:
        return self._mean(self.popularity_recall_sum)


# Seen items of the popularity ranking's head beyond k that are looked at for every active user;
# a user who has seen more of them than this reaches past the head and is ranked in full.
HEAD = 64


def feedback_query(recommendations: str, events: str, served: dt.date, lookback_days: int,
                   weights: dict[str, float], head: int = HEAD,
                   max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> tuple[str, dict[str, object]]:
    """The SQL of :func:`measure` and its parameters.

    The history is never aggregated per (user, item): that is a pass over the whole window's
    pairs (measured: docs/benchmarks.md). Seen-ness is asked only of the next day's pairs (a
    join), popularity is a count per item, and the counterfactual's ``j`` only needs a user's
    seen items among the ``k + head`` most popular: with fewer than ``head`` of them seen, at
    least k unseen items lie inside, so nothing past it can be served. Users who have seen
    more (heavy users, bots) are ranked over their whole history."""
    params = check_params(weights, max_id_bytes)
    history_start = served - dt.timedelta(days=lookback_days - 1)
    following = served + dt.timedelta(days=1)
    params.update({
        "served": served, "following": following, "history_start": history_start,
        "history_start_ts": day_start(history_start), "history_end_ts": day_start(following),
        "next_start_ts": day_start(following),
        "next_end_ts": day_start(following + dt.timedelta(days=1)), "head": head,
    })
    sql = f"""
        WITH served AS (
          SELECT user_id, item_id, rank, model_id FROM `{recommendations}` WHERE run_date = @served),
        served_users AS (SELECT DISTINCT user_id FROM served),
        served_k AS (SELECT MAX(rank) AS k FROM served),
        following AS (
          SELECT DISTINCT user_id, item_id
          FROM ({checked_rows(events, weights, "event_date = @following", "next_start_ts", "next_end_ts")})
          WHERE reasons = 0 AND user_id IN (SELECT user_id FROM served_users)),
        history AS (
          SELECT user_id, item_id
          FROM ({checked_rows(events, weights, "event_date BETWEEN @history_start AND @served",
                              "history_start_ts", "history_end_ts")})
          WHERE reasons = 0),
        seen_following AS (
          SELECT DISTINCT h.user_id, h.item_id FROM history h
          JOIN following f ON f.user_id = h.user_id AND f.item_id = h.item_id),
        relevant AS (
          SELECT f.user_id, f.item_id FROM following f
          LEFT JOIN seen_following s ON s.user_id = f.user_id AND s.item_id = f.item_id
          WHERE s.user_id IS NULL),
        active AS (SELECT user_id, COUNT(*) AS n_relevant FROM relevant GROUP BY user_id),
        popularity AS (
          SELECT item_id, ROW_NUMBER() OVER (ORDER BY COUNT(DISTINCT user_id) DESC, item_id) AS pop_rank
          FROM history GROUP BY item_id),
        head_items AS (
          SELECT item_id, pop_rank FROM popularity WHERE pop_rank <= (SELECT k FROM served_k) + @head),
        seen_head AS (
          SELECT DISTINCT h.user_id, p.pop_rank FROM history h JOIN head_items p ON p.item_id = h.item_id
          WHERE h.user_id IN (SELECT user_id FROM active)),
        deep AS (SELECT user_id FROM seen_head GROUP BY user_id HAVING COUNT(*) > @head),
        seen_ranks AS (
          SELECT user_id, pop_rank, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY pop_rank) AS i
          FROM (
            SELECT user_id, pop_rank FROM seen_head WHERE user_id NOT IN (SELECT user_id FROM deep)
            UNION ALL
            SELECT DISTINCT h.user_id, p.pop_rank FROM history h JOIN popularity p ON p.item_id = h.item_id
            WHERE h.user_id IN (SELECT user_id FROM deep))),
        skipped AS (
          SELECT user_id, COUNTIF(pop_rank - i < (SELECT k FROM served_k)) AS j
          FROM seen_ranks GROUP BY user_id),
        model_hits AS (
          SELECT r.user_id, COUNT(*) AS hits FROM relevant r
          JOIN served s ON s.user_id = r.user_id AND s.item_id = r.item_id GROUP BY r.user_id),
        popularity_hits AS (
          SELECT r.user_id, COUNT(*) AS hits FROM relevant r
          JOIN popularity p ON p.item_id = r.item_id
          LEFT JOIN skipped s ON s.user_id = r.user_id
          WHERE p.pop_rank <= (SELECT k FROM served_k) + COALESCE(s.j, 0)
          GROUP BY r.user_id),
        per_user AS (
          SELECT a.n_relevant, COALESCE(m.hits, 0) AS model_hits, COALESCE(p.hits, 0) AS popularity_hits
          FROM active a LEFT JOIN model_hits m ON m.user_id = a.user_id
          LEFT JOIN popularity_hits p ON p.user_id = a.user_id)
        SELECT
          (SELECT k FROM served_k) AS k,
          (SELECT STRING_AGG(DISTINCT model_id, ',') FROM served) AS model_ids,
          (SELECT COUNT(*) FROM served_users) AS users_served,
          (SELECT COUNT(DISTINCT user_id) FROM following) AS users_returning,
          COUNT(*) AS users_active,
          COUNTIF(model_hits > 0) AS model_hit_users,
          SUM(model_hits / n_relevant) AS model_recall_sum,
          COUNTIF(popularity_hits > 0) AS popularity_hit_users,
          SUM(popularity_hits / n_relevant) AS popularity_recall_sum
        FROM per_user
    """
    return sql, params


def measure(client, recommendations: str, events: str, served: dt.date, lookback_days: int,
            weights: dict[str, float], head: int = HEAD,
            max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> ServedDay:
    """Run the query for ``served``; a day without recommendations has ``users_served`` 0."""
    sql, params = feedback_query(recommendations, events, served, lookback_days, weights, head, max_id_bytes)
    row = next(iter(bq.run(client, sql, params)))
    return ServedDay(
        served_date=served, k=int(row["k"] or 0),
        model_ids=tuple(sorted(filter(None, (row["model_ids"] or "").split(",")))),
        users_served=int(row["users_served"] or 0), users_returning=int(row["users_returning"] or 0),
        users_active=int(row["users_active"] or 0), model_hit_users=int(row["model_hit_users"] or 0),
        model_recall_sum=float(row["model_recall_sum"] or 0.0),
        popularity_hit_users=int(row["popularity_hit_users"] or 0),
        popularity_recall_sum=float(row["popularity_recall_sum"] or 0.0),
    )
