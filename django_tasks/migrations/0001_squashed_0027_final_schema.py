"""The schema of migrations 0001 to 0027 in one step, for new installs.

A fresh ``migrate`` used to replay 27 migrations, re-creating ``django_tasks_enqueue()`` six
times and ``django_tasks_admit()`` three times on the way. This migration creates the final
state directly: the eleven tables with their final columns, indexes and constraints, then the
PL/pgSQL functions and triggers in their latest versions and the tables' storage parameters.

How it relates to the old files (which stay, unchanged):

* ``replaces`` lists 0001..0027. Django uses this migration only on a database where none of
  them is applied; a database that has applied some of them (an existing install) goes on
  through the old files, and once all 27 are applied this one counts as applied too. Applying
  it records 0001..0027 as applied as well, so a later ``migrate django_tasks 0025`` (or any
  other old name) still works: Django then reads the old files again.
* 0028 (a non-atomic ``CREATE INDEX CONCURRENTLY``) stays a migration of its own; it depends on
  0027, which Django points at this migration when it is used.
* The tables' columns are in the order the old migrations left them (a column added later
  comes after the older ones), so that both paths give the same tables, column for column.

Inlined here, in the latest version each one had (the old modules are not imported: they will
be deleted one day):

* ``django_tasks_enqueue(jsonb, bytea)`` and ``django_tasks_tick(...)``: 0016;
* ``django_tasks_release_downstream()`` and its trigger: 0007;
* ``django_tasks_admit(...)`` (seven arguments): 0023;
* ``django_tasks_unpark()``, the ``django_tasks_slot_freed`` trigger, and
  ``django_tasks_limits_changed()`` with its trigger: 0017; the body of
  ``django_tasks_slot_freed()``: 0022;
* ``django_tasks_slotstats_late_run()`` and its trigger: 0027;
* the autovacuum storage parameters of the tables every run churns: 0026;
* the CHECK constraints that keep times readable (0025) and the limits' checks (0024), as the
  models' constraints.

Left out, because they only change rows that a new install does not have: 0004's copy of
``retry_delay`` into ``retry_delays``, 0024's ``mend_rows`` (RunPython), and 0025's moving of
out-of-bounds times before it validates its constraints (here they are plain constraints on
empty tables, so this migration need not be non-atomic as 0025 is). Earlier versions of the
functions, and the DROPs of them, are left out too.
"""

import datetime

import django.db.models.deletion
from django.db import migrations, models

import django_tasks.ids
import django_tasks.json_input
import django_tasks.limits.models

#: Times SQL can write are times Python can read (0025, ``django_tasks.times``).
EARLIEST = datetime.datetime(1, 1, 2, tzinfo=datetime.UTC)
LATEST = datetime.datetime(9999, 12, 30, tzinfo=datetime.UTC)

STATE_TYPES = [
    ("SCHEDULED", "Scheduled"),
    ("PENDING", "Pending"),
    ("RUNNING", "Running"),
    ("COMPLETED", "Completed"),
    ("FAILED", "Failed"),
    ("CRASHED", "Crashed"),
    ("CANCELLING", "Cancelling"),
    ("CANCELLED", "Cancelled"),
]

# The SQL below is the old migrations' text to the byte (the functions' bodies are compared with
# the old path's by tests/test_squashed_migrations.py): some of its lines are longer than 100.
# ruff: noqa: E501

# ``.delay()``'s body (0003: why a PL/pgSQL function; 0009: one JSON document; 0014: the
# django_task document and ``created``; 0015: unique keys and schedule ticks, returns the id;
# 0016: no ON CONFLICT). Version of 0016.
ENQUEUE = """
CREATE FUNCTION django_tasks_enqueue(p jsonb, p_parameters bytea)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    v_created timestamptz := COALESCE((p ->> 'created')::timestamptz, now_);
    v_id uuid := (p ->> 'id')::uuid;
    v_queue text := p ->> 'queue';
    v_unique text := p ->> 'unique_key';
    v_existing uuid;
BEGIN
    IF v_unique IS NOT NULL THEN
        -- Enqueues of one key take turns until this transaction ends; each statement below
        -- sees what the one before committed.
        PERFORM pg_advisory_xact_lock(hashtextextended(v_unique, 15));
        SELECT id INTO v_existing FROM django_tasks_taskrun
        WHERE unique_key = v_unique
          AND (state_type IN ('SCHEDULED', 'PENDING', 'RUNNING', 'CANCELLING')
               OR finished > now_ - make_interval(
                   secs => COALESCE((p ->> 'unique_for')::float8, 0)))
        ORDER BY id DESC LIMIT 1;
        IF FOUND THEN
            RETURN v_existing;
        END IF;
    END IF;
    -- A new run: no state -> SCHEDULED (see django_tasks.states.ALLOWED_MOVES).
    INSERT INTO django_tasks_taskrun (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
        traceback, created, updated, django_task, unique_key, schedule_id, tick
    ) VALUES (
        v_id, p ->> 'task_key', p ->> 'task_name', p ->> 'name', 'delay', v_queue,
        (p ->> 'priority')::integer, p -> 'tags', 'SCHEDULED', 'Scheduled', '',
        COALESCE((p ->> 'scheduled_time')::timestamptz, now_), 0, '',
        (p ->> 'retries')::integer, p -> 'retry_delays', (p ->> 'retry_jitter')::float8,
        (p ->> 'timeout')::float8, p_parameters, p -> 'preview', '', v_created, v_created,
        p -> 'django_task', v_unique, (p ->> 'schedule_id')::bigint,
        (p ->> 'tick')::timestamptz
    );
    INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
    VALUES (v_id, 'SCHEDULED', 'Scheduled', '', v_created, '');
    -- Sent at commit, never for a rolled-back run.
    PERFORM pg_notify('django_tasks', v_queue);
    RETURN v_id;
END
$$;
"""

NO_ENQUEUE = "DROP FUNCTION django_tasks_enqueue(jsonb, bytea);"

