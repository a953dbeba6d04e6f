"""Numbers of seconds given to options and calls, checked where they are given.

``timeout_seconds``, ``retry_delay_seconds`` and ``countdown`` end up in PostgreSQL intervals,
timers and datetimes: NaN, an infinity or 1e20 would fail far from the call that passed it
(or make a run wait forever). Refused here, with the option's name in the message.
"""

from __future__ import annotations

import math
from typing import Any

from .storable import shown

__all__ = ["MAX_SECONDS", "check_seconds"]

#: A century: longer than that, a number of seconds is a mistake (and near what a datetime
#: or a PostgreSQL interval can hold).
MAX_SECONDS = 100 * 365 * 24 * 3600


def check_seconds(option: str, value: Any, *, allow_zero: bool = True) -> float:
    """``value`` as seconds, or a ``TypeError``/``ValueError`` that names ``option``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{option} must be a number of seconds, got {shown(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{option} must be a finite number of seconds, got {value}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "negative" if allow_zero else "zero or negative"
        raise ValueError(f"{option} must not be {bound}, got {shown(value)}.")
    if value > MAX_SECONDS:
        raise ValueError(
            f"{option} must be at most {MAX_SECONDS} seconds (a century), got {value:.4g}."
        )
    return float(value)
