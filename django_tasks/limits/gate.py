"""The worker's side of limits: which claimed runs must ask ``django_tasks_admit()``.

A worker keeps the limits it knows (reloaded on its heartbeat and at once when a limit
changes: a trigger NOTIFYs ``django_tasks_limits``). A claimed batch with no run under a limit
- a tag or a queue with a limit, or a task with ``rate_limit=`` - starts as before, with no
statement more: limits cost nothing where they do not apply. Otherwise one call per batch asks
the database, which alone decides which runs start now; the others went back
to wait (AwaitingConcurrencySlot or AwaitingRateLimit, see migration 0017).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..registry import UnknownTask, registry

if TYPE_CHECKING:
    from ..worker.connection import QueueConnection
    from ..worker.outcomes import ClaimedRun

__all__ = ["Admission", "LimitGate"]

logger = logging.getLogger("django_tasks.limits")

LIMITS = "SELECT scope, name, concurrency IS NOT NULL FROM django_tasks_limit"
#: Returns the runs sent back to wait (those admitted are the others). The arrays travel as
#: one text and two JSON parameters: psycopg's per-element adaptation of a list of 100 UUIDs
#: cost more than the rest of the call (measured 0.25 ms of 0.35 ms for the parameter alone).
ADMIT = """
SELECT run_id, wait_until FROM django_tasks_admit(
    string_to_array(%(ids)s, ',')::uuid[],
    ARRAY(SELECT k FROM jsonb_array_elements_text(%(keys)s::jsonb) WITH ORDINALITY AS t(k, i)
          ORDER BY i),
    ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(%(every)s::jsonb)
          WITH ORDINALITY AS t(e, i) ORDER BY i),
    %(worker)s
)
"""
#: Waiting runs get the slots that are free (and runs whose limit went away are released).
UNPARK = """
SELECT django_tasks_unpark() WHERE EXISTS (
    SELECT 1 FROM django_tasks_taskrun
    WHERE state_type = 'SCHEDULED' AND blocked = 1 AND state_name = 'AwaitingConcurrencySlot'
)
"""


@dataclass(frozen=True)
class Admission:
    """What the database said of a claimed batch."""

    runs: list[ClaimedRun]  # to execute now, in claim order
    refused: int = 0
    #: The starts rates reserved for refused runs (database clock).
    wake_at: tuple[datetime, ...] = ()


@dataclass
class LimitGate:
    tags: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    #: Whether some limit is a concurrency limit: claims then mark the runs that hold a slot.
    concurrency: bool = False
    loaded_at: float = field(default=0.0)

    def reload(self, db: QueueConnection) -> None:
        rows = db.execute(LIMITS, None, give_up_on_stop=True)
        self.tags = frozenset(name for scope, name, _ in rows if scope == "tag")
        self.queues = frozenset(name for scope, name, _ in rows if scope == "queue")
        self.concurrency = any(row[2] for row in rows)
        self.loaded_at = time.monotonic()

    def release_waiting(self, db: QueueConnection) -> None:
        db.execute(UNPARK, None, give_up_on_stop=True)

    def _task_rate(self, run: ClaimedRun) -> float | None:
        try:
            return registry.get(run.task_key).options.rate_interval
        except UnknownTask:
            return None  # the run fails as an unknown task; no limit to apply

    def admit(self, db: QueueConnection, runs: Sequence[ClaimedRun], worker: str) -> Admission:
        ids, keys, every = [], [], []
        for run in runs:
            rate = self._task_rate(run)
            limited = run.queue in self.queues or not self.tags.isdisjoint(run.tags)
            if limited or rate is not None:
                ids.append(run.id)
                keys.append(f"task:{run.task_name}")
                every.append(rate)
        if not ids:
            return Admission(list(runs))
        params = {
            "ids": ",".join(map(str, ids)),
            "keys": json.dumps(keys),
            "every": json.dumps(every),
            "worker": worker,
        }
        rows = db.execute(ADMIT, params, give_up_on_stop=False)
        if not rows:
            return Admission(list(runs))
        refused = {row[0] for row in rows}
        wake = tuple(row[1] for row in rows if row[1] is not None)
        logger.debug("%d claimed run(s) wait for a limit", len(refused))
        return Admission([r for r in runs if r.id not in refused], len(refused), wake)