# A schedule's tick: compare-and-set of ``next_tick``, then the tick's run (0015). Version of
# 0016 (looks for the tick's run first).
TICK = """
CREATE FUNCTION django_tasks_tick(
    p_schedule bigint, p_expected timestamptz, p_following timestamptz,
    p_run jsonb, p_parameters bytea, p_error text
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_run uuid;
BEGIN
    -- Compare-and-set: only the first worker to try this tick moves next_tick.
    UPDATE django_tasks_schedule SET next_tick = p_following, updated = clock_timestamp()
    WHERE id = p_schedule AND enabled AND next_tick = p_expected;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_run IS NOT NULL THEN
        -- A tick that has its run already (next_tick was put back by hand) gets no other.
        SELECT id INTO v_run FROM django_tasks_taskrun
        WHERE schedule_id = p_schedule AND tick = (p_run ->> 'tick')::timestamptz;
        IF NOT FOUND THEN
            v_run := django_tasks_enqueue(p_run, p_parameters);
        END IF;
        UPDATE django_tasks_schedule
        SET last_tick = (p_run ->> 'tick')::timestamptz, last_run_id = v_run, last_error = ''
        WHERE id = p_schedule;
    ELSIF p_error IS NOT NULL THEN
        UPDATE django_tasks_schedule SET last_error = p_error WHERE id = p_schedule;
    END IF;
    RETURN v_run;
END
$$;
"""

NO_TICK = "DROP FUNCTION django_tasks_tick(bigint, timestamptz, timestamptz, jsonb, bytea, text);"

# Background dependencies: a run's final state releases (or fails) its downstream runs. 0007.
RELEASE_DOWNSTREAM = """
CREATE OR REPLACE FUNCTION django_tasks_release_downstream() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    reason text;
    notified integer;
BEGIN
    -- One upstream fewer to wait for: it completed, or it failed and the edge allows that.
    WITH released AS (
        UPDATE django_tasks_taskrun AS d
        SET blocked = d.blocked - 1, updated = clock_timestamp()
        FROM django_tasks_taskrundependency AS e
        WHERE e.upstream_id = NEW.id AND d.id = e.downstream_id
          AND d.state_type = 'SCHEDULED' AND d.blocked > 0
          AND (NEW.state_type = 'COMPLETED' OR e.allow_failure)
        RETURNING d.blocked, d.queue
    )
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('django_tasks', queue) FROM (
            SELECT DISTINCT queue FROM released WHERE blocked = 0
        ) AS ready
    ) AS notified;
    IF NEW.state_type <> 'COMPLETED' THEN
        -- SCHEDULED -> FAILED: the downstream never starts (see states.ALLOWED_MOVES).
        reason := 'Upstream run ' || NEW.id || ' (' || NEW.task_name || ') ended '
            || NEW.state_name
            || CASE WHEN NEW.state_message <> '' THEN ': ' || NEW.state_message ELSE '' END
            || '; this run did not start.';
        WITH failed AS (
            UPDATE django_tasks_taskrun AS d
            SET state_type = 'FAILED', state_name = 'Failed', state_message = reason,
                blocked = 0, finished = clock_timestamp(), updated = clock_timestamp()
            FROM django_tasks_taskrundependency AS e
            WHERE e.upstream_id = NEW.id AND d.id = e.downstream_id
              AND d.state_type = 'SCHEDULED' AND NOT e.allow_failure
            RETURNING d.id, d.updated
        )
        INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
        SELECT id, 'FAILED', 'Failed', reason, updated, '' FROM failed;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER django_tasks_release_downstream
AFTER UPDATE OF state_type ON django_tasks_taskrun
FOR EACH ROW
WHEN (NEW.has_downstream AND OLD.state_type IS DISTINCT FROM NEW.state_type
      AND NEW.state_type IN ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED'))
EXECUTE FUNCTION django_tasks_release_downstream();
"""

NO_RELEASE_DOWNSTREAM = """
DROP TRIGGER django_tasks_release_downstream ON django_tasks_taskrun;
DROP FUNCTION django_tasks_release_downstream();
"""

