"""Rates as ``"100/m"``: how many runs per second, minute, hour or day."""

from __future__ import annotations

import re

from ..storable import shown

__all__ = ["RATE_PATTERN", "parse_rate"]

#: What a rate looks like (also the API schema's pattern): 1 to 999,999,999 per unit.
RATE_PATTERN = r"^\s*([1-9][0-9]{0,8})\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$"
_RATE = re.compile(RATE_PATTERN)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
