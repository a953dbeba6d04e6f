"""Runs waiting in queues no live worker serves: the worker says so, naming them.

The usual first-hour mistake is a task with ``queue="emails"`` and a plain
``runtaskworker``, which serves ``DEFAULT_QUEUE`` only: the worker idles while the runs wait.
The supervisor looks when it starts and then every :data:`CHECK_EVERY` seconds, and logs a
warning naming each queue with ready runs that neither its pool nor any other live worker
serves, with the ``--queues`` that would serve it. The same warning is repeated only when the
set of queues changes or after :data:`REPEAT_AFTER` seconds.

What it reads stays small however long and many the queues: the distinct queues of the ready
index are found by a skip scan (one index probe per queue, up to :data:`MOST_QUEUES`), the
served ones from the worker table, and of the first :data:`MOST_UNSERVED` unserved queues the
first :data:`COUNT_CAP` entries in the index's order are read, the ready runs among them
counted (so "the oldest" is the oldest of those, and a queue whose first entries are all due
later is not named).
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..storable import shown
from .connection import QueueConnection

__all__ = [
    "CHECK_EVERY",
    "COUNT_CAP",
    "REPEAT_AFTER",
    "IdleQueueWarning",
    "describe",
    "unserved_queues",
]

logger = logging.getLogger("django_tasks.worker")

CHECK_EVERY, REPEAT_AFTER = 60.0, 300.0
#: Queues with runs in the ready index looked at (a skip scan: one index probe each), the
#: unserved ones among them whose runs are looked at, the entries read per queue (ready runs
#: are counted among them: "1,000+"), and the queues named.
MOST_QUEUES, MOST_UNSERVED, COUNT_CAP, MOST_NAMED = 1_000, 100, 1_000, 20

UNSERVED = """
WITH RECURSIVE queues(queue, seen) AS (
    (SELECT queue, 1 FROM django_tasks_taskrun
     WHERE state_type = 'SCHEDULED' AND blocked = 0 ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT r.queue FROM django_tasks_taskrun r
            WHERE r.state_type = 'SCHEDULED' AND r.blocked = 0 AND r.queue > q.queue
            ORDER BY r.queue LIMIT 1), q.seen + 1
    FROM queues q WHERE q.queue IS NOT NULL AND q.seen < %(most_queues)s
), served AS (
    SELECT DISTINCT jsonb_array_elements_text(queues) AS queue FROM django_tasks_worker
    WHERE stopped IS NULL
      AND last_heartbeat > clock_timestamp() - make_interval(secs => %(heartbeat_timeout)s)
), unserved AS (
    SELECT q.queue FROM queues q
    WHERE q.queue IS NOT NULL AND NOT q.queue = ANY(%(mine)s)
      AND NOT EXISTS (SELECT 1 FROM served s WHERE s.queue = q.queue)
    ORDER BY q.queue
    LIMIT %(most_unserved)s
)
SELECT u.queue, ready.n, ready.oldest
FROM unserved u
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE scheduled_time <= now()) AS n,
           min(scheduled_time) FILTER (WHERE scheduled_time <= now()) AS oldest
    FROM (
        SELECT scheduled_time FROM django_tasks_taskrun r
        WHERE r.state_type = 'SCHEDULED' AND r.blocked = 0 AND r.queue = u.queue
        LIMIT %(cap)s
    ) looked
) ready
WHERE ready.n > 0
ORDER BY u.queue
LIMIT %(most_named)s
"""


def unserved_queues(
    db: QueueConnection, mine: Sequence[str], heartbeat_timeout: float
) -> list[tuple[str, int, datetime]]:
    """``(queue, ready runs up to COUNT_CAP, oldest scheduled time)`` of each queue with
    ready runs that neither ``mine`` nor a live worker serves."""
    params: dict[str, Any] = {
        "mine": list(mine),
        "heartbeat_timeout": heartbeat_timeout,
        "cap": COUNT_CAP,
        "most_queues": MOST_QUEUES,
        "most_unserved": MOST_UNSERVED,
        "most_named": MOST_NAMED,
    }
    rows = db.execute(UNSERVED, params, give_up_on_stop=True)
    return [(str(queue), int(n), oldest) for queue, n, oldest in rows]


def describe(rows: list[tuple[str, int, datetime]], mine: Sequence[str], now: float) -> str:
    """The warning: each queue, its ready runs and how long the oldest waited, and the fix."""
    parts = []
    for queue, n, oldest in rows:
        count = f"{COUNT_CAP:,}+" if n >= COUNT_CAP else f"{n:,}"
        waited = max(0, int(now - oldest.timestamp()))
        parts.append(f"{_name(queue)} ({count} ready, the oldest for {_duration(waited)})")
    names = [queue for queue, _, _ in rows]
    option = shlex.quote(",".join([*mine, *names]))
    return (
        f"Runs are waiting in queues that no live worker serves: {'; '.join(parts)}. This "
        f"worker serves {', '.join(mine)}: start it with --queues {option}"
        " (or another worker with the missing queues)."
    )


def _name(queue: str) -> str:
    """A queue's name as is when it is one ``.delay()`` accepts; quoted (cut, escaped) when a
    row written by hand holds something else."""
    return queue if re.fullmatch(r"[\w.:-]{1,100}", queue, flags=re.ASCII) else shown(queue)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


class IdleQueueWarning:
    """The supervisor's periodic look (see the module docstring)."""

    def __init__(self, mine: Sequence[str], heartbeat_timeout: float) -> None:
        self.mine = list(mine)
        self.heartbeat_timeout = heartbeat_timeout
        self.next_check = time.monotonic() + 1.0  # once the pool's own workers registered
        self._said: tuple[frozenset[str], float] | None = None

    def check(self, db: QueueConnection) -> str | None:
        """Look if it is time; log and return the warning when there is one to give."""
        if time.monotonic() < self.next_check:
            return None
        self.next_check = time.monotonic() + CHECK_EVERY
        rows = unserved_queues(db, self.mine, self.heartbeat_timeout)
        if not rows:
            self._said = None
            return None
        names = frozenset(queue for queue, _, _ in rows)
        if self._said is not None:
            said, at = self._said
            if said == names and time.monotonic() - at < REPEAT_AFTER:
                return None
        self._said = (names, time.monotonic())
        message = describe(rows, self.mine, db.db_epoch())
        logger.warning("%s", message)
        return message
