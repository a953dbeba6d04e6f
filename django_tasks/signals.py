"""Django signals of a run's life, for code that reacts to runs (alerts, metrics, audit).

Every signal is sent with ``sender`` = the :class:`~django_tasks.tasks.Task` (``None`` where
the process does not know the task: a run rescued from a lost worker) and ``run_id``.

- ``run_enqueued``: a background run was written by ``.delay()`` (in the caller's
  transaction: use ``transaction.on_commit`` in the receiver to act only if it commits).
- ``run_started``: the function of a run is about to be called (inline, submitted or in a
  worker), with ``attempt``.
- ``run_retried``: an attempt failed and another follows, with ``attempt`` and ``delay``.
- ``run_finished``: a run reached a final state, with ``state`` (a
  :class:`~django_tasks.futures.State`).
- ``run_crashed``: a worker found runs of a lost worker, with ``retried`` (True when the
  run goes back into the topic).

Receivers run in the process and thread that made the change; one that raises is logged and
does not stop the run (``send_robust``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

__all__ = [
    "run_crashed",
    "run_enqueued",
    "run_finished",
    "run_retried",
    "run_started",
    "send",
]

logger = logging.getLogger("django_tasks.signals")

run_enqueued = Signal()
run_started = Signal()
run_retried = Signal()
run_finished = Signal()
run_crashed = Signal()


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send robustly: a receiver that raises is logged, never propagated into a run."""
    if not signal.receivers:
        return
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("Receiver %r of a django_tasks signal raised: %r", receiver, result)
