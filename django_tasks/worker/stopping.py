"""Signals that ask a worker to stop, counted as requests.

The first request stops gracefully: running runs finish, claimed runs not started are handed
back. A second one stops at once. Two signals are one request when they are different signals
arriving within :data:`SAME_REQUEST_WITHIN` seconds of each other: a terminal's Ctrl-C reaches
the whole foreground process group (SIGINT) while a process manager (honcho, foreman, the
demo's ``rundemo``) also sends SIGTERM - one Ctrl-C must not kill running runs. A second Ctrl-C
(the same signal again) still stops at once.
"""

from __future__ import annotations

import signal
import time

__all__ = ["AT_ONCE", "DUPLICATE", "GRACEFUL", "SAME_REQUEST_WITHIN", "StopRequests"]

SAME_REQUEST_WITHIN = 1.0

GRACEFUL, AT_ONCE, DUPLICATE = "graceful", "at once", "duplicate"


class StopRequests:
    """Tells what a stop signal asks for, given the ones before it."""

    def __init__(self) -> None:
        self.count = 0
        self._first: tuple[int, float] | None = None

    def add(self, signum: int) -> str:
        """``GRACEFUL`` (first request), ``AT_ONCE`` (second) or ``DUPLICATE`` (the first
        request arriving by another signal too)."""
        now = time.monotonic()
        if self._first is None:
            self._first = (signum, now)
            self.count = 1
            return GRACEFUL
        first_signal, first_at = self._first
        if self.count == 1 and signum != first_signal and now - first_at < SAME_REQUEST_WITHIN:
            return DUPLICATE
        self.count += 1
        return AT_ONCE

    @staticmethod
    def name(signum: int) -> str:
        try:
            return signal.Signals(signum).name
        except ValueError:
            return str(signum)
