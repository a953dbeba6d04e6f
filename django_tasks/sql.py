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

import functools

from .states import StateName, StateType, check_transition

RUN = "django_tasks_taskrun"
STATE = "django_tasks_taskrunstate"
ARTIFACT = "django_tasks_artifact"
WORKER = "django_tasks_worker"
DEPENDENCY = "django_tasks_taskrundependency"
RESULT = "django_tasks_resultrecord"
LOG = "django_tasks_taskrunlog"

#: One channel for every queue, the payload names the queue. Notifications with the same payload
#: in one transaction are merged by PostgreSQL, so a bulk enqueue wakes workers once.
NOTIFY_CHANNEL = "django_tasks"
#: Cancel requests name the worker that holds the run.
CANCEL_CHANNEL = "django_tasks_cancel"
#: A limit was added, changed or removed (django_tasks.limits).
LIMITS_CHANNEL = "django_tasks_limits"
LISTEN = f"LISTEN {NOTIFY_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {LIMITS_CHANNEL}"


def _move(source: StateType | None, target: StateType) -> str:
    return str(check_transition(source, target).value)


_SCHEDULED = _move(None, StateType.SCHEDULED)

#: Runs in the caller's own connection and transaction (transactional enqueue): if the caller
#: rolls back, the run, its history row and the NOTIFY (which PostgreSQL sends only at commit)
#: are gone together. The body - INSERT of the run, INSERT of its SCHEDULED history row,
#: pg_notify - is a PL/pgSQL function (migrations 0003 and 0009), so that one short statement
#: is sent (prepared, see ``topic._execute_prepared``) and PL/pgSQL caches the plans of the
#: body per session. The run's columns travel as one JSON document: fourteen parameters cost
#: about a tenth of an enqueue.
ENQUEUE = "SELECT django_tasks_enqueue(%(run)s::jsonb, %(parameters)s::bytea)"

#: Bulk enqueue: the same rows as ENQUEUE, a chunk of runs per statement (a larger batch is
#: several of them, pipelined in one transaction: ``topic.enqueue_many``), so a backfill of
#: thousands of runs costs no round trip per run and one NOTIFY. The runs travel as one JSON
#: array of ``[id, name, base64 parameters, preview]``: psycopg adapts four arrays element by
#: element, which cost more than the rest of the enqueue (measured: 33 of 115 us a run).
ENQUEUE_MANY = f"""
WITH item AS (
    SELECT (t.value ->> 0)::uuid AS id, t.value ->> 1 AS name,
           decode(t.value ->> 2, 'base64') AS parameters, t.value -> 3 AS preview
    FROM jsonb_array_elements(%(items)s::jsonb) AS t(value)
), run AS (
    INSERT INTO {RUN} (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout,
        parameters, parameters_preview, traceback, created, updated
    )
    SELECT id, %(task_key)s, %(task_name)s, name, 'delay', %(queue)s, %(priority)s,
        %(tags)s::jsonb, '{_SCHEDULED}', %(state_name)s, '',
        COALESCE(%(scheduled_time)s, clock_timestamp()), 0, '',
        %(retries)s, %(retry_delays)s::jsonb, %(retry_jitter)s, %(timeout)s,
        parameters, preview, '', clock_timestamp(), clock_timestamp()
    FROM item
    RETURNING id, created
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_SCHEDULED}', %(state_name)s, '', created, '' FROM run
)
SELECT pg_notify('{NOTIFY_CHANNEL}', %(queue)s)
"""

_PENDING = _move(StateType.SCHEDULED, StateType.PENDING)

_RUNNING = _move(StateType.PENDING, StateType.RUNNING)
_move(StateType.RUNNING, StateType.COMPLETED)
_move(StateType.RUNNING, StateType.FAILED)

#: Deferred completions (CTEs shared by FLUSH and CLAIM). A worker runs a short run without
#: writing RUNNING first: it keeps the outcome with the times the run started and finished,
#: and writes a batch of them at once - PENDING -> RUNNING -> COMPLETED/FAILED, two history
#: rows per run with their real times - in the same statement and commit as its next claim.
#: Round trips and commits per run then fall to about one per batch, as for a raw SKIP LOCKED
#: consumer. A run still going after a few milliseconds is marked RUNNING at once by the
#: worker's control thread, so what the admin shows is never more than that late.
#: ``r.state_type = 'PENDING' AND r.worker = me`` makes a run cancelled or rescued meanwhile a
#: no-op (its id is not returned). The batch travels as one JSON parameter (much cheaper to
#: send than nine arrays; results as base64, times as seconds since the epoch - a fraction of
#: the cost of ISO strings to make): the worker's journal of outcomes not written
#: yet (:mod:`django_tasks.worker.journal`), which its supervisor writes the same way if the
#: process dies first.
_FLUSH_CTES = f"""
done AS (
    SELECT t.id, to_timestamp(t.started) AS started, to_timestamp(t.finished) AS finished,
           t.type, t.name, t.message, decode(t.result, 'base64') AS result, t.preview,
           t.traceback
    FROM jsonb_to_recordset(%(done)s::jsonb) AS t(
        id uuid, started float8, finished float8, type text, name text, message text,
        result text, preview jsonb, traceback text
    )
), flushed AS (
    UPDATE {RUN} AS r
    SET state_type = done.type, state_name = done.name, state_message = done.message,
        result = done.result, result_preview = done.preview, traceback = done.traceback,
        started = done.started, finished = done.finished, updated = done.finished
    FROM done
    WHERE r.id = done.id AND r.state_type = 'PENDING' AND r.worker = %(worker)s
    RETURNING r.id, r.attempts, done.started, done.finished, done.type, done.name, done.message
), flushed_running AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_RUNNING}',
           CASE WHEN attempts > 1 THEN '{StateName.RETRYING}' ELSE '{StateName.RUNNING}' END,
           '', started, %(worker)s FROM flushed
), flushed_final AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, type, name, message, finished, %(worker)s FROM flushed
)"""

