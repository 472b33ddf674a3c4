"""Reading user events from BigQuery: a data-quality count and an aggregation in SQL.

A row is *valid* when it has a user id, an item id, a known event type and a timestamp whose
UTC date lies inside the window. Everything else in the window's partitions is dropped and
counted per reason; above ``max_bad_fraction`` the step fails rather than train on junk.
:meth:`EventSource.read_checked` gets both from one scan of the window (half the bytes a
quality query and an aggregation would bill); a shard's read still counts the whole window.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging

import pyarrow as pa
from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from trainer import bq
from trainer.clients import bq_retry
from trainer.errors import EmptyWindowError, TooManyBadRowsError, TrainerError
from trainer.shards import Shard
from trainer.window import DateRange

log = logging.getLogger(__name__)

# Implicit-feedback confidence per event type: finishing a lesson says more than opening it.
DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "start": 2.0, "complete": 4.0}


def parse_event_weights(value: str) -> dict[str, float]:
    """Parse ``view=1,start=2,complete=4``."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, number = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            weights[name.strip()] = float(number)
        except ValueError:
            raise TrainerError(f"invalid event weight {part!r}: expected type=number") from None
        if weights[name.strip()] <= 0:
            raise TrainerError(f"event weight for {name.strip()!r} must be > 0")
    if not weights:
        raise TrainerError("no event weights given")
    return weights


def add_window_args(parser: argparse.ArgumentParser) -> None:
    """Window and data-quality arguments (shared with predict_task)."""
    parser.add_argument("--lookback-days", type=int, default=30, help="days of events to use")
    parser.add_argument(
        "--event-weights",
        type=parse_event_weights,
        default=",".join(f"{k}={v:g}" for k, v in DEFAULT_EVENT_WEIGHTS.items()),
        help="implicit-feedback weight per event type; other types count as invalid rows",
    )
    parser.add_argument("--max-bad-fraction", type=float, default=0.05,
                        help="fail if more than this share of the window's rows is invalid")


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Row counts of the window's partitions, by reason for dropping."""

    rows_read: int
    null_user_id: int
    null_item_id: int
    unknown_event_type: int
    timestamp_outside_window: int
    valid_rows: int

    @property
    def bad_rows(self) -> int:
        return self.rows_read - self.valid_rows

    @property
    def bad_fraction(self) -> float:
        return self.bad_rows / self.rows_read if self.rows_read else 0.0

    def to_dict(self) -> dict[str, int | float]:
        return {**dataclasses.asdict(self), "bad_rows": self.bad_rows,
                "bad_fraction": round(self.bad_fraction, 6)}


def weight_case(weights: dict[str, float]) -> tuple[str, dict[str, object]]:
    """A CASE expression for event weights, with the names and values as query parameters."""
    whens, params = [], {}
    for i, (name, weight) in enumerate(sorted(weights.items())):
        whens.append(f"WHEN @type_{i} THEN @weight_{i}")
        params[f"type_{i}"], params[f"weight_{i}"] = name, float(weight)
    return f"CASE event_type {' '.join(whens)} END", params


# The window's UTC days as a timestamp range: the same rows as DATE(event_timestamp) BETWEEN
# @start AND @end, and the emulator runs it several times faster (measured: docs/benchmarks.md).
def in_range(start: str = "start_ts", end: str = "end_ts") -> str:
    """``event_timestamp`` in ``[@start, @end)``: the timestamp parameters of a range of days."""
    return f"event_timestamp >= @{start} AND event_timestamp < @{end}"


_IN_WINDOW = in_range()


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def window_params(window: DateRange) -> dict[str, object]:
    return {"start": window.start, "end": window.end, "start_ts": day_start(window.start),
            "end_ts": day_start(window.end + dt.timedelta(days=1))}


def _type_list(weights: dict[str, float]) -> str:
    """The event types' query parameters, as the list of an ``IN (...)``."""
    return ", ".join(f"@type_{i}" for i in range(len(weights)))


def valid_condition(weights: dict[str, float], start: str = "start_ts", end: str = "end_ts") -> str:
    """A valid row: ids, a known event type (``weight_case``'s parameters) and a timestamp in
    ``[@start, @end)``."""
    types = _type_list(weights)
    return (
        "user_id IS NOT NULL AND item_id IS NOT NULL "
        f"AND event_type IN ({types}) "
        "AND event_timestamp IS NOT NULL "
        f"AND {in_range(start, end)}"
    )


