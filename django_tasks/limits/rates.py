"""Rates as ``"100/m"``: how many runs per second, minute, hour or day, and how early a
reserved start may come on its rate's start clock."""

from __future__ import annotations

import re

from ..storable import shown

__all__ = [
    "LONGEST_INTERVAL",
    "RATE_PATTERN",
    "SHORTEST_INTERVAL",
    "START_TOLERANCE",
    "parse_rate",
]

#: What a rate looks like (also the API schema's pattern): 1 to 999,999,999 per unit.
RATE_PATTERN = r"^\s*([1-9][0-9]{0,8})\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$"
_RATE = re.compile(RATE_PATTERN)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The bounds of the seconds between two starts a rate gives (``"999999999/s"``, ``"1/d"``):
#: a limit's ``rate_interval`` outside them was not written by :func:`parse_rate` (a CHECK
#: constraint refuses it, migration 0024).
SHORTEST_INTERVAL = _UNITS["s"] / 999_999_999
LONGEST_INTERVAL = float(_UNITS["d"])
#: How early, in spacings, a run that reserved its start may start on its rate's start clock
#: (the next start the starts so far allow; see ``limits.gate``); a run without a reservation
#: starts only once the clock has come. Each start moves the clock a spacing on from the later
#: of the clock and now, so two starts are at least half a spacing apart, any ``k + 1`` span
#: at least ``k - 0.5`` spacings, and a window of ``k`` spacings holds at most ``k + 1`` -
#: with N per second, at most N + 1 starts in any second and N / 2 + 1 in any half second,
#: whatever the queue holds, with half a spacing to spare for the moment between a start's
#: admission and the call of its function. Without a tolerance, a worker's delays
#: (milliseconds, where 50/s is a start every 20 ms) would make one reserved start late and
#: the next, on time, early against it: that run would lose its turn. (A whole spacing lost
#: fewer turns - at 50/s with 10,000 queued, 48 starts a second against 41-46 here - but left
#: nothing to spare: 7 starts in half a second at 10/s on loaded cores.)
START_TOLERANCE = 0.5


def parse_rate(rate: object) -> float:
    """Seconds between two runs for ``rate`` (``"100/m"`` -> 0.6); ValueError if malformed."""
    if not isinstance(rate, str):
        raise TypeError(f"A rate is a str such as '100/m', got {shown(rate)}.")
    match = _RATE.match(rate)
    if match is None:
        raise ValueError(
            f"A rate is 'N/s', 'N/m', 'N/h' or 'N/d' with N from 1 to 999999999, got {shown(rate)}."
        )
    return _UNITS[match.group(2)[0]] / int(match.group(1))
