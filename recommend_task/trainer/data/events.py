"""Reading user events from BigQuery: a data-quality count and an aggregation in SQL.

A row is *valid* when it has an event id, a user id and an item id of at most
``--max-id-bytes`` bytes without control characters, a known event type and a timestamp whose
UTC date lies inside the window. Everything else in the window's partitions is dropped and
counted per reason; above ``max_bad_fraction`` the step fails rather than train on junk.

An event counts once, however often the app sent it: of the rows sharing an ``event_id``, the
first by (``event_timestamp``, ``user_id``, ``item_id``, ``event_type``), each ascending with
nulls last, is the event; the others are *copies*, counted as duplicates (not as bad rows), and
as conflicts when their content differs from the event's. Every read of events goes through
:func:`checked_rows`, so the matrices, ``event_stats``, predict's window and feedback agree.
:meth:`EventSource.read_checked` gets the counts and the aggregation from one scan of the
window (half the bytes a quality query and an aggregation would bill); a shard's read still
counts the whole window.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging

import pyarrow as pa
from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from trainer.core import profile
from trainer.core.errors import EmptyWindowError, TooManyBadRowsError, TrainerError
from trainer.data.date_windows import DateRange
from trainer.data.shards import Shard
from trainer.storage import bq
from trainer.storage.clients import bq_retry

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.events")

# Implicit-feedback confidence per event type: finishing a lesson says more than opening it.
DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "start": 2.0, "complete": 4.0}
# Longer user or item ids are bad rows: ids are held in memory per user and item in every step.
DEFAULT_MAX_ID_BYTES = 256


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
    add_max_id_bytes(parser)


def add_max_id_bytes(parser: argparse.ArgumentParser) -> None:
    """``--max-id-bytes``: longer user or item ids are invalid rows."""
    parser.add_argument("--max-id-bytes", type=int, default=DEFAULT_MAX_ID_BYTES,
                        help="user and item ids longer than this (UTF-8 bytes) are invalid rows")


def check_window_args(args: argparse.Namespace) -> None:
    """The window arguments' own rules (a step's ``validate``)."""
    if not 0 <= args.max_bad_fraction <= 1:
        raise TrainerError(f"--max-bad-fraction must be in [0, 1], got {args.max_bad_fraction}")
    check_max_id_bytes(args.max_id_bytes)


def check_max_id_bytes(value: int) -> None:
    if value < 1:
        raise TrainerError(f"--max-id-bytes must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Row counts of the window's partitions, by reason for dropping."""

    rows_read: int
    null_user_id: int
    null_item_id: int
    unknown_event_type: int
    timestamp_outside_window: int
    null_event_id: int
    id_too_long: int
    control_character_in_id: int
    duplicate_rows: int  # copies of an event read before them: neither events nor bad rows
    conflicting_rows: int  # those of the copies whose content differs from the event's
    valid_rows: int

    @property
    def bad_rows(self) -> int:
        return self.rows_read - self.duplicate_rows - self.valid_rows

    @property
    def bad_fraction(self) -> float:
        """Bad rows among the events (copies left out)."""
        events = self.rows_read - self.duplicate_rows
        return self.bad_rows / events if events else 0.0

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




def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def window_params(window: DateRange) -> dict[str, object]:
    return {"start": window.start, "end": window.end, "start_ts": day_start(window.start),
            "end_ts": day_start(window.end + dt.timedelta(days=1))}


def _type_list(weights: dict[str, float]) -> str:
    """The event types' query parameters, as the list of an ``IN (...)``."""
    return ", ".join(f"@type_{i}" for i in range(len(weights)))


def check_params(weights: dict[str, float], max_id_bytes: int) -> dict[str, object]:
    """The parameters :func:`checked_rows` needs besides its timestamp range (and the weights
    of :func:`weight_case`, whose names they share)."""
    _, params = weight_case(weights)
    return {**params, "max_id_bytes": int(max_id_bytes)}


# Why a row is invalid, as bits of one small integer (0: valid). One scan of the window can then
# aggregate the valid rows per (user, item) and collapse the invalid ones into a few groups
# whose counts give each reason's count (a row can have several reasons, as in quality()).
REASON_BITS = (("null_user_id", 1), ("null_item_id", 2), ("unknown_event_type", 4),
               ("timestamp_outside_window", 8), ("null_event_id", 16), ("id_too_long", 32),
               ("control_character_in_id", 64))
# A copy of an event is only that: it is not judged, so it counts under no reason above.
DUPLICATE, CONFLICTING = 128, 256
COPY_BITS = (("duplicate_rows", DUPLICATE), ("conflicting_rows", CONFLICTING))