# Concurrency and rate limits: which runs of a claimed batch may start (0017; 0021: what the
# worker knows of its batch; 0023: the rate's start clock). Version of 0023.
ADMIT = """
CREATE FUNCTION django_tasks_admit(
    p_ids uuid[], p_counts jsonb, p_rates jsonb, p_marked boolean, p_reserved boolean,
    p_worker text, p_tolerance float8
)
RETURNS TABLE (run_id uuid, wait_until timestamptz)
LANGUAGE plpgsql
-- Held runs are counted through django_tasks_held_idx with a plain index scan (see 0017).
SET enable_bitmapscan = off
AS $$
DECLARE
    r record;
    v_now timestamptz;
    -- Concurrency limits that concern the batch: scope, name, limit, free slots.
    v_scope text[];
    v_name text[];
    v_limit integer[];
    v_held integer[];
    v_free integer[];
    -- Rates that concern the batch: key, seconds between starts, the end of each one's line
    -- and its start clock.
    v_key text[];
    v_every float8[];
    v_line timestamptz[] := '{}';
    v_next timestamptz[] := '{}';
    v_tat timestamptz;
    v_next_start timestamptz;
    v_blocker text;
    v_slot boolean;
    v_on_time boolean;
    v_start timestamptz;
    v_moved integer;
BEGIN
    -- No lock is needed to count slots: a run takes its slot when it is claimed (the claim
    -- marks it holds_slot, committed before this call), and a batch counts every other
    -- held run. Of two batches claimed at once, the one claimed last sees the other whole
    -- and admits at most what is left; this one only gives slots back (runs sent to wait).
    -- Each limit's held runs, the batch's included (see 0021).
    SELECT coalesce(array_agg(l.scope ORDER BY l.scope, l.name), '{}'),
           coalesce(array_agg(l.name ORDER BY l.scope, l.name), '{}'),
           coalesce(array_agg(l.concurrency ORDER BY l.scope, l.name), '{}'),
           coalesce(array_agg((
               SELECT count(*)::integer FROM django_tasks_taskrun AS h
               WHERE h.state_type IN ('PENDING', 'RUNNING', 'CANCELLING') AND h.holds_slot
                 AND CASE WHEN l.scope = 'tag' THEN h.tags ? l.name ELSE h.queue = l.name END
           ) ORDER BY l.scope, l.name), '{}')
    INTO v_scope, v_name, v_limit, v_held
    FROM django_tasks_limit AS l
    WHERE l.concurrency IS NOT NULL AND p_counts ? (l.scope || ':' || l.name);

    SELECT coalesce(array_agg(k.key ORDER BY k.key), '{}'),
           coalesce(array_agg(k.every ORDER BY k.key), '{}')
    INTO v_key, v_every
    FROM (
        SELECT t.key, t.value::float8 AS every FROM jsonb_each_text(p_rates) AS t
        UNION ALL
        SELECT l.scope || ':' || l.name, l.rate_interval FROM django_tasks_limit AS l
        WHERE l.rate_interval IS NOT NULL AND p_counts ? (l.scope || ':' || l.name)
    ) AS k;

    -- When no limit can bind - each run that needs a slot was marked at its claim and no
    -- concurrency limit is exceeded with them, no run holds a reserved start, and for each
    -- rate the line is empty and the start clock allows all of its runs by now - the whole
    -- batch starts: both clocks of every rate move on in one statement (locked in key
    -- order: no deadlock between workers; the time read once they are locked), and nothing
    -- is returned. (A run of the batch that is no longer held is not counted, and admitting
    -- it does nothing: its start finds it is not this worker's.)
    IF NOT p_reserved AND (p_marked OR cardinality(v_scope) = 0) AND NOT EXISTS (
        SELECT 1 FROM generate_subscripts(v_held, 1) AS i WHERE v_held[i] > v_limit[i]
    ) THEN
        WITH wanted AS (
            SELECT k.key, k.every, (p_counts ->> k.key)::integer AS n
            FROM unnest(v_key, v_every) AS k(key, every)
        ), clock AS MATERIALIZED (
            SELECT s.key, s.tat, s.next_start, w.every, w.n
            FROM django_tasks_ratestate AS s JOIN wanted AS w ON w.key = s.key
            ORDER BY s.key
            FOR UPDATE OF s
        ), now AS MATERIALIZED (
            SELECT clock_timestamp() AS t FROM (SELECT count(*) FROM clock) AS locked
        ), fits AS (
            SELECT count(clock.key) = cardinality(v_key) AND coalesce(bool_and(
                       GREATEST(now.t, clock.tat, clock.next_start)
                       + make_interval(secs => clock.every * (clock.n - 1)) <= now.t
                   ), true) AS ok
            FROM now LEFT JOIN clock ON true
        )
        UPDATE django_tasks_ratestate AS s
        SET tat = GREATEST(now.t, clock.tat) + make_interval(secs => clock.every * clock.n),
            next_start = GREATEST(now.t, clock.next_start)
                         + make_interval(secs => clock.every * clock.n)
        FROM clock, fits, now
        WHERE s.key = clock.key AND fits.ok;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        IF v_moved = cardinality(v_key) THEN
            RETURN;
        END IF;
    END IF;

    -- Run by run. The free slots of each limit, held by runs outside this batch (claimed by
    -- other workers included); read again with the limits, which may have changed.
    SELECT coalesce(array_agg(l.scope ORDER BY l.scope, l.name), '{}'),
           coalesce(array_agg(l.name ORDER BY l.scope, l.name), '{}'),
           coalesce(array_agg(l.concurrency ORDER BY l.scope, l.name), '{}'),
           coalesce(array_agg(l.concurrency - (
               SELECT count(*)::integer FROM django_tasks_taskrun AS h
               WHERE h.state_type IN ('PENDING', 'RUNNING', 'CANCELLING') AND h.holds_slot AND NOT (h.id = ANY(p_ids))
                 AND CASE WHEN l.scope = 'tag' THEN h.tags ? l.name ELSE h.queue = l.name END
           ) ORDER BY l.scope, l.name), '{}')
    INTO v_scope, v_name, v_limit, v_free
    FROM django_tasks_limit AS l
    WHERE l.concurrency IS NOT NULL AND p_counts ? (l.scope || ':' || l.name);
    -- Each rate's clocks are read and moved by one batch at a time (a row lock, held to the
    -- end of this call's transaction), and the time is read once they are all locked.
    FOR j IN 1 .. cardinality(v_key) LOOP
        SELECT tat, next_start INTO v_tat, v_next_start
        FROM django_tasks_ratestate WHERE key = v_key[j] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO django_tasks_ratestate (key, tat) VALUES (v_key[j], clock_timestamp())
            ON CONFLICT (key) DO NOTHING;
            SELECT tat, next_start INTO v_tat, v_next_start
            FROM django_tasks_ratestate WHERE key = v_key[j] FOR UPDATE;
        END IF;
        v_line := v_line || v_tat;
        v_next := v_next || v_next_start;
    END LOOP;
    v_now := clock_timestamp();
    FOR r IN
        SELECT t.id, 'task:' || run.task_name AS task_key, run.queue, run.tags, run.rate_slot,
               run.holds_slot
        FROM unnest(p_ids) WITH ORDINALITY AS t(id, ord)
        JOIN django_tasks_taskrun AS run ON run.id = t.id
        WHERE run.state_type = 'PENDING' AND run.worker = p_worker
        ORDER BY t.ord
    LOOP
        v_blocker := NULL;
        v_slot := false;
        FOR i IN 1 .. cardinality(v_scope) LOOP
            IF (CASE WHEN v_scope[i] = 'tag' THEN r.tags ? v_name[i]
                     ELSE r.queue = v_name[i] END) THEN
                v_slot := true;
                IF v_free[i] <= 0 THEN
                    v_blocker := 'Waiting for a slot of ' || v_scope[i] || ' ' || v_name[i]
                        || ' (' || v_limit[i] || ' at once).';
                    EXIT;
                END IF;
            END IF;
        END LOOP;
        IF v_blocker IS NOT NULL THEN
            -- PENDING -> SCHEDULED (states.ALLOWED_MOVES), the attempt given back, out of
            -- the ready index until a slot frees.
            UPDATE django_tasks_taskrun
            SET state_type = 'SCHEDULED', state_name = 'AwaitingConcurrencySlot',
                state_message = v_blocker, worker = '', attempts = attempts - 1, blocked = 1,
                holds_slot = false, updated = v_now
            WHERE id = r.id;
            INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
            VALUES (r.id, 'SCHEDULED', 'AwaitingConcurrencySlot', v_blocker, v_now, p_worker);
            run_id := r.id; wait_until := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- Its rates: on time when each start clock allows a start now (a run that reserved
        -- its start: p_tolerance spacings early) and, for a run that has not reserved one,
        -- each line is empty. Else it reserves the first start after every clock of its
        -- rates: the end of their lines.
        v_on_time := true;
        v_start := v_now;
        FOR j IN 1 .. cardinality(v_key) LOOP
            CONTINUE WHEN NOT (v_key[j] = r.task_key OR v_key[j] = 'queue:' || r.queue
                    OR (v_key[j] LIKE 'tag:%' AND r.tags ? substr(v_key[j], 5)));
            IF r.rate_slot IS NOT NULL THEN
                v_on_time := v_on_time AND coalesce(
                    v_next[j] - make_interval(secs => v_every[j] * p_tolerance) <= v_now, true
                );
            ELSE
                v_on_time := v_on_time AND GREATEST(v_line[j], v_next[j]) <= v_now;
            END IF;
            v_start := GREATEST(v_start, v_line[j], v_next[j]);
        END LOOP;
        IF NOT v_on_time THEN
            FOR j IN 1 .. cardinality(v_key) LOOP
                CONTINUE WHEN NOT (v_key[j] = r.task_key OR v_key[j] = 'queue:' || r.queue
                    OR (v_key[j] LIKE 'tag:%' AND r.tags ? substr(v_key[j], 5)));
                v_line[j] := v_start + make_interval(secs => v_every[j]);
            END LOOP;
            UPDATE django_tasks_taskrun
            SET state_type = 'SCHEDULED', state_name = 'AwaitingRateLimit',
                state_message = 'Rate limit: starts at ' || v_start || '.', worker = '',
                attempts = attempts - 1, scheduled_time = v_start, rate_slot = v_start,
                holds_slot = false, updated = v_now
            WHERE id = r.id;
            INSERT INTO django_tasks_taskrunstate (
                run_id, type, name, message, timestamp, worker
            ) VALUES (
                r.id, 'SCHEDULED', 'AwaitingRateLimit',
                'Rate limit: starts at ' || v_start || '.', v_now, p_worker
            );
            run_id := r.id; wait_until := v_start;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- It starts now: each start clock moves on a spacing; a run that had not reserved a
        -- start takes its place in the line too.
        FOR j IN 1 .. cardinality(v_key) LOOP
            CONTINUE WHEN NOT (v_key[j] = r.task_key OR v_key[j] = 'queue:' || r.queue
                    OR (v_key[j] LIKE 'tag:%' AND r.tags ? substr(v_key[j], 5)));
            v_next[j] := GREATEST(v_now, v_next[j]) + make_interval(secs => v_every[j]);
            IF r.rate_slot IS NULL THEN
                v_line[j] := GREATEST(v_now, v_line[j]) + make_interval(secs => v_every[j]);
            END IF;
        END LOOP;
        FOR i IN 1 .. cardinality(v_scope) LOOP
            IF (CASE WHEN v_scope[i] = 'tag' THEN r.tags ? v_name[i]
                     ELSE r.queue = v_name[i] END) THEN
                v_free[i] := v_free[i] - 1;
            END IF;
        END LOOP;
        -- Claimed before its worker knew of the limit, or started on a reserved rate slot.
        IF (v_slot AND NOT r.holds_slot) OR r.rate_slot IS NOT NULL THEN
            UPDATE django_tasks_taskrun SET holds_slot = v_slot, rate_slot = NULL
            WHERE id = r.id;
        END IF;
    END LOOP;
    FOR j IN 1 .. cardinality(v_key) LOOP
        UPDATE django_tasks_ratestate SET tat = v_line[j], next_start = v_next[j]
        WHERE key = v_key[j];
    END LOOP;
END
$$;
"""