#: Write deferred completions now (before a long run, or when stopping).
FLUSH = f"WITH {_FLUSH_CTES} SELECT id FROM flushed"

#: Enqueue a run with upstream runs (the slow path of ``.delay()``). The upstream rows are
#: locked first (``has_downstream`` set, so the release trigger fires when they end): an
#: upstream that finishes after this is committed releases or fails the new run; one that
#: finished before is counted here, by the caller, from the rows this returns.
LOCK_UPSTREAMS = f"""
UPDATE {RUN} SET has_downstream = true WHERE id = ANY(%(ids)s)
RETURNING id, state_type, state_name, state_message, task_name
"""

_move(StateType.SCHEDULED, StateType.FAILED)

#: The run itself: SCHEDULED and ``blocked`` by the upstreams not completed yet, or FAILED at
#: once when one of them has already failed (SCHEDULED then FAILED, both in its history).
ENQUEUE_DEPENDENT = f"""
WITH run AS (
    INSERT INTO {RUN} (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
        traceback, created, updated, finished, blocked
    ) VALUES (
        %(id)s, %(task_key)s, %(task_name)s, %(name)s, 'delay', %(queue)s, %(priority)s,
        %(tags)s::jsonb, CASE WHEN %(failure)s::text IS NULL THEN 'SCHEDULED' ELSE 'FAILED' END,
        CASE WHEN %(failure)s::text IS NULL THEN 'Scheduled' ELSE 'Failed' END,
        COALESCE(%(failure)s::text, ''),
        COALESCE(%(scheduled_time)s::timestamptz, clock_timestamp()), 0, '',
        %(retries)s, %(retry_delays)s::jsonb, %(retry_jitter)s, %(timeout)s, %(parameters)s,
        %(parameters_preview)s::jsonb, '', clock_timestamp(), clock_timestamp(),
        CASE WHEN %(failure)s::text IS NULL THEN NULL ELSE clock_timestamp() END,
        CASE WHEN %(failure)s::text IS NULL THEN %(blocked)s ELSE 0 END
    )
    RETURNING id, created, state_type, state_message, blocked, queue
), edges AS (
    INSERT INTO {DEPENDENCY} (downstream_id, upstream_id, kind, allow_failure)
    SELECT %(id)s, upstream, kind, allow_failure
    FROM unnest(%(upstreams)s::uuid[], %(kinds)s::text[], %(allow_failures)s::boolean[])
        AS t(upstream, kind, allow_failure)
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_SCHEDULED}', 'Scheduled', '', created, '' FROM run
    UNION ALL
    SELECT id, 'FAILED', 'Failed', state_message, created + interval '1 microsecond', ''
    FROM run WHERE state_type = 'FAILED'
)
SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM run
WHERE state_type = 'SCHEDULED' AND blocked = 0
"""

_PENDING = _move(StateType.SCHEDULED, StateType.PENDING)

#: The claim, from one queue (a worker asks its queues in their order of preference), in the
#: same statement as the flush of the previous batch's deferred completions.
#: ``ready`` is MATERIALIZED so the locking subquery runs exactly once (a plain
#: ``IN (subquery)`` may be re-evaluated by the planner and lock more rows than it returns).
#: Its WHERE and ORDER BY match the partial index ``django_tasks_ready_idx`` column for column
#: (``queue = x`` then ``priority DESC, scheduled_time``), so PostgreSQL reads the index in
#: order and stops after ``limit`` rows: the cost depends neither on finished history nor on
#: the backlog. (``queue = ANY(...)`` would force a sort of every ready row.) Due runs are
#: those scheduled by the statement's start, ``statement_timestamp()``: stable, so it is
#: checked in the index, where ``clock_timestamp()`` (volatile) was checked row by row after
#: reading each row - every run scheduled later (a long queue waiting for its rate's reserved
#: starts) was read at each claim: 4.3 ms for 10,000 of them, 1.2 ms now. SKIP LOCKED lets
#: any number of workers claim at once without waiting on each other; the final ORDER BY
#: hands the batch to the worker in priority order (RETURNING has no order of its own).
#: The attempt is counted here, durably, before the function can run: a run that kills its
#: process has used an attempt like any failure (runs known not to have started get it back).
#: Rows come back tagged: 'claimed' runs, then the ids of 'flushed' completions.
CLAIM = f"""
WITH {{flush}}{{ready}}, claimed AS (
    UPDATE {RUN} AS r
    SET state_type = '{_PENDING}', state_name = '{StateName.PENDING}', state_message = '',
        worker = %(worker)s, attempts = r.attempts + 1, updated = clock_timestamp()
        {{holds_slot}}
    WHERE r.id IN (SELECT id FROM ready)
    RETURNING r.id, r.task_key, r.task_name, r.parameters, r.priority, r.scheduled_time,
              r.updated, r.timeout, r.attempts, r.retries, r.retry_delays, r.retry_jitter, r.name,
              r.tags, r.holds_slot, r.rate_slot IS NOT NULL AS rate_slot
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_PENDING}', '{StateName.PENDING}', '', updated, %(worker)s FROM claimed
), late AS (
    -- Late is a name of the SCHEDULED type, not a move: it records in the history that the
    -- run was taken more than LATE_AFTER seconds after its scheduled time.
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, 'SCHEDULED', '{StateName.LATE}',
           'Taken ' || round(extract(epoch FROM updated - scheduled_time)::numeric, 3)
           || ' s after its scheduled time.', updated - interval '1 microsecond', %(worker)s
    FROM claimed WHERE updated - scheduled_time > make_interval(secs => %(late_after)s)
)
SELECT 'claimed' AS kind, id, task_key, task_name, parameters, timeout, attempts, retries,
       retry_delays, retry_jitter, updated, priority, scheduled_time, name, tags, holds_slot,
       rate_slot
FROM claimed{{flushed}}
ORDER BY kind, priority DESC, scheduled_time
"""

