"""Rate limits do not burst: every start is judged by the rate's start clock (issue 24).

Until now one clock per rate (``tat``) did two jobs: it gave each run sent to wait the next
free start (its reservation, ``rate_slot``), and it judged the runs that had not reserved one.
A run that had reserved a start was admitted on it whenever it was claimed. Workers claim the
oldest runs first, and the runs never tried were older than the reservations that had come:
while a worker reserved starts for 10,000 runs (seconds of claims), the runs whose reserved
start came meanwhile waited, then started together - 198 in one second for a rate of 50/s,
and 42 for 10/s when the pool that had reserved the starts died and another found them late.

Now a rate has two clocks:

* ``tat``, the end of the line, as before: a run without a reservation starts only when the
  line is empty (else it reserves the start at the end of the line, moving ``tat`` on);
* ``next_start``, the start clock (new): the next start the starts so far allow. Every start
  is judged by it - reserved or not, in the one-step admission too - and moves it a spacing
  on from the later of the clock and now. A run that reserved its start may start
  ``p_tolerance`` spacings early on it (``limits.rates.START_TOLERANCE``), so that a worker a
  few milliseconds late for the reserved start before does not cost it its turn; earlier
  than that, it lost its turn (its start passed while nobody claimed it, and another has
  started since): it reserves the next start after the start clock and the end of the line.

Both clocks are read once the rate's row is locked (the time too: a call that waited for
another admission would otherwise judge its starts by a time before that admission's), so the
admissions of a rate form one sequence in time, each at least a spacing minus the tolerance
after the one before (less the tolerance): with N per second at most N + 1 starts in any
second.
"""

import importlib

from django.db import migrations, models

_0017 = importlib.import_module("django_tasks.migrations.0017_limits")
_0021 = importlib.import_module("django_tasks.migrations.0021_admit_from_the_claim")
HELD = _0017.HELD

#: Whether rate ``j`` applies to run ``r``.
_RATE_OF_RUN = """(v_key[j] = r.task_key OR v_key[j] = 'queue:' || r.queue
                    OR (v_key[j] LIKE 'tag:%' AND r.tags ? substr(v_key[j], 5)))"""

ADMIT = f"""
DROP FUNCTION IF EXISTS django_tasks_admit(uuid[], jsonb, jsonb, boolean, boolean, text);

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
    v_line timestamptz[] := '{{}}';
    v_next timestamptz[] := '{{}}';
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
    SELECT coalesce(array_agg(l.scope ORDER BY l.scope, l.name), '{{}}'),
           coalesce(array_agg(l.name ORDER BY l.scope, l.name), '{{}}'),
           coalesce(array_agg(l.concurrency ORDER BY l.scope, l.name), '{{}}'),
           coalesce(array_agg((
               SELECT count(*)::integer FROM django_tasks_taskrun AS h
               WHERE h.state_type IN {HELD} AND h.holds_slot
                 AND CASE WHEN l.scope = 'tag' THEN h.tags ? l.name ELSE h.queue = l.name END
           ) ORDER BY l.scope, l.name), '{{}}')
    INTO v_scope, v_name, v_limit, v_held
    FROM django_tasks_limit AS l
    WHERE l.concurrency IS NOT NULL AND p_counts ? (l.scope || ':' || l.name);

    SELECT coalesce(array_agg(k.key ORDER BY k.key), '{{}}'),
           coalesce(array_agg(k.every ORDER BY k.key), '{{}}')
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
    SELECT coalesce(array_agg(l.scope ORDER BY l.scope, l.name), '{{}}'),
           coalesce(array_agg(l.name ORDER BY l.scope, l.name), '{{}}'),
           coalesce(array_agg(l.concurrency ORDER BY l.scope, l.name), '{{}}'),
           coalesce(array_agg(l.concurrency - (
               SELECT count(*)::integer FROM django_tasks_taskrun AS h
               WHERE h.state_type IN {HELD} AND h.holds_slot AND NOT (h.id = ANY(p_ids))
                 AND CASE WHEN l.scope = 'tag' THEN h.tags ? l.name ELSE h.queue = l.name END
           ) ORDER BY l.scope, l.name), '{{}}')
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
            CONTINUE WHEN NOT {_RATE_OF_RUN};
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
                CONTINUE WHEN NOT {_RATE_OF_RUN};
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
            CONTINUE WHEN NOT {_RATE_OF_RUN};
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

BACK = (
    "DROP FUNCTION IF EXISTS "
    "django_tasks_admit(uuid[], jsonb, jsonb, boolean, boolean, text, float8);\n" + _0021.ADMIT
)


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks", "0022_slot_freed_once_per_statement"),
    ]

    operations = [
        migrations.AddField(
            model_name="ratestate",
            name="next_start",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="taskrun",
            index=models.Index(
                models.F("queue"),
                models.F("scheduled_time"),
                condition=models.Q(
                    ("blocked", 0), ("rate_slot__isnull", False), ("state_type", "SCHEDULED")
                ),
                name="django_tasks_reserved_idx",
            ),
        ),
        migrations.RunSQL(ADMIT, reverse_sql=BACK),
    ]