NO_ADMIT = "DROP FUNCTION django_tasks_admit(uuid[], jsonb, jsonb, boolean, boolean, text, float8);"

# Waiting runs get the free slots. 0017.
UNPARK = """
CREATE FUNCTION django_tasks_unpark() RETURNS integer LANGUAGE plpgsql
SET enable_bitmapscan = off AS $$
DECLARE
    n integer;
BEGIN
    WITH waiting AS MATERIALIZED (
        SELECT id, queue, tags, priority FROM django_tasks_taskrun
        WHERE state_type = 'SCHEDULED' AND blocked = 1 AND state_name = 'AwaitingConcurrencySlot'
        ORDER BY priority DESC, id
        FOR UPDATE SKIP LOCKED
    ), lim AS (
        SELECT l.scope, l.name, l.concurrency - (
            SELECT count(*) FROM django_tasks_taskrun AS h
            WHERE h.state_type IN ('PENDING', 'RUNNING', 'CANCELLING') AND h.holds_slot
              AND CASE WHEN l.scope = 'tag' THEN h.tags ? l.name ELSE h.queue = l.name END
        ) AS free
        FROM django_tasks_limit AS l WHERE l.concurrency IS NOT NULL
    ), ranked AS (
        SELECT w.id, lim.free, row_number() OVER (
            PARTITION BY lim.scope, lim.name ORDER BY w.priority DESC, w.id
        ) AS place
        FROM waiting AS w JOIN lim
          ON (lim.scope = 'tag' AND w.tags ? lim.name)
          OR (lim.scope = 'queue' AND w.queue = lim.name)
    ), freed AS (
        UPDATE django_tasks_taskrun AS r
        SET blocked = 0, state_name = 'Scheduled', state_message = 'A slot is free.',
            updated = clock_timestamp()
        FROM waiting AS w
        WHERE r.id = w.id AND NOT EXISTS (
            SELECT 1 FROM ranked WHERE ranked.id = w.id AND ranked.place > ranked.free
        )
        RETURNING r.id, r.queue, r.updated
    ), history AS (
        INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
        SELECT id, 'SCHEDULED', 'Scheduled', 'A slot is free.', updated, '' FROM freed
    )
    SELECT count(*) INTO n FROM (
        SELECT pg_notify('django_tasks', queue) FROM (SELECT DISTINCT queue FROM freed) AS q
    ) AS notified;
    RETURN n;
END
$$;
"""

