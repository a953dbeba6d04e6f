"""Maintenance every worker runs in its own control thread: rescue of runs held by lost workers.

Rescue belongs to the workers themselves, not to a queued job (which would wait behind the
backlog it is meant to unblock). Any number of workers may rescue at once: the statements lock
the runs they change with SKIP LOCKED.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import sql
from ..conf import task_settings
from ..signals import run_crashed, send
from ..states import StateType
from .connection import MAX_BACKOFF, QueueConnection

__all__ = ["Rescued", "rescue"]

logger = logging.getLogger("django_tasks.worker")


@dataclass(frozen=True)
class Rescued:
    handed_back: int
    retried: int
    crashed: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.handed_back + self.retried + self.crashed + self.cancelled


def rescue(db: QueueConnection, *, rescuer: str, heartbeat_timeout: float) -> Rescued:
    """Free every run held by a worker that stopped or whose heartbeat is too old.

    Not while ``db`` has just got the database back after losing it (a restart, a failover,
    a pooler that could not log in): every other worker lost it as well and has not beaten
    since, so each would look lost, and the runs it is running would be taken from it and
    counted as crashes. The rescuer waits one heartbeat timeout, plus the longest backoff of
    a lost connection, for them to come back first. A rescuer that never lost the database -
    a pool started while it came back - is held back by the statements themselves: a server
    that started less than that long ago counts as a heartbeat of every worker
    (``sql._LOST``)."""
    if db.recovering(heartbeat_timeout + MAX_BACKOFF):
        return Rescued(0, 0, 0, 0)
    params = {
        "timeout": heartbeat_timeout,
        "backoff": MAX_BACKOFF,
        "rescuer": rescuer,
        "max_crashes": task_settings().MAX_CRASHES,
    }
    pending = db.execute(sql.RESCUE_PENDING, params, give_up_on_stop=True)
    running = db.execute(sql.RESCUE_RUNNING, params, give_up_on_stop=True)
    cancelling = db.execute(sql.RESCUE_CANCELLING, params, give_up_on_stop=True)
    lost_pending = sum(1 for row in pending if row[1] == StateType.CRASHED)
    result = Rescued(
        handed_back=len(pending) - lost_pending,
        retried=sum(1 for row in running if row[1]),
        crashed=lost_pending + sum(1 for row in running if not row[1]),
        cancelled=len(cancelling),
    )
    for row in running:
        send(run_crashed, None, run_id=row[0], retried=bool(row[1]))
    for row in pending:
        if row[1] == StateType.CRASHED:
            send(run_crashed, None, run_id=row[0], retried=False)
    if result.total:
        logger.warning(
            "Rescued runs of lost workers: %d handed back, %d retried, %d crashed, %d cancelled",
            result.handed_back,
            result.retried,
            result.crashed,
            result.cancelled,
        )
    return result
