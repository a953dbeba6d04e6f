"""Times that PostgreSQL stores and Python can read back - and show in any time zone.

``timestamptz`` holds ``-infinity``, ``infinity`` and years from 4713 BC to 294276 AD; Python's
``datetime`` holds years 1 to 9999. A row whose time lies outside cannot even be read: psycopg
raises ``DataError`` on the row, so one ``UPDATE ... SET scheduled_time = '-infinity'`` (to put
a run first) made every claim of its queue fail and every page that listed it a 500. The
columns people (or their scripts) set by hand - a run's ``scheduled_time``, a schedule's
``next_tick`` and ``last_tick`` - are therefore kept by CHECK constraints between
:data:`EARLIEST` and :data:`LATEST` (migration 0025), a day inside Python's range at each end,
so that the time still converts to any local time zone for display; and a time given to
``.delay(scheduled_time=...)`` outside them is refused at the call.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import models

__all__ = ["EARLIEST", "LATEST", "check_time", "within_range"]

#: The first and last moments a stored time may hold (the constraints' bounds).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def check_time(name: str, value: datetime) -> datetime:
    """``value`` (an aware datetime) if it lies between :data:`EARLIEST` and :data:`LATEST`;
    ValueError, which names ``name``, otherwise."""
    if not EARLIEST <= value <= LATEST:
        raise ValueError(
            f"{name} must lie between {EARLIEST.date().isoformat()} and "
            f"{LATEST.date().isoformat()} (UTC), "
            f"got {value.isoformat()}."
        )
    return value


def within_range(field: str) -> models.Q:
    """The condition of a CHECK constraint keeping ``field`` readable (NULL passes)."""
    return models.Q(**{f"{field}__range": (EARLIEST, LATEST)})