NO_UNPARK = "DROP FUNCTION django_tasks_unpark();"

# A run that held a slot stops being held: release waiting runs. The function's body is 0022's
# (one probe per statement), the trigger 0017's.
SLOT_FREED = """
CREATE FUNCTION django_tasks_slot_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('django_tasks.none_waiting', true)
       IS NOT DISTINCT FROM statement_timestamp()::text THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM django_tasks_taskrun WHERE state_type = 'SCHEDULED' AND blocked = 1 AND state_name = 'AwaitingConcurrencySlot') THEN
        PERFORM django_tasks_unpark();
    ELSE
        PERFORM set_config('django_tasks.none_waiting', statement_timestamp()::text, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER django_tasks_slot_freed
AFTER UPDATE OF state_type ON django_tasks_taskrun
FOR EACH ROW
WHEN (OLD.holds_slot AND OLD.state_type IN ('PENDING', 'RUNNING', 'CANCELLING') AND NEW.state_type NOT IN ('PENDING', 'RUNNING', 'CANCELLING'))
EXECUTE FUNCTION django_tasks_slot_freed();
"""

NO_SLOT_FREED = """
DROP TRIGGER django_tasks_slot_freed ON django_tasks_taskrun;
DROP FUNCTION django_tasks_slot_freed();
"""

# Workers re-read the limits when a row changes. 0017.
LIMITS_CHANGED = """
CREATE FUNCTION django_tasks_limits_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('django_tasks_limits', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER django_tasks_limits_changed
AFTER INSERT OR UPDATE OR DELETE ON django_tasks_limit
FOR EACH STATEMENT EXECUTE FUNCTION django_tasks_limits_changed();
"""

NO_LIMITS_CHANGED = """
DROP TRIGGER django_tasks_limits_changed ON django_tasks_limit;
DROP FUNCTION django_tasks_limits_changed();
"""

# A run's row that arrives late deletes the summary of its slot. 0027.
SLOTSTATS_LATE_RUN = """
CREATE FUNCTION django_tasks_slotstats_late_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7235723704631324532);
    DELETE FROM django_tasks_slotstats WHERE slot = to_timestamp(
        ('x' || left(replace(NEW.id::text, '-', ''), 12))::bit(48)::bigint / 1000 / 1800 * 1800
    );
    RETURN NULL;
END
$$;
CREATE TRIGGER django_tasks_slotstats_late_run AFTER INSERT ON django_tasks_taskrun
FOR EACH ROW WHEN (NEW.created < clock_timestamp() - interval '5 minutes')
EXECUTE FUNCTION django_tasks_slotstats_late_run();
"""

NO_SLOTSTATS_LATE_RUN = """
DROP TRIGGER django_tasks_slotstats_late_run ON django_tasks_taskrun;
DROP FUNCTION django_tasks_slotstats_late_run();
"""

# Autovacuum settings of the tables every run churns (0026, which explains the figures).
CHURNED_TABLES = (
    "django_tasks_taskrun",
    "django_tasks_taskrunstate",
    "django_tasks_taskrundependency",
    "django_tasks_taskrunlog",
    "django_tasks_resultrecord",
    "django_tasks_artifact",
)
AUTOVACUUM = {
    "autovacuum_vacuum_cost_delay": "0",
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "10000",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_analyze_scale_factor": "0.02",
}
_SETTINGS = ", ".join(f"{name} = {value}" for name, value in AUTOVACUUM.items())
SET_AUTOVACUUM = tuple(f"ALTER TABLE {table} SET ({_SETTINGS})" for table in CHURNED_TABLES)
RESET_AUTOVACUUM = tuple(
    f"ALTER TABLE {table} RESET ({', '.join(AUTOVACUUM)})" for table in CHURNED_TABLES
)