#: What a claim that writes deferred completions adds (:func:`claim` with ``flushes``): the
#: flush CTEs first, and the ids written among the rows returned.
_CLAIM_FLUSH = f"{_FLUSH_CTES}, "
_CLAIM_FLUSHED = """
UNION ALL
SELECT 'flushed', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL
FROM flushed"""

#: Which runs a claim takes (the CTE ``ready``): see :data:`CLAIM`.
_READY = f"""ready AS MATERIALIZED (
    SELECT id FROM {RUN}
    WHERE state_type = 'SCHEDULED' AND blocked = 0 AND queue = %(queue)s
      AND scheduled_time <= statement_timestamp() {{tasks}}
    ORDER BY priority DESC, scheduled_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)"""
#: Claims of a worker that knows of rate limits take first the runs whose reserved start has
#: come (``rate_slot``, see django_tasks.limits), oldest reservation first, whatever their
#: priority, then the others as :data:`_READY` does: runs never tried are older than the
#: reservations, and taking them first would leave a reservation to pass unused while a
#: worker reserves starts for a long queue (the start clock then sends that run to the end of
#: the line, migration 0023). ``django_tasks_reserved_idx`` holds only runs waiting for a
#: reserved start, in this order: a probe that finds nothing costs a few index pages.
_RESERVED = f"""reserved AS MATERIALIZED (
    SELECT id FROM {RUN}
    WHERE state_type = 'SCHEDULED' AND blocked = 0 AND rate_slot IS NOT NULL
      AND queue = %(queue)s AND scheduled_time <= statement_timestamp() {{tasks}}
    ORDER BY scheduled_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)"""
_READY_RESERVED_FIRST = f"""{_RESERVED}, others AS MATERIALIZED (
    SELECT id FROM {RUN}
    WHERE state_type = 'SCHEDULED' AND blocked = 0 AND rate_slot IS NULL AND queue = %(queue)s
      AND scheduled_time <= statement_timestamp() {{tasks}}
    ORDER BY priority DESC, scheduled_time
    LIMIT %(limit)s - (SELECT count(*) FROM reserved)
    FOR UPDATE SKIP LOCKED
), ready AS (
    SELECT id FROM reserved UNION ALL SELECT id FROM others
)"""


#: The same runs in the same order, from a floor on (:mod:`django_tasks.worker.floors`: while
#: a long transaction holds its snapshot, the entries of claimed runs stay in the ready index
#: and a claim from its start walks them all): runs of a higher priority than the floor's, then
#: those of its priority from its time on - where the index is entered directly, past what
#: earlier claims left - then lower priorities, each part limited to what the earlier parts
#: left (a part limited to 0 rows reads nothing).
def _floored(limit: str, rates: str = "") -> str:
    """CTEs ``ahead``, ``at``, ``behind``: up to ``limit`` ready runs from the floor on."""
    ready = f"""SELECT id FROM {RUN}
    WHERE state_type = 'SCHEDULED' AND blocked = 0 AND queue = %(queue)s {rates}
      AND scheduled_time <= statement_timestamp() {{tasks}}"""
    return f"""ahead AS MATERIALIZED (
    {ready} AND priority > %(floor_priority)s
    ORDER BY priority DESC, scheduled_time
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), at AS MATERIALIZED (
    {ready} AND priority = %(floor_priority)s AND scheduled_time >= %(floor_time)s
    ORDER BY scheduled_time
    LIMIT {limit} - (SELECT count(*) FROM ahead)
    FOR UPDATE SKIP LOCKED
), behind AS MATERIALIZED (
    {ready} AND priority < %(floor_priority)s
    ORDER BY priority DESC, scheduled_time
    LIMIT {limit} - (SELECT count(*) FROM ahead) - (SELECT count(*) FROM at)
    FOR UPDATE SKIP LOCKED
)"""


_FROM_FLOOR = "SELECT id FROM ahead UNION ALL SELECT id FROM at UNION ALL SELECT id FROM behind"
_READY_FLOORED = f"{_floored('%(limit)s')}, ready AS ({_FROM_FLOOR})"
_READY_RESERVED_FIRST_FLOORED = _RESERVED + (
    f", {_floored('(%(limit)s - (SELECT count(*) FROM reserved))', 'AND rate_slot IS NULL')}"
    f", ready AS (SELECT id FROM reserved UNION ALL {_FROM_FLOOR})"
)
#: Claims of a worker that knows of concurrency limits (django_tasks.limits) also mark the
#: runs that take a slot of one (``holds_slot``), in the same write: the queues and tags with
#: a concurrency limit, as the worker knows them (``%(slot_queues)s``, ``%(slot_tags)s``), are
#: parameters - an expression per row, not a subquery (a run claimed before its worker knew
#: of a limit is marked by the admission, run by run); without limits the claim reads nothing
#: more.
_HOLDS_SLOT = """, holds_slot = (
            r.queue = ANY(%(slot_queues)s::text[]) OR r.tags ?| %(slot_tags)s::text[]
        )"""
#: Which runs a claim takes, by task key (``%(task_keys)s``, a list): a process with an
#: async lane (django_tasks.worker.async_lane) claims sync runs in its slot and async runs
#: in its lane.
CLAIM_TASKS = {
    "all": "",
    "only": "AND task_key = ANY(%(task_keys)s)",
    "except": "AND task_key <> ALL(%(task_keys)s)",
}


