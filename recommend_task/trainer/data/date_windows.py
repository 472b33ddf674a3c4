"""Date arithmetic for event windows and the evaluation holdout.

All windows are whole UTC days, inclusive at both ends: a lookback of 30 days ending at
``run_date`` covers ``run_date - 29 .. run_date``. The holdout is the last ``holdout_days`` of
that window; training sees only the days before it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from trainer.core.errors import TrainerError

# The earliest day a run date or a window may reach: no learning app's event predates the Unix
# epoch, and every date the steps compute from a run date (a year of lookback, a week of trailing
# days) stays inside what Python, pandas' nanosecond timestamps (1677..2262) and BigQuery's
# day partitions (1960-01-01..2159-12-31) all represent. Without it, a window reaching before
# year 1 raised OverflowError: a crash, retried, instead of a bad argument.
EARLIEST_DATE = dt.date(1970, 1, 1)


@dataclasses.dataclass(frozen=True)
class DateRange:
    """An inclusive range of whole days."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise TrainerError(f"date range ends ({self.end}) before it starts ({self.start})")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


@dataclasses.dataclass(frozen=True)
class Window:
    """The event window of one run, split into a training part and an evaluation holdout.

    ``validation`` is the training part's last days (as many as the holdout's, leaving at least
    one day before them): the tuning search ranks on them, never on the holdout, which stays for
    the promotion gate."""

    full: DateRange
    train: DateRange
    holdout: DateRange | None
    validation: DateRange | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "start": self.full.start.isoformat(),
            "end": self.full.end.isoformat(),
            "train_start": self.train.start.isoformat(),
            "train_end": self.train.end.isoformat(),
            "holdout_start": self.holdout.start.isoformat() if self.holdout else None,
            "holdout_end": self.holdout.end.isoformat() if self.holdout else None,
            "validation_start": self.validation.start.isoformat() if self.validation else None,
        }


def lookback(run_date: dt.date, lookback_days: int) -> DateRange:
    """The ``lookback_days`` days ending at (and including) ``run_date``."""
    if lookback_days < 1:
        raise TrainerError(f"lookback_days must be >= 1, got {lookback_days}")
    too_early = TrainerError(f"the {lookback_days}-day window ending {run_date} starts before "
                             f"{EARLIEST_DATE}, the earliest date")
    try:
        start = run_date - dt.timedelta(days=lookback_days - 1)
    except OverflowError:  # before year 1, or more days than a timedelta holds
        raise too_early from None
    if start < EARLIEST_DATE:
        raise too_early
    return DateRange(start, run_date)


def split_window(run_date: dt.date, lookback_days: int, holdout_days: int) -> Window:
    """Split the lookback window ending at ``run_date`` into train days and holdout days."""
    full = lookback(run_date, lookback_days)
    if holdout_days < 0:
        raise TrainerError(f"holdout_days must be >= 0, got {holdout_days}")
    if holdout_days >= lookback_days:
        raise TrainerError(
            f"holdout_days ({holdout_days}) must be smaller than lookback_days ({lookback_days})"
        )
    if holdout_days == 0:
        return Window(full=full, train=full, holdout=None)
    holdout = DateRange(run_date - dt.timedelta(days=holdout_days - 1), run_date)
    train = DateRange(full.start, holdout.start - dt.timedelta(days=1))
    validation_days = min(holdout_days, train.days - 1)
    validation = (DateRange(train.end - dt.timedelta(days=validation_days - 1), train.end)
                  if validation_days > 0 else None)
    return Window(full=full, train=train, holdout=holdout, validation=validation)


def check_run_date(run_date: dt.date) -> dt.date:
    """Refuse a run date before :data:`EARLIEST_DATE`, or on or after today
    (:mod:`trainer.core.clock`): that day's events are not all in yet, and a day written ahead of
    time would be served before its turn. Permanent: the same arguments fail the same way until
    the date has passed, and a retry should not wait for that."""
    from trainer.core.clock import today

    if run_date < EARLIEST_DATE:
        raise TrainerError(f"run date {run_date} is before {EARLIEST_DATE}, the earliest run date")
    now = today()
    if run_date >= now:
        raise TrainerError(f"run date {run_date} is not before today ({now}, UTC): a day is "
                           "processed once it has ended (a future-dated Airflow run: see docs/runbook.md)")
    return run_date


def parse_date(value: str) -> dt.date:
    """Parse ``YYYY-MM-DD`` (what Airflow's ``{{ ds }}`` renders) with a clear error."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise TrainerError(f"invalid date {value!r}: expected YYYY-MM-DD") from None