def within(field: str) -> models.Q:
    """The CHECK of a time column (0025): between EARLIEST and LATEST."""
    return models.Q((f"{field}__range", (EARLIEST, LATEST)))


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("django_tasks", "0001_initial"),
        ("django_tasks", "0002_workers_retries_timeouts"),
        ("django_tasks", "0003_enqueue_function"),
        ("django_tasks", "0004_retry_delays"),
        ("django_tasks", "0005_dependencies_submitted_runs"),
        ("django_tasks", "0006_result_records"),
        ("django_tasks", "0007_background_dependencies"),
        ("django_tasks", "0008_run_logs"),
        ("django_tasks", "0009_enqueue_one_document"),
        ("django_tasks", "0010_retry_of"),
        ("django_tasks", "0011_crashes"),
        ("django_tasks", "0012_run_permissions"),
        ("django_tasks", "0013_django_task"),
        ("django_tasks", "0014_enqueue_django_task"),
        ("django_tasks", "0015_schedules_unique_runs"),
        ("django_tasks", "0016_enqueue_without_on_conflict"),
        ("django_tasks", "0017_limits"),
        ("django_tasks", "0018_progress"),
        ("django_tasks", "0019_artifacts"),
        ("django_tasks", "0020_partial_fk_indexes"),
        ("django_tasks", "0021_admit_from_the_claim"),
        ("django_tasks", "0022_slot_freed_once_per_statement"),
        ("django_tasks", "0023_rate_start_clock"),
        ("django_tasks", "0024_limit_checks"),
        ("django_tasks", "0025_readable_times"),
        ("django_tasks", "0026_queue_table_autovacuum"),
        ("django_tasks", "0027_slot_stats"),
    ]

    dependencies = []

    operations = [
        # Schedule first, without its last run: the runs point at their schedule, and
        # ``last_run`` (its last column, as in 0015) is added once the runs' table exists.
        migrations.CreateModel(
            name="Schedule",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255, unique=True)),
                (
                    "task_name",
                    models.CharField(
                        help_text="The task's name (@task(name=...)).", max_length=255
                    ),
                ),
                (
                    "cron",
                    models.CharField(
                        blank=True,
                        help_text="Five fields: minute hour day month weekday.",
                        max_length=100,
                    ),
                ),
                (
                    "interval_seconds",
                    models.FloatField(
                        blank=True,
                        help_text="Seconds between ticks (instead of a cron expression).",
                        null=True,
                    ),
                ),
                (
                    "timezone",
                    models.CharField(
                        default="UTC", help_text="For the cron expression.", max_length=64
                    ),
                ),
                (
                    "args",
                    models.JSONField(
                        blank=True,
                        decoder=django_tasks.json_input.BoundedJSONDecoder,
                        default=list,
                        help_text="Positional arguments (JSON).",
                    ),
                ),
                (
                    "kwargs",
                    models.JSONField(
                        blank=True,
                        decoder=django_tasks.json_input.BoundedJSONDecoder,
                        default=dict,
                        help_text="Keyword arguments (JSON).",
                    ),
                ),
                (
                    "queue",
                    models.CharField(
                        blank=True, help_text="Blank: the task's queue.", max_length=100
                    ),
                ),
                (
                    "missed",
                    models.CharField(
                        choices=[
                            ("once", "Run once for all missed ticks"),
                            ("skip", "Skip missed ticks"),
                        ],
                        default="once",
                        max_length=8,
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                (
                    "source",
                    models.CharField(
                        choices=[
                            ("code", "@task(schedule=...)"),
                            ("settings", "DJANGO_TASKS['SCHEDULES']"),
                            ("admin", "Admin"),
                        ],
                        default="admin",
                        editable=False,
                        max_length=8,
                    ),
                ),
                ("next_tick", models.DateTimeField(blank=True, editable=False, null=True)),
                ("last_tick", models.DateTimeField(blank=True, editable=False, null=True)),
                ("last_error", models.TextField(blank=True, editable=False)),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("updated", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["name"],
                "indexes": [
                    models.Index(
                        models.F("next_tick"),
                        condition=models.Q(("enabled", True)),
                        name="django_tasks_due_idx",
                    ),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=within("next_tick"), name="django_tasks_schedule_next_tick"
                    ),
                    models.CheckConstraint(
                        condition=within("last_tick"), name="django_tasks_schedule_last_tick"
                    ),
                ],
            },
        ),
        # The runs, columns in the order 0001..0018 added them.
        migrations.CreateModel(
            name="TaskRun",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=django_tasks.ids.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "task_key",
                    models.CharField(
                        help_text="Hash of the task name and function.", max_length=64
                    ),
                ),
                ("task_name", models.CharField(max_length=255)),
                (
                    "name",
                    models.CharField(
                        blank=True, help_text="The run's display name.", max_length=255
                    ),
                ),
                (
                    "origin",
                    models.CharField(
                        choices=[
                            ("call", "Called inline"),
                            ("submit", "Submitted (.submit/.map)"),
                            ("delay", "Background (.delay)"),
                        ],
                        default="delay",
                        max_length=8,
                    ),
                ),
                ("queue", models.CharField(default="default", max_length=100)),
                (
                    "priority",
                    models.SmallIntegerField(default=0, help_text="Higher runs first (-100..100)."),
                ),
                (
                    "tags",
                    models.JSONField(
                        blank=True, decoder=django_tasks.json_input.BoundedJSONDecoder, default=list
                    ),
                ),
                ("state_type", models.CharField(choices=STATE_TYPES, max_length=16)),
                ("state_name", models.CharField(max_length=32)),
                ("state_message", models.TextField(blank=True)),
                (
                    "scheduled_time",
                    models.DateTimeField(help_text="Not taken by a worker before this time."),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                (
                    "worker",
                    models.CharField(
                        blank=True, help_text="host:pid of the worker.", max_length=255
                    ),
                ),
                ("parameters", models.BinaryField()),
                (
                    "parameters_preview",
                    models.JSONField(
                        blank=True, decoder=django_tasks.json_input.BoundedJSONDecoder, default=dict
                    ),
                ),
                ("result", models.BinaryField(blank=True, null=True)),
                (
                    "result_preview",
                    models.JSONField(
                        blank=True, decoder=django_tasks.json_input.BoundedJSONDecoder, null=True
                    ),
                ),
                ("traceback", models.TextField(blank=True)),
                ("created", models.DateTimeField()),
                ("updated", models.DateTimeField()),
                ("started", models.DateTimeField(blank=True, null=True)),
                ("finished", models.DateTimeField(blank=True, null=True)),
                (
                    "retries",
                    models.PositiveIntegerField(
                        default=0, help_text="Retries allowed after a failure."
                    ),
                ),
                (
                    "timeout",
                    models.FloatField(blank=True, help_text="Seconds a run may take.", null=True),
                ),
                (
                    "retry_delays",
                    models.JSONField(
                        blank=True,
                        decoder=django_tasks.json_input.BoundedJSONDecoder,
                        default=list,
                        help_text="Seconds before each retry; the last one repeats.",
                    ),
                ),
                (
                    "retry_jitter",
                    models.FloatField(
                        blank=True, help_text="Retry delays vary by up to this fraction.", null=True
                    ),
                ),
                (
                    "blocked",
                    models.PositiveIntegerField(
                        db_default=0, help_text="Upstream runs still awaited."
                    ),
                ),
                ("has_downstream", models.BooleanField(db_default=False)),
                (
                    "retry_of",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        help_text="The finished run this one was created to retry.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="retried_by",
                        to="django_tasks.taskrun",
                    ),
                ),
                (
                    "crashes",
                    models.PositiveIntegerField(
                        db_default=0,
                        help_text="Times in a row its worker process died while running it.",
                    ),
                ),
                (
                    "django_task",
                    models.JSONField(
                        blank=True,
                        help_text="django.tasks runs: the Task, JSON values, errors.",
                        null=True,
                    ),
                ),
                ("tick", models.DateTimeField(blank=True, null=True)),
                ("unique_key", models.CharField(blank=True, max_length=255, null=True)),
                (
                    "schedule",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="runs",
                        to="django_tasks.schedule",
                    ),
                ),
                ("holds_slot", models.BooleanField(db_default=False)),
                ("rate_slot", models.DateTimeField(blank=True, null=True)),
                (
                    "progress",
                    models.JSONField(
                        blank=True,
                        decoder=django_tasks.json_input.BoundedJSONDecoder,
                        editable=False,
                        null=True,
                    ),
                ),
            ],
            options={
                "ordering": ["-id"],
                "permissions": [
                    ("retry_taskrun", "Can retry task runs"),
                    ("cancel_taskrun", "Can cancel task runs"),
                ],
                # django_tasks_failed_idx is 0028's (built CONCURRENTLY), not this migration's.
                "indexes": [
                    models.Index(
                        models.F("worker"),
                        condition=models.Q(
                            ("state_type__in", ["PENDING", "RUNNING", "CANCELLING"])
                        ),
                        name="django_tasks_held_idx",
                    ),
                    models.Index(
                        models.F("queue"),
                        models.OrderBy(models.F("priority"), descending=True),
                        models.F("scheduled_time"),
                        condition=models.Q(("blocked", 0), ("state_type", "SCHEDULED")),
                        name="django_tasks_ready_idx",
                    ),
                    models.Index(
                        models.F("unique_key"),
                        condition=models.Q(("unique_key__isnull", False)),
                        name="django_tasks_unique_key_idx",
                    ),
                    models.Index(
                        models.F("priority"),
                        models.F("id"),
                        condition=models.Q(
                            ("blocked", 1),
                            ("state_name", "AwaitingConcurrencySlot"),
                            ("state_type", "SCHEDULED"),
                        ),
                        name="django_tasks_awaiting_slot_idx",
                    ),
                    models.Index(
                        models.F("retry_of"),
                        condition=models.Q(("retry_of__isnull", False)),
                        name="django_tasks_retry_of_idx",
                    ),
                    models.Index(
                        models.F("queue"),
                        models.F("scheduled_time"),
                        condition=models.Q(
                            ("blocked", 0),
                            ("rate_slot__isnull", False),
                            ("state_type", "SCHEDULED"),
                        ),
                        name="django_tasks_reserved_idx",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        models.F("unique_key"),
                        condition=models.Q(
                            ("unique_key__isnull", False),
                            models.Q(
                                ("state_type__in", ["CANCELLED", "COMPLETED", "CRASHED", "FAILED"]),
                                _negated=True,
                            ),
                        ),
                        name="django_tasks_one_live_run_per_key",
                    ),
                    models.UniqueConstraint(
                        models.F("schedule"),
                        models.F("tick"),
                        condition=models.Q(("schedule__isnull", False)),
                        name="django_tasks_one_run_per_tick",
                    ),
                    models.CheckConstraint(
                        condition=within("scheduled_time"), name="django_tasks_scheduled_time"
                    ),
                ],
            },
        ),
        migrations.AddField(
            model_name="schedule",
            name="last_run",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="django_tasks.taskrun",
            ),
        ),
        migrations.CreateModel(
            name="TaskRunState",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("type", models.CharField(choices=STATE_TYPES, max_length=16)),
                ("name", models.CharField(max_length=32)),
                ("message", models.TextField(blank=True)),
                ("timestamp", models.DateTimeField()),
                ("worker", models.CharField(blank=True, max_length=255)),
                (
                    "run",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="states",
                        to="django_tasks.taskrun",
                    ),
                ),
            ],
            options={
                "ordering": ["timestamp", "id"],
                "indexes": [
                    models.Index(fields=["run", "timestamp"], name="django_tasks_state_run_idx")
                ],
            },
        ),
        migrations.CreateModel(
            name="Worker",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "name",
                    models.CharField(
                        help_text="host:pid, as runs name it.", max_length=255, unique=True
                    ),
                ),
                ("host", models.CharField(max_length=255)),
                ("pid", models.IntegerField()),
                (
                    "queues",
                    models.JSONField(
                        decoder=django_tasks.json_input.BoundedJSONDecoder, default=list
                    ),
                ),
                ("concurrency", models.PositiveIntegerField(default=1)),
                ("started", models.DateTimeField()),
                ("last_heartbeat", models.DateTimeField(db_index=True)),
                ("stopped", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-started"],
            },
        ),
        migrations.CreateModel(
            name="TaskRunDependency",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "kind",
                    models.CharField(
                        choices=[("data", "Argument"), ("wait_for", "wait_for")],
                        default="data",
                        max_length=8,
                    ),
                ),
                ("allow_failure", models.BooleanField(default=False)),
                (
                    "downstream",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="upstream_edges",
                        to="django_tasks.taskrun",
                    ),
                ),
                (
                    "upstream",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="downstream_edges",
                        to="django_tasks.taskrun",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("downstream", "upstream"), name="django_tasks_dependency_unique"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ResultRecord",
            fields=[
                ("key", models.CharField(max_length=200, primary_key=True, serialize=False)),
                ("task_key", models.CharField(max_length=64)),
                ("task_name", models.CharField(max_length=255)),
                ("result", models.BinaryField(help_text="Signed pickle, as on runs.")),
                (
                    "result_preview",
                    models.JSONField(
                        blank=True, decoder=django_tasks.json_input.BoundedJSONDecoder, null=True
                    ),
                ),
                ("created", models.DateTimeField()),
                (
                    "expires",
                    models.DateTimeField(blank=True, help_text="Never, when empty.", null=True),
                ),
                (
                    "run",
                    models.ForeignKey(
                        db_constraint=False,
                        help_text="The run that computed the result.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="django_tasks.taskrun",
                    ),
                ),
            ],
            options={
                "ordering": ["-created"],
            },
        ),
        migrations.CreateModel(
            name="TaskRunLog",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("timestamp", models.DateTimeField()),
                ("level", models.PositiveSmallIntegerField()),
                ("logger", models.CharField(max_length=255)),
                ("message", models.TextField()),
                (
                    "run",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="logs",
                        to="django_tasks.taskrun",
                    ),
                ),
            ],
            options={
                "ordering": ["timestamp", "id"],
                "indexes": [
                    models.Index(fields=["run", "timestamp"], name="django_tasks_log_run_idx")
                ],
            },
        ),
        migrations.CreateModel(
            name="Limit",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "scope",
                    models.CharField(
                        choices=[("tag", "Tag"), ("queue", "Queue")], default="tag", max_length=8
                    ),
                ),
                ("name", models.CharField(help_text="The tag or the queue.", max_length=100)),
                (
                    "concurrency",
                    models.PositiveIntegerField(
                        blank=True,
                        help_text="Runs at once, on all workers (blank: no limit).",
                        null=True,
                    ),
                ),
                (
                    "rate",
                    models.CharField(
                        blank=True,
                        help_text=(
                            "Runs started per period: '100/m', '5/s', '1000/h' (blank: no limit)."
                        ),
                        max_length=32,
                        validators=[django_tasks.limits.models._check_rate],
                    ),
                ),
                ("rate_interval", models.FloatField(blank=True, editable=False, null=True)),
                ("updated", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["scope", "name"],
                "constraints": [
                    models.UniqueConstraint(
                        models.F("scope"), models.F("name"), name="django_tasks_one_limit_per_name"
                    ),
                    # 0024: rows SQL can write are rows the model could have written.
                    models.CheckConstraint(
                        condition=models.Q(("scope__in", ("tag", "queue"))),
                        name="django_tasks_limit_scope",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("name", ""), _negated=True),
                        name="django_tasks_limit_name",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("rate", ""), ("rate_interval__isnull", True)),
                            models.Q(
                                models.Q(("rate", ""), _negated=True),
                                ("rate_interval__gte", 1.000000001e-09),
                                ("rate_interval__isnull", False),
                                ("rate_interval__lte", 86400.0),
                            ),
                            _connector="OR",
                        ),
                        name="django_tasks_limit_rate",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="RateState",
            fields=[
                ("key", models.CharField(max_length=120, primary_key=True, serialize=False)),
                ("tat", models.DateTimeField()),
                ("next_start", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="Artifact",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=django_tasks.ids.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "key",
                    models.CharField(
                        blank=True,
                        help_text="Lowercase letters, digits and dashes.",
                        max_length=255,
                    ),
                ),
                (
                    "type",
                    models.CharField(
                        choices=[("markdown", "Markdown"), ("table", "Table"), ("link", "Link")],
                        max_length=16,
                    ),
                ),
                ("data", models.JSONField(decoder=django_tasks.json_input.BoundedJSONDecoder)),
                ("description", models.TextField(blank=True)),
                ("created", models.DateTimeField(auto_now_add=True)),
                (
                    "run",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="artifacts",
                        to="django_tasks.taskrun",
                    ),
                ),
            ],
            options={
                "ordering": ["-created"],
                "indexes": [
                    models.Index(fields=["key", "-created"], name="django_tasks_artifact_key_idx"),
                    models.Index(fields=["run"], name="django_tasks_artifact_run_idx"),
                ],
            },
        ),
        migrations.CreateModel(
            name="SlotStats",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "slot",
                    models.DateTimeField(help_text="The start of the slot (SLOT_SECONDS long)."),
                ),
                ("task_key", models.CharField(max_length=64)),
                ("state_type", models.CharField(max_length=16)),
                ("runs", models.BigIntegerField()),
                (
                    "durations",
                    models.JSONField(
                        default=dict,
                        help_text="Runs by duration bucket (stats.slots.bucket_seconds).",
                    ),
                ),
            ],
            options={
                "default_permissions": (),
                "constraints": [
                    models.UniqueConstraint(
                        fields=("slot", "task_key", "state_type"), name="django_tasks_slotstats_key"
                    )
                ],
            },
        ),
        # What the ORM does not know: storage parameters, functions and triggers.
        migrations.RunSQL(SET_AUTOVACUUM, reverse_sql=RESET_AUTOVACUUM),
        migrations.RunSQL(ENQUEUE, reverse_sql=NO_ENQUEUE),
        migrations.RunSQL(TICK, reverse_sql=NO_TICK),
        migrations.RunSQL(RELEASE_DOWNSTREAM, reverse_sql=NO_RELEASE_DOWNSTREAM),
        migrations.RunSQL(ADMIT, reverse_sql=NO_ADMIT),
        migrations.RunSQL(UNPARK, reverse_sql=NO_UNPARK),
        migrations.RunSQL(SLOT_FREED, reverse_sql=NO_SLOT_FREED),
        migrations.RunSQL(LIMITS_CHANGED, reverse_sql=NO_LIMITS_CHANGED),
        migrations.RunSQL(SLOTSTATS_LATE_RUN, reverse_sql=NO_SLOTSTATS_LATE_RUN),
    ]