@functools.cache
def claim(
    *,
    limits: bool = False,
    tasks: str = "all",
    rates: bool = False,
    floored: bool = False,
    flushes: bool = True,
) -> str:
    """The claim statement: ``limits`` - the claiming worker knows of concurrency limits, so
    the claim also marks the runs that take a slot (``holds_slot``, in the same write);
    ``tasks`` - a key of :data:`CLAIM_TASKS`; ``rates`` - it knows of rate limits, so the
    claim takes first the runs whose reserved start has come; ``floored`` - it starts from a
    floor (``%(floor_priority)s``, ``%(floor_time)s``; see :func:`_floored`); ``flushes`` -
    it writes deferred completions (``%(done)s``). Without them the flush CTEs are left out:
    PostgreSQL starts every node of a plan, empty or not, and an idle worker's claim - the
    one a NOTIFY wakes, on which a new run's start waits - has none to write (measured:
    0.1-0.15 ms of a 1.3-1.4 ms claim on a 2-core PostgreSQL 15)."""
    ready = {
        (False, False): _READY,
        (False, True): _READY_FLOORED,
        (True, False): _READY_RESERVED_FIRST,
        (True, True): _READY_RESERVED_FIRST_FLOORED,
    }[rates, floored]
    text = CLAIM_TEMPLATE.replace("{ready}", ready)
    text = text.replace("{flush}", _CLAIM_FLUSH if flushes else "")
    text = text.replace("{flushed}", _CLAIM_FLUSHED if flushes else "")
    text = text.replace("{holds_slot}", _HOLDS_SLOT if limits else "")
    return text.replace("{tasks}", CLAIM_TASKS[tasks])


CLAIM_TEMPLATE = CLAIM
CLAIM = claim()


#: PENDING -> RUNNING, only if this worker still holds the run (the WHERE makes a lost or
#: cancelled run a no-op: zero rows back means "do not execute").
START = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_RUNNING}',
        state_name = CASE WHEN attempts > 1 THEN '{StateName.RETRYING}'
                          ELSE '{StateName.RUNNING}' END,
        started = COALESCE(%(started)s, clock_timestamp()), updated = clock_timestamp()
    WHERE id = %(id)s AND state_type = '{StateType.PENDING.value}' AND worker = %(worker)s
    RETURNING id, started, attempts
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_RUNNING}',
           CASE WHEN attempts > 1 THEN '{StateName.RETRYING}' ELSE '{StateName.RUNNING}' END,
           '', started, %(worker)s FROM run
)
SELECT attempts FROM run
"""

for _source in (StateType.RUNNING, StateType.CANCELLING):
    for _target in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        _move(_source, _target)

#: RUNNING (or CANCELLING) -> COMPLETED, FAILED, CRASHED (the task raised SystemExit or
#: KeyboardInterrupt) or CANCELLED with the signed result (or
#: pickled exception), its preview and the traceback, in one statement with the history row.
#: A run cancelled while it ran may still complete: the work was done, so it says so.
FINISH = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = %(type)s, state_name = %(name)s, state_message = %(message)s,
        result = %(result)s, result_preview = %(result_preview)s::jsonb,
        traceback = %(traceback)s,
        finished = GREATEST(started, COALESCE(%(finished)s, clock_timestamp())),
        updated = clock_timestamp()
    WHERE id = %(id)s AND state_type IN ('RUNNING', 'CANCELLING') AND worker = %(worker)s
    RETURNING id, finished
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, %(type)s, %(name)s, %(message)s, finished, %(worker)s FROM run
RETURNING run_id
"""

_AWAITING_RETRY = _move(StateType.RUNNING, StateType.SCHEDULED)

#: RUNNING -> SCHEDULED (AwaitingRetry): the run failed and its task allows another attempt.
#: The row goes back into the topic with a later ``scheduled_time``; the error stays in the
#: history row's message and in ``traceback``, so every attempt's error is kept. A failure
#: the task raised ends a series of crashes (``crashes`` counts them in a row).
RETRY = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_AWAITING_RETRY}', state_name = '{StateName.AWAITING_RETRY}',
        state_message = %(message)s, traceback = %(traceback)s, worker = '', crashes = 0,
        scheduled_time = clock_timestamp() + make_interval(secs => %(delay)s),
        updated = clock_timestamp()
    WHERE id = %(id)s AND state_type = 'RUNNING' AND worker = %(worker)s
    RETURNING id, updated, queue
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_AWAITING_RETRY}', '{StateName.AWAITING_RETRY}', %(message)s, updated,
           %(worker)s FROM run
)
SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM run
"""

_REFUSED = _move(StateType.PENDING, StateType.FAILED)

#: PENDING (or RUNNING: an async lane writes RUNNING for its whole batch first) -> FAILED for a
#: run this worker could not start or see through: an unknown task key, a task that fails to
#: load, a bad signature, a payload that does not unpickle, an error of the worker itself while
#: it prepared or recorded the run. With the real error's traceback. The worker goes on with
#: the next run. A run cancelled meanwhile (CANCELLING) ends so too: nothing else would end it
#: but its supervisor's kill after CANCEL_GRACE - of the whole process, with every run in it.
REFUSE = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_REFUSED}', state_name = '{StateName.FAILED}', state_message = %(message)s,
        traceback = %(traceback)s, finished = GREATEST(started, clock_timestamp()),
        updated = clock_timestamp()
    WHERE id = %(id)s AND state_type IN ('PENDING', 'RUNNING', 'CANCELLING')
      AND worker = %(worker)s
    RETURNING id, finished
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, '{_REFUSED}', '{StateName.FAILED}', %(message)s, finished, %(worker)s FROM run
RETURNING run_id
"""

_HANDED_BACK = _move(StateType.PENDING, StateType.SCHEDULED)
_DISCARDED_PENDING = _move(StateType.PENDING, StateType.CRASHED)