_IDS = ("user_id", "item_id")
# RE2's Cc: U+0000-U+001F and U+007F-U+009F (NUL, tab, escape, the C1 controls).
_CONTROL = r"r'\p{Cc}'"


def reason_bits(weights: dict[str, float], start: str = "start_ts", end: str = "end_ts") -> str:
    """The invalid reasons of a row as :data:`REASON_BITS` (0: valid), in SQL; timestamps valid
    in ``[@start, @end)``."""
    types = _type_list(weights)
    too_long = " OR ".join(f"BYTE_LENGTH({c}) > @max_id_bytes" for c in _IDS)
    control = " OR ".join(f"REGEXP_CONTAINS({c}, {_CONTROL})" for c in _IDS)
    return ("IF(user_id IS NULL, 1, 0) + IF(item_id IS NULL, 2, 0)"
            f" + IF(event_type IS NULL OR event_type NOT IN ({types}), 4, 0)"
            f" + IF(event_timestamp IS NULL OR NOT ({in_range(start, end)}), 8, 0)"
            f" + IF(event_id IS NULL, 16, 0) + IF({too_long}, 32, 0) + IF({control}, 64, 0)")


# Which of the rows sharing an event id is the event: the earliest, then the smallest content.
_CONTENT = ("user_id", "item_id", "event_type", "event_timestamp")
_EVENT_ORDER = ", ".join(f"{c} ASC NULLS LAST"
                         for c in ("event_timestamp", "user_id", "item_id", "event_type"))


def checked_rows(table: str, weights: dict[str, float], partitions: str, start: str = "start_ts",
                 end: str = "end_ts", deduplicate: bool = True) -> str:
    """A subquery: the rows of ``table`` in ``partitions`` (a condition on ``event_date``), each
    with ``reasons``: 0 for a valid event, its :data:`REASON_BITS` when invalid, and
    ``DUPLICATE`` (plus ``CONFLICTING`` if its content differs) for a copy of an event id seen
    first in another row. Takes :func:`check_params`' parameters and ``@start``/``@end``.

    ``deduplicate=False`` leaves copies in as events (the benchmark floor's query)."""
    bits = reason_bits(weights, start, end)
    columns = "event_id, user_id, item_id, event_type, event_timestamp, event_date"
    if not deduplicate:
        return f"SELECT {columns}, {bits} AS reasons FROM `{table}` WHERE {partitions}"
    same = " AND ".join(f"{c} IS NOT DISTINCT FROM FIRST_VALUE({c}) OVER event" for c in _CONTENT)
    return f"""
        SELECT {columns},
               CASE WHEN event_id IS NULL OR ROW_NUMBER() OVER event = 1 THEN {bits}
                    WHEN {same} THEN {DUPLICATE} ELSE {DUPLICATE + CONFLICTING} END AS reasons
        FROM `{table}`
        WHERE {partitions}
        WINDOW event AS (PARTITION BY event_id ORDER BY {_EVENT_ORDER})"""


def count_columns(reasons: str = "reasons") -> str:
    """``COUNTIF``s of each reason and copy bit of ``reasons``, named as :class:`QualityReport`'s
    fields."""
    return ", ".join(f"COUNTIF(({reasons} & {bit}) != 0) AS {name}" for name, bit in REASON_BITS + COPY_BITS)


_WINDOW_PARTITIONS = "event_date BETWEEN @start AND @end"


