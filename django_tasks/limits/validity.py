"""What a usable limit row is: the rule of the database's CHECK constraints on
``django_tasks_limit`` (:class:`.models.Limit`, migration 0024), and the worker's check of the
rows it loads (:mod:`.gate`).

The constraints stop SQL from writing a row the model forbids (a ``rate_interval`` of NaN,
Infinity, a negative or a huge number, an unknown scope, no name). The worker checks again
because a row can still get past them - a constraint dropped by hand, a database restored
from before migration 0024 - and such a row must cost nothing but its own limit: the gate
ignores it, with an error in the log, instead of failing the admission of every batch that
holds one of its runs.

This module must not import models: the gate imports it outside of Django's app registry.
"""

from __future__ import annotations

from ..storable import shown
from .rates import LONGEST_INTERVAL, SHORTEST_INTERVAL

__all__ = ["SCOPES", "problem"]

#: What a limit names (``Limit.Scope``'s values).
SCOPES = ("tag", "queue")


def problem(
    scope: str, name: str, concurrency: int | None, rate_interval: float | None
) -> str | None:
    """What makes a limit row unusable (a phrase to follow "the limit ... is ignored:"), or
    None when the row is one the model could have written."""
    if scope not in SCOPES:
        return f"its scope {shown(scope)} is neither 'tag' nor 'queue'"
    if not name:
        return "it has no name"
    if concurrency is not None and concurrency < 0:
        return f"its concurrency {concurrency} is negative"
    # Written so that NaN fails too (every comparison with NaN is false).
    if rate_interval is not None and not (SHORTEST_INTERVAL <= rate_interval <= LONGEST_INTERVAL):
        return (
            f"its rate_interval {rate_interval!r} is not a rate's seconds between two starts "
            f"(from {SHORTEST_INTERVAL:g} to {LONGEST_INTERVAL:g})"
        )
    return None