#: PENDING -> SCHEDULED for claimed runs known not to have started, so another worker takes
#: them at once instead of waiting for a rescue: those of a stopping worker (``ids``), or every
#: one a dead child held besides the run it died running (``ids`` NULL, by its supervisor).
#: The attempt counted at the claim is given back.
#: With ``blame`` the hand-back counts as a crash of each run (its worker process died and
#: nobody else is known to have caused it, or the worker could not admit it): a run handed back
#: so ``MAX_CRASHES`` times in a row ends CRASHED instead of going round for ever.
HAND_BACK = f"""
WITH held AS (
    SELECT r.id, %(blame)s::boolean AND r.crashes + 1 >= %(max_crashes)s AS too_many
    FROM {RUN} AS r
    WHERE r.worker = %(worker)s AND r.state_type = '{StateType.PENDING.value}'
      AND (%(ids)s::uuid[] IS NULL OR r.id = ANY(%(ids)s::uuid[]))
    FOR UPDATE OF r
), run AS (
    UPDATE {RUN} AS r
    SET state_type = CASE WHEN h.too_many THEN '{_DISCARDED_PENDING}' ELSE '{_HANDED_BACK}' END,
        state_name = CASE WHEN h.too_many THEN '{StateName.CRASHED}'
                          ELSE '{StateName.SCHEDULED}' END,
        state_message = %(message)s || CASE WHEN h.too_many
            THEN ' It was handed back so ' || (r.crashes + 1)
                 || ' times in a row (MAX_CRASHES): it is not claimed again.'
            ELSE '' END,
        crashes = r.crashes + CASE WHEN %(blame)s THEN 1 ELSE 0 END,
        worker = CASE WHEN h.too_many THEN r.worker ELSE '' END,
        attempts = CASE WHEN h.too_many THEN r.attempts ELSE GREATEST(r.attempts - 1, 0) END,
        finished = CASE WHEN h.too_many THEN clock_timestamp() END,
        updated = clock_timestamp()
    FROM held AS h WHERE r.id = h.id
    RETURNING r.id, r.updated, r.queue, r.state_type, r.state_name, r.state_message
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, state_type, state_name, state_message, updated, %(worker)s FROM run
)
SELECT id, state_type, pg_notify('{NOTIFY_CHANNEL}', queue) FROM run
"""

# -- workers and their heartbeats -----------------------------------------------------------

#: A worker process announces itself before its first claim, so that every held run names a
#: registered worker. ON CONFLICT: a pid reused on the same host after a crash.
REGISTER_WORKER = f"""
INSERT INTO {WORKER} (name, host, pid, queues, concurrency, started, last_heartbeat, stopped)
VALUES (%(name)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, clock_timestamp(),
        clock_timestamp(), NULL)
ON CONFLICT (name) DO UPDATE
SET queues = EXCLUDED.queues, concurrency = EXCLUDED.concurrency, started = EXCLUDED.started,
    last_heartbeat = EXCLUDED.last_heartbeat, stopped = NULL
"""

HEARTBEAT = f"UPDATE {WORKER} SET last_heartbeat = clock_timestamp() WHERE name = %(name)s"

WORKER_STOPPED = f"UPDATE {WORKER} SET stopped = clock_timestamp() WHERE name = %(name)s"

#: The runs this worker holds that someone asked to cancel (the held-runs index answers it).
CANCEL_REQUESTED = f"""
SELECT id FROM {RUN} WHERE worker = %(worker)s AND state_type = 'CANCELLING'
"""

#: The delay before the retry that follows attempt ``r.attempts``, as
#: :func:`django_tasks.retries.delay_for` computes it in Python: the attempt's entry of
#: ``retry_delays`` (the last one repeating; none means 0), varied by ``retry_jitter``.
RETRY_DELAY = """GREATEST(0, COALESCE(
    (r.retry_delays ->> (LEAST(r.attempts, jsonb_array_length(r.retry_delays)) - 1))::float8, 0
) * (1 + COALESCE(r.retry_jitter, 0) * (2 * random() - 1)))"""

# -- rescue: runs held by workers that are gone ----------------------------------------------

#: A held run is lost when no live worker holds it: its worker stopped, its heartbeat is older
#: than the timeout, or it has no worker row at all. Compared on the database's clock only.
#: A server that started a moment ago counts as a heartbeat of every worker, given the longest
#: backoff of a lost connection on top (``%(backoff)s``): after a restart every worker's last
#: beat is old, and a worker - or a whole pool - that reaches the server first must not take
#: the others, still in their reconnect backoff, for lost (their runs would be counted as
#: crashes, their finished work discarded).
_LOST = f"""
NOT EXISTS (
    SELECT 1 FROM {WORKER} AS w
    WHERE w.name = r.worker AND w.stopped IS NULL
      AND GREATEST(w.last_heartbeat,
                   pg_postmaster_start_time() + make_interval(secs => %(backoff)s))
          > clock_timestamp() - make_interval(secs => %(timeout)s)
)
"""


def _lost_runs(state: StateType, extra: str = "") -> str:
    """The CTE that locks the background runs in ``state`` whose worker is lost."""
    return f"""lost AS (
    SELECT r.id, r.worker{extra} FROM {RUN} AS r
    WHERE r.state_type = '{state.value}' AND r.origin = 'delay' AND {_LOST}
    FOR UPDATE OF r SKIP LOCKED
)"""


def _crash_count(blame: str = "true") -> str:
    """Columns of a ``lost`` CTE for the crash statements. ``blame``: does this death count
    against the run (not when its supervisor killed the process for its own reasons)? Then
    is it the ``MAX_CRASHES``-th in a row, which discards the run? May it be retried
    (retries left, not discarded)?"""
    too_many = f"({blame} AND r.crashes + 1 >= %(max_crashes)s)"
    return f""", {too_many} AS too_many,
    r.attempts <= r.retries AND NOT {too_many} AS retry, r.attempts <= r.retries AS retries_left,
    CASE WHEN {blame} THEN 1 ELSE 0 END AS counts"""


#: Added to the message of a run discarded for crashing its worker too often.
_DISCARDED = """CASE WHEN lost.too_many AND lost.retries_left
    THEN ' Its worker died while running it ' || (r.crashes + 1)
         || ' times in a row (MAX_CRASHES): it is not claimed again.'
    ELSE '' END"""

