"""The trainer's "today": the UTC date, or the date (``YYYY-MM-DD``) in the variable
:data:`trainer.contract.TODAY_ENV` when set.

Only tests set it: their run dates are fixed days (some in 2027) that must mean the
same whatever the real date, and the launchers pass it to every runtime. A deployment leaves it
unset; a run date is then checked against the real UTC date of the machine running the step.
"""

from __future__ import annotations

import datetime as dt
import os

from trainer.contract import TODAY_ENV
from trainer.core.errors import TrainerError

__all__ = ["TODAY_ENV", "today"]


def today() -> dt.date:
    """The current UTC date, or the one :data:`~trainer.contract.TODAY_ENV` sets."""
    value = os.environ.get(TODAY_ENV, "").strip()
    if not value:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise TrainerError(f"{TODAY_ENV}={value!r} is not a date (YYYY-MM-DD)") from None
