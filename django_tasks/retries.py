"""Retry delays as Prefect spells them: a number, a list per attempt, or a callable.

``retry_delay_seconds`` is resolved once, when the task is decorated, into a tuple of delays
(one per retry, the last one repeating), because that tuple is copied onto every background
run: the worker that retries a failed run and the rescue that retries a crashed one (in SQL,
without importing the task) read the same delays. A callable is called with the number of
retries and returns that list, as Prefect's :func:`exponential_backoff` does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from .storable import shown
from .validation import check_seconds

__all__ = ["RetryDelay", "check_jitter", "delay_for", "exponential_backoff", "resolve_delays"]

#: What ``retry_delay_seconds`` accepts.
RetryDelay = float | int | Sequence[float | int] | Callable[[int], Sequence[float | int]]


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Delays of ``backoff_factor * 2**n`` seconds for retry ``n`` (0, 1, 2, ...).

    ``@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10))`` waits 10,
    20 and 40 seconds before the three retries.
    """
    _check_delay("backoff_factor", backoff_factor)

    def retry_backoff(retries: int) -> list[float]:
        return [float(backoff_factor) * 2**n for n in range(retries)]

    return retry_backoff


def resolve_delays(value: Any, retries: int) -> tuple[float, ...]:
    """``retry_delay_seconds`` as a tuple of delays; a bad value is an error at decoration."""
    if callable(value):
        produced = value(retries)
        if isinstance(produced, str | bytes) or not isinstance(produced, Sequence):
            raise TypeError(
                "retry_delay_seconds callable must return a list of seconds, got "
                f"{shown(produced)}."
            )
        value = produced
    if isinstance(value, str | bytes):
        raise TypeError(f"retry_delay_seconds must be a number of seconds, got {shown(value)}.")
    if isinstance(value, Sequence):
        if len(value) > 50:
            raise ValueError("retry_delay_seconds takes at most 50 delays.")
        for item in value:
            _check_delay("each retry_delay_seconds item", item)
        return tuple(float(item) for item in value)
    _check_delay("retry_delay_seconds", value)
    return (float(value),)


def check_jitter(value: Any) -> float | None:
    """``retry_jitter_factor``: ``None`` or a number >= 0."""
    if value is None:
        return None
    _check_delay("retry_jitter_factor", value)
    return float(value)


def delay_for(delays: Sequence[float], attempt: int, jitter: float | None = None) -> float:
    """Seconds to wait before the retry that follows failed attempt ``attempt`` (1-based).

    The list gives one delay per retry; when there are more retries than delays the last one
    repeats (as in Prefect). With a jitter factor ``j`` the delay is drawn uniformly from
    ``[d * (1 - j), d * (1 + j)]`` (never below zero), so that many runs failing together do
    not all come back at the same instant. The SQL rescue computes the same thing.
    """
    if not delays:
        return 0.0
    base = delays[min(attempt, len(delays)) - 1]
    if jitter:
        base *= 1 + jitter * (2 * random.random() - 1)
    return max(0.0, base)


def _check_delay(option: str, value: Any) -> None:
    check_seconds(option, value)