_RESCUED_PENDING = _move(StateType.PENDING, StateType.SCHEDULED)
_LOST_PENDING = _move(StateType.PENDING, StateType.CRASHED)

#: PENDING runs of a lost worker, whose process is gone without a trace (a supervisor whose
#: child dies hands back exactly what the child had not started, with HAND_BACK): most were
#: never started, so they go back into the topic, keeping the attempt of their claim. Each
#: such loss counts as a crash (the run may have been the one that took the worker down), so
#: a run lost MAX_CRASHES times in a row ends CRASHED instead of looping.
RESCUE_PENDING = f"""
WITH {_lost_runs(StateType.PENDING, _crash_count())}, run AS (
    UPDATE {RUN} AS r
    SET state_type = CASE WHEN lost.too_many THEN '{_LOST_PENDING}' ELSE '{_RESCUED_PENDING}' END,
        state_name = CASE WHEN lost.too_many THEN '{StateName.CRASHED}'
                          ELSE '{StateName.SCHEDULED}' END,
        state_message = 'Rescued: claimed by worker ' || lost.worker || ', which was lost.'
            || CASE WHEN lost.too_many
               THEN ' Its worker was lost while holding it ' || (r.crashes + 1)
                    || ' times in a row (MAX_CRASHES): it is not claimed again.'
               ELSE '' END,
        crashes = r.crashes + lost.counts,
        worker = CASE WHEN lost.too_many THEN r.worker ELSE '' END,
        finished = CASE WHEN lost.too_many THEN clock_timestamp() END,
        updated = clock_timestamp()
    FROM lost WHERE r.id = lost.id
    RETURNING r.id, r.updated, r.queue, r.state_type, r.state_name, r.state_message
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, state_type, state_name, state_message, updated, %(rescuer)s FROM run
)
SELECT id, state_type, pg_notify('{NOTIFY_CHANNEL}', queue) FROM run
"""

_CRASHED = _move(StateType.RUNNING, StateType.CRASHED)
_RETRY_AFTER_CRASH = _move(StateType.CRASHED, StateType.SCHEDULED)


def _crash(lost: str, message: str) -> str:
    """Runs of the CTE ``lost`` whose worker process died -> CRASHED (history names the
    worker), then in the same transaction SCHEDULED/AwaitingRetry when ``retry`` allows, so a
    reader never sees a crashed run as final while its retry is pending. The CRASHED row is
    stamped one microsecond before the retry row so that the history stays strictly ordered.
    A run that died PENDING (a short run whose RUNNING row was still to be written) gets
    that row first, at the time it started."""
    return f"""
WITH {lost}, run AS (
    UPDATE {RUN} AS r
    SET state_type = CASE WHEN lost.retry THEN '{_RETRY_AFTER_CRASH}' ELSE '{_CRASHED}' END,
        state_name = CASE WHEN lost.retry THEN '{StateName.AWAITING_RETRY}'
                          ELSE '{StateName.CRASHED}' END,
        state_message = {message} || {_DISCARDED},
        crashes = r.crashes + lost.counts,
        started = COALESCE(r.started, lost.started),
        scheduled_time = CASE WHEN lost.retry
                              THEN clock_timestamp() + make_interval(secs => {RETRY_DELAY})
                              ELSE r.scheduled_time END,
        worker = CASE WHEN lost.retry THEN '' ELSE r.worker END,
        finished = CASE WHEN lost.retry THEN NULL ELSE clock_timestamp() END,
        updated = clock_timestamp()
    FROM lost WHERE r.id = lost.id
    RETURNING r.id, r.updated, r.queue, r.state_message, r.attempts, lost.worker AS lost_worker,
              lost.retry, lost.was_pending, lost.started
), running AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_RUNNING}',
           CASE WHEN attempts > 1 THEN '{StateName.RETRYING}' ELSE '{StateName.RUNNING}' END,
           '', LEAST(started, updated - interval '2 microseconds'), lost_worker
    FROM run WHERE was_pending
), crashed AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_CRASHED}', '{StateName.CRASHED}', state_message,
           updated - interval '1 microsecond', lost_worker FROM run
), retried AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, '{_RETRY_AFTER_CRASH}', '{StateName.AWAITING_RETRY}',
           'Retrying after the crash.', updated, %(rescuer)s FROM run WHERE retry
)
SELECT id, retry, pg_notify('{NOTIFY_CHANNEL}', queue) FROM run
"""


#: RUNNING runs of a lost worker (its heartbeat stopped, or it died without a supervisor to
#: say more): crashed, retried if ``attempts <= retries`` and not crashed MAX_CRASHES times.
RESCUE_RUNNING = _crash(
    _lost_runs(
        StateType.RUNNING,
        f"{_crash_count()}, false AS was_pending, NULL::timestamptz AS started",
    ),
    "'Worker ' || lost.worker || ' was lost while running this run.'",
)

#: The run a supervisor's child was running when the child died (the child said which, and
#: since when, in shared memory): PENDING or RUNNING, held by that child. With ``blame``, it
#: took its process down - a segfault, ``os._exit()``, the kernel's OOM killer - and the death
#: counts towards MAX_CRASHES; without, the supervisor killed the process (shutdown).
CRASH_HELD = _crash(
    f"""lost AS (
    SELECT r.id, r.worker{_crash_count("%(blame)s::boolean")},
           r.state_type = 'PENDING' AS was_pending,
           -- after its claim, whatever the worker's estimate of the database clock said
           GREATEST(%(started)s::timestamptz, r.updated + interval '1 microsecond') AS started
    FROM {RUN} AS r
    WHERE r.id = %(id)s AND r.worker = %(worker)s AND r.state_type IN ('PENDING', 'RUNNING')
    FOR UPDATE OF r
)""",
    "%(message)s::text",
)