# Why a row is invalid, as bits of one small integer (0: valid). One scan of the window can then
# aggregate the valid rows per (user, item) and collapse the invalid ones into at most 16 groups
# whose counts give each reason's count (a row can have several reasons, as in quality()).
REASON_BITS = (("null_user_id", 1), ("null_item_id", 2), ("unknown_event_type", 4),
               ("timestamp_outside_window", 8))


def reason_bits(weights: dict[str, float]) -> str:
    """The invalid reasons of a row as :data:`REASON_BITS` (0: valid), in SQL."""
    types = _type_list(weights)
    return ("IF(user_id IS NULL, 1, 0) + IF(item_id IS NULL, 2, 0)"
            f" + IF(event_type IS NULL OR event_type NOT IN ({types}), 4, 0)"
            f" + IF(event_timestamp IS NULL OR NOT ({_IN_WINDOW}), 8, 0)")


class EventSource:
    """The events table of one dataset."""

    def __init__(self, client: bigquery.Client, table: str) -> None:
        self.client = client
        self.table = table

    def check_exists(self) -> None:
        try:
            self.client.get_table(self.table, retry=bq_retry())
        except NotFound:
            raise TrainerError(f"events table {self.table} does not exist") from None

    def quality(self, window: DateRange, weights: dict[str, float]) -> QualityReport:
        """Count rows in the window's partitions, and why the invalid ones are invalid."""
        self.check_exists()
        _, params = weight_case(weights)
        types = _type_list(weights)
        sql = f"""
            SELECT
              COUNT(*) AS rows_read,
              COUNTIF(user_id IS NULL) AS null_user_id,
              COUNTIF(item_id IS NULL) AS null_item_id,
              COUNTIF(event_type IS NULL OR event_type NOT IN ({types})) AS unknown_event_type,
              COUNTIF(event_timestamp IS NULL
                      OR NOT ({_IN_WINDOW})) AS timestamp_outside_window,
              COUNTIF({valid_condition(weights)}) AS valid_rows
            FROM `{self.table}`
            WHERE event_date BETWEEN @start AND @end
        """
        row = next(iter(bq.run(self.client, sql, {**params, **window_params(window)})))
        return QualityReport(**{k: int(v or 0) for k, v in row.items()})

    def interactions_query(self, window: DateRange, weights: dict[str, float], holdout_start=None,
                           shard: Shard | None = None) -> tuple[str, dict[str, object]]:
        """The aggregation of :meth:`interactions`: SQL and its parameters."""
        case, params = weight_case(weights)
        split = "event_timestamp >= @holdout_start_ts" if holdout_start else "FALSE"
        in_shard = ""
        if shard is not None and shard.count > 1:
            condition, shard_params = shard.condition()
            in_shard, params = f" AND {condition}", {**params, **shard_params}
        sql = f"""
            SELECT user_id, item_id, {split} AS in_holdout,
                   SUM({case}) AS weight, COUNT(*) AS events
            FROM `{self.table}`
            WHERE event_date BETWEEN @start AND @end AND {valid_condition(weights)}{in_shard}
            GROUP BY user_id, item_id, in_holdout
        """
        params = {**params, **window_params(window)}
        if holdout_start:
            params["holdout_start_ts"] = day_start(holdout_start)
        return sql, params

    def interactions(self, window: DateRange, weights: dict[str, float],
                     holdout_start=None, shard: Shard | None = None) -> pa.Table:
        """Valid events aggregated per (user, item[, in holdout]): summed weight and count;
        only the users of ``shard`` when one is given."""
        sql, params = self.interactions_query(window, weights, holdout_start, shard)
        return bq.to_arrow(self.client, sql, params)

    def checked_quality(self, window: DateRange, weights: dict[str, float],
                        max_bad_fraction: float) -> QualityReport:
        """:meth:`quality`, logged; fails on an empty window or too many bad rows."""
        report = self.quality(window, weights)
        self._log_quality(window, report)
        self._check_quality(window, report, max_bad_fraction)
        return report

    def _log_quality(self, window: DateRange, report: QualityReport) -> None:
        log.info(
            "events %s window %s: rows read=%d valid=%d dropped=%d (null user_id=%d, null item_id=%d,"
            " unknown event_type=%d, timestamp outside window=%d)",
            self.table, window, report.rows_read, report.valid_rows, report.bad_rows,
            report.null_user_id, report.null_item_id, report.unknown_event_type,
            report.timestamp_outside_window,
        )

    def _check_quality(self, window: DateRange, report: QualityReport, max_bad_fraction: float) -> None:
        if report.valid_rows == 0:
            raise EmptyWindowError(
                f"no valid events in {self.table} for window {window} "
                f"({report.rows_read} rows read, {report.bad_rows} invalid)"
            )
        if report.bad_fraction > max_bad_fraction:
            raise TooManyBadRowsError(
                f"{report.bad_rows} of {report.rows_read} events in {self.table} for window {window} "
                f"are invalid ({report.bad_fraction:.1%} > max_bad_fraction {max_bad_fraction:.1%})"
            )

    def read_checked(self, window: DateRange, weights: dict[str, float], max_bad_fraction: float,
                     holdout_start=None, shard: Shard | None = None) -> tuple[QualityReport, pa.Table]:
        """The quality counts of the whole window and the aggregation of its valid rows (of
        ``shard``'s users only, if given); fails on an empty window or too many bad rows.

        Unsharded, both come from one query: the same counts as :meth:`quality` and the same
        rows as :meth:`interactions`. A shard reads its users only, so it counts the window apart
        (every shard judges the same data)."""
        if shard is not None and shard.count > 1:
            report = self.checked_quality(window, weights, max_bad_fraction)
            rows = self.interactions(window, weights, holdout_start, shard)
        else:
            report, rows = self._read_once(window, weights, holdout_start)
            self._log_quality(window, report)
            self._check_quality(window, report, max_bad_fraction)
        log.info("aggregated %d (user, item) interactions from %d events%s", len(rows),
                 report.valid_rows, f" ({shard}'s users)" if shard else "")
        return report, rows

    def _read_once(self, window: DateRange, weights: dict[str, float],
                   holdout_start=None) -> tuple[QualityReport, pa.Table]:
        self.check_exists()
        case, params = weight_case(weights)
        split = "event_timestamp >= @holdout_start_ts" if holdout_start else "FALSE"
        sql = f"""
            SELECT IF(reasons = 0, user_id, NULL) AS user_id, IF(reasons = 0, item_id, NULL) AS item_id,
                   IF(reasons = 0, {split}, NULL) AS in_holdout,
                   SUM({case}) AS weight, COUNT(*) AS events, reasons
            FROM (
              SELECT user_id, item_id, event_type, event_timestamp, {reason_bits(weights)} AS reasons
              FROM `{self.table}`
              WHERE event_date BETWEEN @start AND @end)
            GROUP BY 1, 2, 3, 6  -- the output columns: the ids are NULL on invalid rows
        """
        params = {**params, **window_params(window)}
        if holdout_start:
            params["holdout_start_ts"] = day_start(holdout_start)
        table = bq.to_arrow(self.client, sql, params)
        report, valid = _quality_of(table)
        kept = table.select(["user_id", "item_id", "in_holdout", "weight", "events"])
        del table  # the counts are taken: free the reasons before any copy
        # Filtering copies every column; the usual window has no invalid rows to filter out.
        return report, kept if report.valid_rows == report.rows_read else kept.filter(valid)


def _quality_of(table: pa.Table) -> tuple[QualityReport, pa.ChunkedArray]:
    """The quality counts of one-scan groups (``reasons``, ``events``) and which groups are valid."""
    import pyarrow.compute as pc

    reasons, events = table["reasons"], table["events"]
    valid = pc.equal(reasons, 0)

    def events_where(mask) -> int:
        return int(pc.sum(pc.filter(events, mask)).as_py() or 0)

    counts = {name: events_where(pc.not_equal(pc.bit_wise_and(reasons, bit), 0)) for name, bit in REASON_BITS}
    return QualityReport(rows_read=int(pc.sum(events).as_py() or 0), valid_rows=events_where(valid),
                         **counts), valid
