"""The worker's side of limits: which claimed runs must ask ``django_tasks_admit()``.

A worker keeps the limits it knows (reloaded on its heartbeat and at once when a limit
changes: a trigger NOTIFYs ``django_tasks_limits``). A claimed batch with no run under a limit
- a tag or a queue with a limit, or a task with ``rate_limit=`` - starts as before, with no
statement more: limits cost nothing where they do not apply. Otherwise the database alone
decides which runs start now: one statement per batch (:data:`ADMIT_ALL`) when no limit binds,
else ``django_tasks_admit()`` run by run, which sends the others back to wait
(AwaitingConcurrencySlot or AwaitingRateLimit, see migration 0017). A limit row the model
could not have written (:mod:`.validity`) is ignored, with an error logged.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..registry import UnknownTask, registry
from ..storable import shown
from .rates import START_TOLERANCE
from .validity import problem

if TYPE_CHECKING:
    from ..worker.connection import QueueConnection
    from ..worker.outcomes import ClaimedRun

__all__ = ["Admission", "LimitGate"]

logger = logging.getLogger("django_tasks.limits")

#: States in which a run holds its worker - and its slot (the condition of
#: ``django_tasks_held_idx``).
HELD = "('PENDING', 'RUNNING', 'CANCELLING')"
LIMITS = "SELECT scope, name, concurrency, rate_interval FROM django_tasks_limit"
#: A row of :data:`LIMITS`.
LimitRow = tuple[str, str, int | None, float | None]
#: Returns the runs sent back to wait (those admitted are the others). The batch is described
#: by the worker, from what its claim returned (migration 0021): the ids travel as one text
#: (psycopg's per-element adaptation of 100 UUIDs cost more than the rest of the call), the
#: counts per tag, queue and task and the rates of the tasks as JSON.
#: Every start is judged by its rates' start clocks, a run that reserved its start included
#: (migration 0023): ``START_TOLERANCE`` is how early that one may come.
ADMIT = """
SELECT run_id, wait_until FROM django_tasks_admit(
    string_to_array(%(ids)s, ',')::uuid[], %(counts)s::jsonb, %(rates)s::jsonb,
    %(marked)s, %(reserved)s, %(worker)s, %(tolerance)s
)
"""
#: The first step of :data:`ADMIT` as one plain statement (no PL/pgSQL, no ids sent): the
#: whole batch starts when no limit can bind - same rule as migration 0021's first step. It
#: returns true when every rate clock moved on (all runs admitted), false when it wrote
#: nothing (then ADMIT decides run by run).
#: Two differences from 0021's step: each concurrency limit counts its held runs only up to
#: the limit + 1 (enough to know it is exceeded; ``ORDER BY worker`` keeps that count on
#: ``django_tasks_held_idx``, whose dead entries a plain index scan skips once marked - see
#: 0017), and the time is read after the rate clocks are locked: a batch that waited for
#: another worker's admission would otherwise look early against the clock that worker had
#: just moved, and be sent back to wait under a rate far above what runs.
#: Each rate has two clocks (migration 0023): the batch starts when every line is empty and
#: every start clock allows all of its runs now, and both move on by its runs.
ADMIT_ALL = f"""
WITH lim AS MATERIALIZED (
    SELECT l.concurrency, (
        SELECT count(*) FROM (
            SELECT FROM django_tasks_taskrun AS h
            WHERE h.state_type IN {HELD} AND h.holds_slot
              AND CASE WHEN l.scope = 'tag' THEN h.tags ? l.name ELSE h.queue = l.name END
            ORDER BY h.worker
            LIMIT l.concurrency::bigint + 1
        ) AS h
    ) AS held
    FROM django_tasks_limit AS l
    WHERE l.concurrency IS NOT NULL AND %(counts)s::jsonb ? (l.scope || ':' || l.name)
), free AS MATERIALIZED (
    SELECT NOT %(reserved)s AND (%(marked)s OR NOT EXISTS (SELECT FROM lim))
           AND NOT EXISTS (SELECT FROM lim WHERE held > concurrency) AS ok
), wanted AS MATERIALIZED (
    SELECT k.key, k.every, (%(counts)s::jsonb ->> k.key)::integer AS n
    FROM (
        SELECT t.key, t.value::float8 FROM jsonb_each_text(%(rates)s::jsonb) AS t
        UNION ALL
        SELECT l.scope || ':' || l.name, l.rate_interval FROM django_tasks_limit AS l
        WHERE l.rate_interval IS NOT NULL AND %(counts)s::jsonb ? (l.scope || ':' || l.name)
    ) AS k (key, every)
), clock AS MATERIALIZED (
    SELECT s.key, s.tat, s.next_start, w.every, w.n
    FROM django_tasks_ratestate AS s JOIN wanted AS w ON w.key = s.key, free
    WHERE free.ok
    ORDER BY s.key
    FOR UPDATE OF s
), now AS MATERIALIZED (
    SELECT clock_timestamp() AS t FROM (SELECT count(*) FROM clock) AS locked
), fits AS MATERIALIZED (
    SELECT count(clock.key) = (SELECT count(*) FROM wanted) AND coalesce(bool_and(
               GREATEST(now.t, clock.tat, clock.next_start)
               + make_interval(secs => clock.every * (clock.n - 1)) <= now.t
           ), true) AS ok
    FROM now LEFT JOIN clock ON true
), moved AS (
    UPDATE django_tasks_ratestate AS s
    SET tat = GREATEST(now.t, clock.tat) + make_interval(secs => clock.every * clock.n),
        next_start = GREATEST(now.t, clock.next_start)
                     + make_interval(secs => clock.every * clock.n)
    FROM clock, fits, now
    WHERE s.key = clock.key AND fits.ok
    RETURNING 1
)
SELECT free.ok AND (SELECT count(*) FROM moved) = (SELECT count(*) FROM wanted) FROM free
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

    runs: list[ClaimedRun]  # to execute now: runs under a rate first, else in claim order
    refused: int = 0
    #: The starts rates reserved for refused runs (database clock).
    wake_at: tuple[datetime, ...] = ()