#: The RUNNING runs a supervisor's child held when it died besides those its journal named
#: (``settled``, crashed with CRASH_HELD): the async runs in flight in its lane. With
#: ``blame`` each death counts towards MAX_CRASHES: nobody is known to have taken the
#: process down, so each may have.
CRASH_HELD_WITH = _crash(
    f"""lost AS (
    SELECT r.id, r.worker{_crash_count("%(blame)s::boolean")}, false AS was_pending,
           NULL::timestamptz AS started
    FROM {RUN} AS r
    WHERE r.worker = %(worker)s AND r.state_type = 'RUNNING'
      AND r.id <> ALL(%(settled)s::uuid[])
    FOR UPDATE OF r
)""",
    "%(message)s::text",
)

_CANCELLED_BY_RESCUE = _move(StateType.CANCELLING, StateType.CANCELLED)

#: CANCELLING runs of a lost worker: the cancel asked for has happened.
RESCUE_CANCELLING = f"""
WITH {_lost_runs(StateType.CANCELLING)}, run AS (
    UPDATE {RUN} AS r
    SET state_type = '{_CANCELLED_BY_RESCUE}', state_name = '{StateName.CANCELLED}',
        state_message = 'Cancelled; worker ' || lost.worker || ' stopped while cancelling.',
        finished = clock_timestamp(), updated = clock_timestamp()
    FROM lost WHERE r.id = lost.id
    RETURNING r.id, r.updated, r.state_message
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, '{_CANCELLED_BY_RESCUE}', '{StateName.CANCELLED}', state_message, updated,
       %(rescuer)s FROM run
RETURNING run_id
"""

# -- cancellation ------------------------------------------------------------------------------

_move(StateType.SCHEDULED, StateType.CANCELLED)
_move(StateType.PENDING, StateType.CANCELLED)
_move(StateType.RUNNING, StateType.CANCELLING)

