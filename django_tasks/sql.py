"""Every SQL statement of the queue, in one place, with why each is shaped as it is.

The queue's hot paths are raw SQL because the ORM cannot say ``FOR UPDATE SKIP LOCKED`` inside
an ``UPDATE ... RETURNING`` together with the state-history insert, and because round trips
decide throughput: each statement below is a single round trip that changes the run row *and*
appends its history row (a data-modifying CTE), so the two can never disagree.

Each statement states the move it makes with :func:`_move`, which checks it against
:data:`django_tasks.states.ALLOWED_MOVES` when this module is imported.

All timestamps come from the database's ``clock_timestamp()`` so that one clock orders the
history of a run even when the enqueuing web server and the workers run on different hosts.
"""

from __future__ import annotations

from .states import StateName, StateType, check_transition

__all__ = [
    "CLAIM",
    "ENQUEUE",
    "FINISH",
    "HAND_BACK",
    "LISTEN",
    "NOTIFY_CHANNEL",
    "REFUSE",
    "START",
]

RUN = "django_tasks_taskrun"
STATE = "django_tasks_taskrunstate"

#: One channel for every queue, the payload names the queue. Notifications with the same payload
#: in one transaction are merged by PostgreSQL, so a bulk enqueue wakes workers once.
NOTIFY_CHANNEL = "django_tasks"
LISTEN = f"LISTEN {NOTIFY_CHANNEL}"


def _move(source: StateType | None, target: StateType) -> str:
    return str(check_transition(source, target).value)


_SCHEDULED = _move(None, StateType.SCHEDULED)

#: Runs in the caller's own connection and transaction (transactional enqueue): if the caller
#: rolls back, the run, its history and the NOTIFY (which PostgreSQL sends only at commit) are
#: gone together.
ENQUEUE = f"""
WITH run AS (
    INSERT INTO {RUN} (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        parameters, parameters_preview, traceback, created, updated
    ) VALUES (
        %(id)s, %(task_key)s, %(task_name)s, %(name)s, 'delay', %(queue)s, %(priority)s,
        %(tags)s::jsonb, '{_SCHEDULED}', %(state_name)s, '',
        COALESCE(%(scheduled_time)s, clock_timestamp()), 0, '',
        %(parameters)s, %(parameters_preview)s::jsonb, '', clock_timestamp(), clock_timestamp()
    )
    RETURNING id, created
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_SCHEDULED}', %(state_name)s, '', created, '' FROM run
)
SELECT pg_notify('{NOTIFY_CHANNEL}', %(queue)s)
"""

_PENDING = _move(StateType.SCHEDULED, StateType.PENDING)

#: The claim, from one queue (a worker asks its queues in their order of preference).
#: ``ready`` is MATERIALIZED so the locking subquery runs exactly once (a plain
#: ``IN (subquery)`` may be re-evaluated by the planner and lock more rows than it returns).
#: Its WHERE and ORDER BY match the partial index ``django_tasks_ready_idx`` column for column
#: (``queue = x`` then ``priority DESC, scheduled_time``), so PostgreSQL reads the index in
#: order and stops after ``limit`` rows: the cost depends neither on finished history nor on
#: the backlog. (``queue = ANY(...)`` would force a sort of every ready row.) SKIP LOCKED lets
#: any number of workers claim at once without waiting on each other; the final ORDER BY
#: hands the batch to the worker in priority order (RETURNING has no order of its own).
CLAIM = f"""
WITH ready AS MATERIALIZED (
    SELECT id FROM {RUN}
    WHERE state_type = 'SCHEDULED' AND queue = %(queue)s
      AND scheduled_time <= clock_timestamp()
    ORDER BY priority DESC, scheduled_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {RUN} AS r
    SET state_type = '{_PENDING}', state_name = '{StateName.PENDING}', state_message = '',
        worker = %(worker)s, updated = clock_timestamp()
    WHERE r.id IN (SELECT id FROM ready)
    RETURNING r.id, r.task_key, r.task_name, r.parameters, r.priority, r.scheduled_time,
              r.updated
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_PENDING}', '{StateName.PENDING}', '', updated, %(worker)s FROM claimed
)
SELECT id, task_key, task_name, parameters FROM claimed ORDER BY priority DESC, scheduled_time
"""

_RUNNING = _move(StateType.PENDING, StateType.RUNNING)

#: PENDING -> RUNNING, only if this worker still holds the run (the WHERE makes a lost or
#: cancelled run a no-op: zero rows back means "do not execute").
START = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_RUNNING}', state_name = '{StateName.RUNNING}',
        attempts = attempts + 1, started = clock_timestamp(), updated = clock_timestamp()
    WHERE id = %(id)s AND state_type = '{StateType.PENDING.value}' AND worker = %(worker)s
    RETURNING id, started
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, '{_RUNNING}', '{StateName.RUNNING}', '', started, %(worker)s FROM run
RETURNING run_id
"""

_move(StateType.RUNNING, StateType.COMPLETED)
_move(StateType.RUNNING, StateType.FAILED)

#: RUNNING -> COMPLETED or FAILED with the signed result (or pickled exception), its preview
#: and the traceback, in one statement with the history row.
FINISH = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = %(type)s, state_name = %(name)s, state_message = %(message)s,
        result = %(result)s, result_preview = %(result_preview)s::jsonb,
        traceback = %(traceback)s, finished = clock_timestamp(), updated = clock_timestamp()
    WHERE id = %(id)s AND state_type = '{StateType.RUNNING.value}' AND worker = %(worker)s
    RETURNING id, finished
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, %(type)s, %(name)s, %(message)s, finished, %(worker)s FROM run
RETURNING run_id
"""

_REFUSED = _move(StateType.PENDING, StateType.FAILED)

#: PENDING -> FAILED for a run this worker cannot start: unknown task key, bad signature, a
#: payload that does not unpickle. The worker goes on with the next run.
REFUSE = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_REFUSED}', state_name = '{StateName.FAILED}', state_message = %(message)s,
        finished = clock_timestamp(), updated = clock_timestamp()
    WHERE id = %(id)s AND state_type = '{StateType.PENDING.value}' AND worker = %(worker)s
    RETURNING id, finished
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, '{_REFUSED}', '{StateName.FAILED}', %(message)s, finished, %(worker)s FROM run
"""

_HANDED_BACK = _move(StateType.PENDING, StateType.SCHEDULED)

#: PENDING -> SCHEDULED for claimed runs a stopping worker will not start, so another worker
#: takes them at once instead of waiting for a rescue.
HAND_BACK = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_HANDED_BACK}', state_name = '{StateName.SCHEDULED}',
        state_message = 'Handed back by a stopping worker.', worker = '',
        updated = clock_timestamp()
    WHERE id = ANY(%(ids)s) AND state_type = '{StateType.PENDING.value}' AND worker = %(worker)s
    RETURNING id, updated, queue
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_HANDED_BACK}', '{StateName.SCHEDULED}', 'Handed back by a stopping worker.',
           updated, %(worker)s FROM run
)
SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM (SELECT DISTINCT queue FROM run) AS queues
"""