@dataclass
class LimitGate:
    tags: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    #: The tags and queues with a concurrency limit: claims mark their runs as holding a slot.
    slot_tags: list[str] = field(default_factory=list)
    slot_queues: list[str] = field(default_factory=list)
    #: The tags and queues with a rate limit.
    rate_tags: frozenset[str] = frozenset()
    rate_queues: frozenset[str] = frozenset()
    loaded_at: float = field(default=0.0)
    #: Each task's rate (seconds between starts, or None), by task key: tasks do not change.
    _rates: dict[str, float | None] = field(default_factory=dict)
    #: What is wrong with each limit row ignored at the last reload (logged once).
    ignored: dict[tuple[str, str], str] = field(default_factory=dict)

    def reload(self, db: QueueConnection) -> None:
        rows = self._usable(db.execute(LIMITS, None, give_up_on_stop=True))
        self.tags = frozenset(name for scope, name, _, _ in rows if scope == "tag")
        self.queues = frozenset(name for scope, name, _, _ in rows if scope == "queue")
        self.slot_tags = sorted(
            name for scope, name, slots, _ in rows if scope == "tag" and slots is not None
        )
        self.slot_queues = sorted(
            name for scope, name, slots, _ in rows if scope == "queue" and slots is not None
        )
        self.rate_tags = frozenset(
            name for scope, name, _, every in rows if scope == "tag" and every is not None
        )
        self.rate_queues = frozenset(
            name for scope, name, _, every in rows if scope == "queue" and every is not None
        )
        self.loaded_at = time.monotonic()

    def _usable(self, rows: list[LimitRow]) -> list[LimitRow]:
        """The rows of limits the worker can apply. A row the model could not have written
        (:mod:`.validity`: SQL past the constraints) is ignored - its runs start as if it did
        not exist - with an error logged once: every admission that read it would fail, and
        with it the batch that holds one of its runs."""
        usable: list[LimitRow] = []
        ignored: dict[tuple[str, str], str] = {}
        for scope, name, concurrency, every in rows:
            wrong = problem(scope, name, concurrency, every)
            if wrong is None:
                usable.append((scope, name, concurrency, every))
                continue
            ignored[scope, name] = wrong
            if self.ignored.get((scope, name)) != wrong:
                logger.error(
                    "The limit on %s %s is ignored: %s. Set it again (the admin, the API or "
                    "`manage.py taskruns limits set`) or remove it.",
                    shown(scope),
                    shown(name),
                    wrong,
                )
        self.ignored = ignored
        return usable

    @property
    def concurrency(self) -> bool:
        """Whether some limit is a concurrency limit: claims then mark the runs that hold a
        slot (:data:`django_tasks.sql.claim`)."""
        return bool(self.slot_tags or self.slot_queues)

    @property
    def rates(self) -> bool:
        """Whether some run may wait for a rate - a tag or a queue with a rate limit, or a
        task of this process with ``rate_limit=``: claims then take first the runs whose
        reserved start has come (:data:`django_tasks.sql.claim`)."""
        return bool(self.rate_tags or self.rate_queues) or self._a_task_has_a_rate

    @functools.cached_property
    def _a_task_has_a_rate(self) -> bool:
        # Tasks do not change while the process runs (registered when apps load).
        return any(task.options.rate_interval is not None for task in registry.all())

    def concerns(self, run: ClaimedRun) -> bool:
        """Whether a limit applies to ``run``: its task's rate, or a limit on its queue or on
        one of its tags. The other runs of a claimed batch start whatever the admission."""
        return (
            self._task_rate(run.task_key) is not None
            or run.queue in self.queues
            or not self.tags.isdisjoint(run.tags)
        )

    def _under_a_rate(self, run: ClaimedRun) -> bool:
        return (
            self._task_rate(run.task_key) is not None
            or run.queue in self.rate_queues
            or not self.rate_tags.isdisjoint(run.tags)
        )

    def release_waiting(self, db: QueueConnection) -> None:
        db.execute(UNPARK, None, give_up_on_stop=True)

    def _task_rate(self, task_key: str) -> float | None:
        """Seconds between starts of the task's runs (its ``rate_limit``), cached per key."""
        try:
            return self._rates[task_key]
        except KeyError:
            pass
        try:
            rate = registry.get(task_key).options.rate_interval
        except UnknownTask:
            return None  # the run fails as an unknown task; no limit to apply
        self._rates[task_key] = rate
        return rate

    def admit(self, db: QueueConnection, runs: Sequence[ClaimedRun], worker: str) -> Admission:
        limited: list[ClaimedRun] = []
        # Runs of a batch are mostly alike: they are counted by kind, the keys made per kind.
        kinds: Counter[tuple[str, str, str, tuple[str, ...]]] = Counter()
        marked, reserved = True, False
        for run in runs:
            if not self.concerns(run):
                continue
            limited.append(run)
            kinds[run.task_key, run.task_name, run.queue, run.tags] += 1
            marked = marked and run.holds_slot
            reserved = reserved or run.rate_slot
        if not limited:
            return Admission(list(runs))
        # Counted only for the limits this gate applies: the database reads the limits the
        # counts name, so an ignored row (``_usable``) is never read.
        counts: Counter[str] = Counter()
        rates: dict[str, float] = {}
        tags, queues = self.tags, self.queues
        for (task_key, task_name, queue, run_tags), n in kinds.items():
            if queue in queues:
                counts[f"queue:{queue}"] += n
            for tag in run_tags:
                if tag in tags:
                    counts[f"tag:{tag}"] += n
            rate = self._task_rate(task_key)
            if rate is not None:
                rates[f"task:{task_name}"] = rate
                counts[f"task:{task_name}"] += n
        params: dict[str, object] = {
            "counts": json.dumps(counts),
            "rates": json.dumps(rates),
            "marked": marked,
            "reserved": reserved,
        }
        if db.execute(ADMIT_ALL, params, give_up_on_stop=False)[0][0]:
            return Admission(self._rated_first(runs))
        params.update(
            ids=",".join(str(run.id) for run in limited), worker=worker, tolerance=START_TOLERANCE
        )
        rows = db.execute(ADMIT, params, give_up_on_stop=False)
        if not rows:
            return Admission(self._rated_first(runs))
        refused = {row[0] for row in rows}
        wake = tuple(row[1] for row in rows if row[1] is not None)
        logger.debug("%d claimed run(s) wait for a limit", len(refused))
        admitted = self._rated_first([r for r in runs if r.id not in refused])
        return Admission(admitted, len(refused), wake)

    def _rated_first(self, runs: Sequence[ClaimedRun]) -> list[ClaimedRun]:
        """The runs under a rate first: their start clocks counted them as starting now, and
        a run behind others of the batch would start as much later as those take (starts
        the clock judged a spacing apart could then fall together)."""
        return sorted(runs, key=lambda run: not self._under_a_rate(run))