#: Cancel, in the caller's transaction: a run not started yet is CANCELLED at once (a worker
#: holding it PENDING finds it gone at START); a RUNNING run becomes CANCELLING and its worker
#: interrupts it. Returns the new state type, or nothing when the run was already final.
CANCEL = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = CASE WHEN state_type = 'RUNNING' THEN 'CANCELLING' ELSE 'CANCELLED' END,
        state_name = CASE WHEN state_type = 'RUNNING' THEN '{StateName.CANCELLING}'
                          ELSE '{StateName.CANCELLED}' END,
        state_message = %(message)s,
        finished = CASE WHEN state_type = 'RUNNING' THEN NULL ELSE clock_timestamp() END,
        updated = clock_timestamp()
    WHERE id = %(id)s AND state_type IN ('SCHEDULED', 'PENDING', 'RUNNING')
    RETURNING id, state_type, state_name, updated, worker
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, state_type, state_name, %(message)s, updated, '' FROM run
)
SELECT state_type, pg_notify('{CANCEL_CHANNEL}', worker) FROM run
"""

_move(None, StateType.SCHEDULED)

#: "Retry" from the admin, the API or the CLI: a new SCHEDULED run of a finished background
#: run's task, with its parameters, queue, priority and options, linked to it by ``retry_of``.
#: (Inline and submitted runs keep no parameters to run again.)
RETRY_AS_NEW = f"""
WITH old AS (
    SELECT * FROM {RUN}
    WHERE id = %(id)s AND origin = 'delay'
      AND state_type IN ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')
), run AS (
    INSERT INTO {RUN} (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
        traceback, created, updated, retry_of_id
    )
    SELECT %(new_id)s, task_key, task_name, name, 'delay', queue, priority, tags,
           'SCHEDULED', 'Scheduled', 'Retry of run ' || id || '.', clock_timestamp(), 0, '',
           retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
           '', clock_timestamp(), clock_timestamp(), id
    FROM old
    RETURNING id, created, queue, state_message
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT id, 'SCHEDULED', 'Scheduled', state_message, created, '' FROM run
)
SELECT id, pg_notify('{NOTIFY_CHANNEL}', queue) FROM run
"""

# -- supervisor: hard limits -------------------------------------------------------------------

#: Runs of the supervisor's children that overran: past ``timeout + grace`` while RUNNING (the
#: task ignored its timeout) or CANCELLING for longer than the cancel grace. The supervisor
#: kills the child that holds each, then records the outcome with FINISH/RETRY.
OVERDUE = f"""
SELECT id, worker, state_type, attempts, retries, {RETRY_DELAY}, timeout FROM {RUN} AS r
WHERE worker = ANY(%(workers)s) AND (
    (state_type = 'RUNNING' AND timeout IS NOT NULL
     AND started + make_interval(secs => timeout + %(timeout_grace)s) < clock_timestamp())
    OR (state_type = 'CANCELLING'
        AND updated + make_interval(secs => %(cancel_grace)s) < clock_timestamp())
)
"""

# -- retention ---------------------------------------------------------------------------------

#: Delete one batch of finished runs older than the cutoff, with their history, in one
#: statement. ``created < cutoff`` is implied by ``finished < cutoff`` and lets the
#: (state_type, created) index bound the scan; batches keep each transaction short.
PURGE = f"""
WITH doomed AS (
    SELECT id FROM {RUN}
    WHERE state_type = ANY(%(states)s)
      AND created < clock_timestamp() - make_interval(secs => %(age)s)
      AND COALESCE(finished, updated) < clock_timestamp() - make_interval(secs => %(age)s)
    LIMIT %(limit)s
), history AS (
    DELETE FROM {STATE} WHERE run_id IN (SELECT id FROM doomed)
), logs AS (
    DELETE FROM {LOG} WHERE run_id IN (SELECT id FROM doomed)
), edges AS (
    DELETE FROM {DEPENDENCY}
    WHERE downstream_id IN (SELECT id FROM doomed) OR upstream_id IN (SELECT id FROM doomed)
), artifacts AS (
    -- An unkeyed artifact goes with its run; a keyed one stays (its key's versions), runless.
    DELETE FROM {ARTIFACT} WHERE run_id IN (SELECT id FROM doomed) AND key = ''
), kept_artifacts AS (
    UPDATE {ARTIFACT} SET run_id = NULL WHERE run_id IN (SELECT id FROM doomed) AND key <> ''
)
DELETE FROM {RUN} WHERE id IN (SELECT id FROM doomed)
"""

#: Worker rows of processes that stopped before the cutoff (live workers are never deleted).
PURGE_WORKERS = f"""
DELETE FROM {WORKER}
WHERE stopped IS NOT NULL AND stopped < clock_timestamp() - make_interval(secs => %(age)s)
"""

# -- inline and submitted runs (django_tasks.recorder) ----------------------------------------

#: A batch of inline/submitted run records in one statement: each run's latest row upserted
#: (the states in between arrive as history rows), history rows, upstream edges and the log
#: lines of runs (of every origin: workers send theirs this way too) inserted.
#: Their moves were checked in Python (``RunRecord.take``). Three JSON parameters whatever the
#: batch size: one round trip and one commit for hundreds of state changes.
RECORD_RUNS = f"""
WITH run_rows AS (
    SELECT * FROM jsonb_to_recordset(%(runs)s::jsonb) AS t(
        id uuid, task_key text, task_name text, name text, origin text, queue text,
        priority integer, tags jsonb, state_type text, state_name text, state_message text,
        attempts integer, parameters_preview jsonb, result_preview jsonb, traceback text,
        result text, progress jsonb,
        created timestamptz, updated timestamptz, started timestamptz, finished timestamptz
    )
), runs AS (
    INSERT INTO {RUN} AS r (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
        result, result_preview, traceback, progress, created, updated, started, finished
    )
    SELECT id, task_key, task_name, name, origin, queue, priority, tags,
           state_type, state_name, state_message, created, attempts, '',
           0, '[]'::jsonb, NULL, NULL, ''::bytea, parameters_preview,
           decode(result, 'base64'), result_preview, traceback, progress, created, updated,
           started, finished
    FROM run_rows
    ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, state_type = EXCLUDED.state_type,
        state_name = EXCLUDED.state_name, state_message = EXCLUDED.state_message,
        attempts = EXCLUDED.attempts, result = EXCLUDED.result,
        result_preview = EXCLUDED.result_preview,
        traceback = EXCLUDED.traceback, updated = EXCLUDED.updated,
        -- written meanwhile by the progress thread (django_tasks.progress), unless final
        progress = COALESCE(EXCLUDED.progress, r.progress),
        started = EXCLUDED.started, finished = EXCLUDED.finished
), history AS (
    INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
    SELECT run_id, type, name, message, timestamp, ''
    FROM jsonb_to_recordset(%(states)s::jsonb) AS t(
        run_id uuid, type text, name text, message text, timestamp timestamptz
    )
), edges AS (
    INSERT INTO {DEPENDENCY} (downstream_id, upstream_id, kind, allow_failure)
    SELECT downstream, upstream, kind, allow_failure
    FROM jsonb_to_recordset(%(edges)s::jsonb) AS t(
        downstream uuid, upstream uuid, kind text, allow_failure boolean
    )
    ON CONFLICT DO NOTHING
), logs AS (
    INSERT INTO {LOG} (run_id, timestamp, level, logger, message)
    SELECT run_id, timestamp, level, logger, message
    FROM jsonb_to_recordset(%(logs)s::jsonb) AS t(
        run_id uuid, timestamp timestamptz, level integer, logger text, message text
    )
)
SELECT count(*) FROM run_rows
"""

# -- result records (django_tasks.caching) ------------------------------------------------------

#: Runs with the same cache key take turns: the first computes, the others then find its
#: record. A session-level lock (released explicitly, or with the connection if the process
#: dies), or a transaction-level one when the caller is inside a transaction, so that the lock
#: is held until the record it guards is committed.
CACHE_LOCK = "SELECT pg_advisory_lock(hashtextextended(%(key)s, 7))"
CACHE_LOCK_XACT = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 7))"
CACHE_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%(key)s, 7))"

CACHE_LOOKUP = f"""
SELECT result, result_preview::text, run_id, task_key FROM {RESULT}
WHERE key = %(key)s AND (expires IS NULL OR expires > clock_timestamp())
"""

#: A new record, or a fresher one (refresh_cache, or the old one expired).
CACHE_STORE = f"""
INSERT INTO {RESULT} (key, task_key, task_name, run_id, result, result_preview, created, expires)
VALUES (%(key)s, %(task_key)s, %(task_name)s, %(run_id)s, %(result)s, %(preview)s::jsonb,
        clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(expiration)s::float8))
ON CONFLICT (key) DO UPDATE
SET task_key = EXCLUDED.task_key, task_name = EXCLUDED.task_name, run_id = EXCLUDED.run_id,
    result = EXCLUDED.result, result_preview = EXCLUDED.result_preview,
    created = EXCLUDED.created, expires = EXCLUDED.expires
"""

_CACHED = _move(StateType.PENDING, StateType.COMPLETED)

#: PENDING -> COMPLETED (Cached) for a background run whose key found a record: the function
#: is not called; the run gets the record's result.
CACHE_HIT = f"""
WITH run AS (
    UPDATE {RUN}
    SET state_type = '{_CACHED}', state_name = '{StateName.CACHED}',
        state_message = %(message)s, result = %(result)s,
        result_preview = %(preview)s::jsonb,
        finished = clock_timestamp(), updated = clock_timestamp()
    WHERE id = %(id)s AND state_type = 'PENDING' AND worker = %(worker)s
    RETURNING id, finished
)
INSERT INTO {STATE} (run_id, type, name, message, timestamp, worker)
SELECT id, '{_CACHED}', '{StateName.CACHED}', %(message)s, finished, %(worker)s FROM run
RETURNING run_id
"""