class EventSource:
    """The events table of one dataset."""

    def __init__(self, client: bigquery.Client, table: str,
                 max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> None:
        self.client = client
        self.table = table
        self.max_id_bytes = max_id_bytes

    def _checked(self, weights: dict[str, float], deduplicate: bool = True) -> tuple[str, dict[str, object]]:
        """The window's :func:`checked_rows` and its parameters (but the window's)."""
        return (checked_rows(self.table, weights, _WINDOW_PARTITIONS, deduplicate=deduplicate),
                check_params(weights, self.max_id_bytes))

    def check_exists(self) -> None:
        try:
            self.client.get_table(self.table, retry=bq_retry())
        except NotFound:
            raise TrainerError(f"events table {self.table} does not exist") from None

    def count(self, window: DateRange) -> int:
        """Rows in the window's partitions, valid or not (BigQuery bills no bytes for it)."""
        sql = f"SELECT COUNT(*) AS n FROM `{self.table}` WHERE {_WINDOW_PARTITIONS}"
        return int(next(iter(bq.run(self.client, sql, window_params(window))))["n"])

    def quality(self, window: DateRange, weights: dict[str, float]) -> QualityReport:
        """Count rows in the window's partitions, and why the invalid ones are invalid."""
        self.check_exists()
        rows, params = self._checked(weights)
        sql = (f"SELECT COUNT(*) AS rows_read, {count_columns()}, COUNTIF(reasons = 0) AS valid_rows "
               f"FROM ({rows})")
        profile.count("event_scans", 1)  # the window's checked columns, every partition
        row = next(iter(bq.run(self.client, sql, {**params, **window_params(window)})))
        return QualityReport(**{k: int(v or 0) for k, v in row.items()})

    def interactions_query(self, window: DateRange, weights: dict[str, float], holdout_start=None,
                           shard: Shard | None = None,
                           deduplicate: bool = True) -> tuple[str, dict[str, object]]:
        """The aggregation of :meth:`interactions`: SQL and its parameters."""
        case, _ = weight_case(weights)
        rows, params = self._checked(weights, deduplicate)
        split = "event_timestamp >= @holdout_start_ts" if holdout_start else "FALSE"
        in_shard = ""
        if shard is not None and shard.count > 1:
            condition, shard_params = shard.condition()
            in_shard, params = f" AND {condition}", {**params, **shard_params}
        sql = f"""
            SELECT user_id, item_id, {split} AS in_holdout,
                   SUM({case}) AS weight, COUNT(*) AS events
            FROM ({rows})
            WHERE reasons = 0{in_shard}
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
        profile.count("event_scans", 1)  # the window's checked columns, every partition
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
            " unknown event_type=%d, timestamp outside window=%d, null event_id=%d, id longer than"
            " %d bytes=%d, control character in id=%d); duplicate copies=%d (conflicting=%d)",
            self.table, window, report.rows_read, report.valid_rows, report.bad_rows,
            report.null_user_id, report.null_item_id, report.unknown_event_type,
            report.timestamp_outside_window, report.null_event_id, self.max_id_bytes, report.id_too_long,
            report.control_character_in_id, report.duplicate_rows, report.conflicting_rows,
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
                     holdout_start=None, shard: Shard | None = None,
                     validation_start=None) -> tuple[QualityReport, pa.Table]:
        """The quality counts of the whole window and the aggregation of its valid rows (of
        ``shard``'s users only, if given); fails on an empty window or too many bad rows.

        Unsharded, both come from one query: the same counts as :meth:`quality` and the same
        rows as :meth:`interactions`. A shard reads its users only, so it counts the window apart
        (every shard judges the same data)."""
        if shard is not None and shard.count > 1:
            report = self.checked_quality(window, weights, max_bad_fraction)
            rows = self.interactions(window, weights, holdout_start, shard)
        else:
            report, rows = self._read_once(window, weights, holdout_start, validation_start)
            self._log_quality(window, report)
            self._check_quality(window, report, max_bad_fraction)
        log.info("aggregated %d (user, item) interactions from %d events%s", len(rows),
                 report.valid_rows, f" ({shard}'s users)" if shard else "")
        return report, rows

    def _read_once(self, window: DateRange, weights: dict[str, float], holdout_start=None,
                   validation_start=None) -> tuple[QualityReport, pa.Table]:
        self.check_exists()
        case, _ = weight_case(weights)
        rows, params = self._checked(weights)
        split = "event_timestamp >= @holdout_start_ts" if holdout_start else "FALSE"
        # The training part's last days apart from the rest: the tuning search's validation.
        # No column more is read, so no byte more is billed.
        validation = ("event_timestamp >= @validation_start_ts" if validation_start else "FALSE")
        sql = f"""
            SELECT IF(reasons = 0, user_id, NULL) AS user_id, IF(reasons = 0, item_id, NULL) AS item_id,
                   IF(reasons = 0, {split}, NULL) AS in_holdout,
                   IF(reasons = 0, {validation}, NULL) AS in_validation,
                   SUM({case}) AS weight, COUNT(*) AS events, reasons
            FROM ({rows})
            GROUP BY 1, 2, 3, 4, 7  -- the output columns: the ids are NULL on invalid rows
        """
        params = {**params, **window_params(window)}
        if holdout_start:
            params["holdout_start_ts"] = day_start(holdout_start)
        if validation_start:
            params["validation_start_ts"] = day_start(validation_start)
        profile.count("event_scans", 1)  # the window's checked columns, every partition
        table = bq.to_arrow(self.client, sql, params)
        report, valid = _quality_of(table)
        kept = table.select(["user_id", "item_id", "in_holdout", "in_validation", "weight", "events"])
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

    counts = {name: events_where(pc.not_equal(pc.bit_wise_and(reasons, bit), 0))
              for name, bit in REASON_BITS + COPY_BITS}
    return QualityReport(rows_read=int(pc.sum(events).as_py() or 0), valid_rows=events_where(valid),
                         **counts), valid
