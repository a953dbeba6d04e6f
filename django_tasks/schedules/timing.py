"""When a schedule ticks: :func:`cron` expressions in a time zone, or :func:`every` interval.

A tick is an instant (stored in UTC). Every worker that looks at a schedule computes the same
ticks from the same definition, which is what lets the database keep one run per tick: the
run's ``(schedule, tick)`` is a unique key.

Cron expressions are evaluated by ``cronsim`` (the parser Healthchecks uses), which follows
Debian's cron across daylight-saving changes:

* a time that **vanishes** (02:30 on a spring-forward night in Europe/Paris) ticks once, at the
  first instant after the change (03:00 local time);
* a time that **repeats** (02:30 on a fall-back night) ticks once, at its first occurrence -
  unless the expression names both occurrences anyway (``*/30 * * * *`` ticks every half hour
  of real time, so both 02:00 and both 02:30 are ticks).

Intervals are aligned to the Unix epoch (``every(minutes=5)`` ticks at :00, :05, ...), so they
need no time zone and every worker agrees on them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from ..json_input import check_storable
from ..storable import shown
from ..times import LATEST

__all__ = ["Cron", "Every", "Periodic", "Timing", "cron", "every", "timing_of", "zone"]


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression evaluated in a named time zone."""

    expression: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or len(self.expression.split()) != 5:
            raise ValueError(
                f"A cron expression has five fields (minute hour day month weekday), got "
                f"{shown(self.expression)}."
            )
        zone(self.tz)
        try:
            CronSim(self.expression, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"Bad cron expression {shown(self.expression)}: {exc}.") from None

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        local = moment.astimezone(zone(self.tz))
        try:
            return next(CronSim(self.expression, local)).astimezone(UTC)
        except StopIteration:  # no match within cronsim's horizon (e.g. 30 February)
            return LATEST  # as late as a stored time can be

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (``None`` if there is none in sight)."""
        local = moment.astimezone(zone(self.tz)) + timedelta(microseconds=1)
        try:
            return next(CronSim(self.expression, local, reverse=True)).astimezone(UTC)
        except StopIteration:
            return None

    def describe(self) -> str:
        return f"cron {shown(self.expression)} ({self.tz})"


@dataclass(frozen=True)
class Every:
    """Every ``seconds`` seconds, ticks aligned to the Unix epoch."""

    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise TypeError(f"An interval is a number of seconds, got {shown(self.seconds)}.")
        if not math.isfinite(self.seconds) or not 1 <= self.seconds <= MAX_INTERVAL:
            raise ValueError(
                f"An interval must be at least one second and at most ten years, got "
                f"{shown(self.seconds)}."
            )

    def next_after(self, moment: datetime) -> datetime:
        step = int(moment.timestamp() // self.seconds) + 1
        return datetime.fromtimestamp(step * self.seconds, tz=UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        return datetime.fromtimestamp(
            int(moment.timestamp() // self.seconds) * self.seconds, tz=UTC
        )

    def describe(self) -> str:
        return f"every {self.seconds:g} s"


Timing = Cron | Every

#: Ten years: longer intervals would put ticks past what datetimes can hold.
MAX_INTERVAL = 10 * 366 * 86400


def timing_of(cron: str, interval_seconds: float | None, tz: str) -> Timing:
    """The timing a stored schedule defines: its cron expression or its interval - exactly
    one of them (ValueError otherwise). One rule for the model, the admin's form and the
    ticker, which also reads rows written by SQL or by older code."""
    if cron and interval_seconds is None:
        return Cron(cron, tz)
    if not cron and interval_seconds is not None:
        return Every(interval_seconds)
    raise ValueError(
        "A schedule has a cron expression or an interval in seconds: one, not both (and not "
        "neither)."
    )


#: The shape of an IANA time zone name: "UTC", "Europe/Paris", "America/Argentina/Salta",
#: "Etc/GMT+5". Not "localtime" nor "posix/..." or "right/..." (other copies of the database),
#: nor a path.
_IANA_NAME = re.compile(r"[A-Z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*")
#: In the time zone database, but no place's time ("Factory" means "not set").
_NOT_A_PLACE = {"Factory"}


@functools.cache
def _zone_names() -> frozenset[str]:
    """The zone names of the time zone database, spelt as it spells them (a file system that
    ignores case would load "europe/paris" too)."""
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The time zone of an IANA name such as "Europe/Paris", or a ValueError that says which
    name was wrong. Names whose meaning depends on the host are refused: "localtime" (the
    host's own zone), "posixrules", "Factory", paths - every worker on every host must compute
    the same ticks."""
    if (
        isinstance(name, str)
        and _IANA_NAME.fullmatch(name)
        and name not in _NOT_A_PLACE
        and name in _zone_names()
    ):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ValueError(f"Unknown time zone {shown(name)} (use an IANA name such as 'Europe/Paris').")


MISSED_POLICIES = ("once", "skip")


@dataclass(frozen=True)
class Periodic:
    """A task's ``schedule=`` option: when, with which fixed arguments (JSON values: they are
    stored in the Schedule table), and what to do about ticks missed while no worker ran."""

    timing: Timing
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    missed: str = "once"

    def __post_init__(self) -> None:
        if self.missed not in MISSED_POLICIES:
            raise ValueError(f"missed must be 'once' or 'skip', got {shown(self.missed)}.")
        if not isinstance(self.kwargs, dict):
            raise TypeError(f"kwargs must be a dict, got {shown(self.kwargs)}.")
        try:
            check_storable(list(self.args), "args")
            check_storable(self.kwargs, "kwargs")
        except ValueError as exc:
            raise ValueError(f"A schedule's arguments must be JSON values: {exc}") from None


def cron(
    expression: str,
    *,
    tz: str = "UTC",
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    missed: str = "once",
) -> Periodic:
    """``@task(schedule=cron("0 3 * * *", tz="Europe/Paris"))``: at 03:00 Paris time daily."""
    return Periodic(Cron(expression, tz), tuple(args), dict(kwargs or {}), missed)


def every(
    *,
    days: float = 0,
    hours: float = 0,
    minutes: float = 0,
    seconds: float = 0,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    missed: str = "once",
) -> Periodic:
    """``@task(schedule=every(minutes=5))``: every five minutes (at :00, :05, ... UTC)."""
    try:
        total = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    except (OverflowError, TypeError, ValueError) as exc:
        raise ValueError(f"Bad interval: {exc}.") from None
    return Periodic(Every(total), tuple(args), dict(kwargs or {}), missed)
