"""``django_tasks_admit()`` takes what the worker knows of its batch, from the claim.

Limits that do not bind cost a drain of no-op runs 12-17 % (goal: 10 %). Most of it was this
function's fixed cost - eight statements, one of them reading the batch back to count its
tags and queues - paid by every batch. The worker already has each claimed run's queue, tags,
task, ``holds_slot`` and ``rate_slot`` (the claim returns them), so it sends the counts:

* ``p_counts``: runs of the batch per ``tag:<name>``, ``queue:<name>`` and ``task:<name>``;
* ``p_rates``: seconds between starts of each rate-limited task of the batch
  (``task:<name>``: its ``rate_limit``);
* ``p_marked``: every run of the batch was marked ``holds_slot`` by its claim;
* ``p_reserved``: some run of the batch starts on a reserved rate slot.

When no limit can bind, two statements decide: one reads the concurrency limits with the runs
that hold their slots (the batch's marked runs among them: no comparison with its ids), one
moves every rate clock on, only if all fit; nothing is returned.
Otherwise the rules of 0017 apply run by run, unchanged.
"""

import importlib

from django.db import migrations

_0017 = importlib.import_module("django_tasks.migrations.0017_limits")
HELD = _0017.HELD

ADMIT = f"""
DROP FUNCTION IF EXISTS django_tasks_admit(uuid[], text[], float8[], text);

CREATE FUNCTION django_tasks_admit(
    p_ids uuid[], p_counts jsonb, p_rates jsonb, p_marked boolean, p_reserved boolean,
    p_worker text
)
RETURNS TABLE (run_id uuid, wait_until timestamptz)
LANGUAGE plpgsql
-- Held runs are counted through django_tasks_held_idx with a plain index scan (see 0017).
SET enable_bitmapscan = off
AS $$
DECLARE
    r record;
    v_now timestamptz := clock_timestamp();
    -- Concurrency limits that concern the batch: scope, name, limit, free slots.
    v_scope text[];
    v_name text[];
    v_limit integer[];
    v_held integer[];
    v_free integer[];
    -- Rates that concern the batch: key, seconds between starts, next start.
    v_key text[];
    v_every float8[];
    v_next timestamptz[] := '{{}}';
    v_tat timestamptz;
    v_blocker text;
    v_slot boolean;
    v_start timestamptz;
    v_moved integer;
BEGIN
    -- No lock is needed to count slots: a run takes its slot when it is claimed (the claim
    -- marks it holds_slot, committed before this call), and a batch counts every other
    -- held run. Of two batches claimed at once, the one claimed last sees the other whole
    -- and admits at most what is left; this one only gives slots back (runs sent to wait).
    -- Each limit's held runs, the batch's included (its runs that need a slot were marked
    -- by their claim, or p_marked is false and the batch goes run by run below).
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
    -- concurrency limit is exceeded with them, each rate allows all of its runs by now, no
    -- run holds a reserved start - the whole batch starts: every rate clock moves on in one
    -- statement (locked in key order: no deadlock between workers), and nothing is
    -- returned. (A run of the batch that is no longer held is not counted, and admitting
    -- it does nothing: its start finds it is not this worker's.)
    IF NOT p_reserved AND (p_marked OR cardinality(v_scope) = 0) AND NOT EXISTS (
        SELECT 1 FROM generate_subscripts(v_held, 1) AS i WHERE v_held[i] > v_limit[i]
    ) THEN
        WITH wanted AS (
            SELECT k.key, k.every, (p_counts ->> k.key)::integer AS n
            FROM unnest(v_key, v_every) AS k(key, every)
        ), clock AS (
            SELECT s.key, GREATEST(v_now, s.tat) AS next, w.every, w.n
            FROM django_tasks_ratestate AS s JOIN wanted AS w ON w.key = s.key
            ORDER BY s.key
            FOR UPDATE OF s
        ), fits AS (
            SELECT count(*) = cardinality(v_key) AND coalesce(bool_and(
                       next + make_interval(secs => every * greatest(n - 1, 0)) <= v_now
                   ), true) AS ok
            FROM clock
        )
        UPDATE django_tasks_ratestate AS s
        SET tat = clock.next + make_interval(secs => clock.every * clock.n)
        FROM clock, fits
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
    -- Each rate's clock is read and moved by one batch at a time (a row lock, held to the
    -- end of this call's transaction).
    FOR j IN 1 .. cardinality(v_key) LOOP
        SELECT tat INTO v_tat FROM django_tasks_ratestate WHERE key = v_key[j] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO django_tasks_ratestate (key, tat) VALUES (v_key[j], v_now)
            ON CONFLICT (key) DO NOTHING;
            SELECT tat INTO v_tat FROM django_tasks_ratestate WHERE key = v_key[j] FOR UPDATE;
        END IF;
        v_next := v_next || GREATEST(v_now, v_tat);
    END LOOP;
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
        IF r.rate_slot IS NULL THEN
            -- The next start all of its rates allow; each of those rates' clocks moves past it.
            v_start := v_now;
            FOR j IN 1 .. cardinality(v_key) LOOP
                IF v_key[j] = r.task_key OR v_key[j] = 'queue:' || r.queue
                   OR (v_key[j] LIKE 'tag:%' AND r.tags ? substr(v_key[j], 5)) THEN
                    v_start := GREATEST(v_start, v_next[j]);
                END IF;
            END LOOP;
            FOR j IN 1 .. cardinality(v_key) LOOP
                IF v_key[j] = r.task_key OR v_key[j] = 'queue:' || r.queue
                   OR (v_key[j] LIKE 'tag:%' AND r.tags ? substr(v_key[j], 5)) THEN
                    v_next[j] := v_start + make_interval(secs => v_every[j]);
                END IF;
            END LOOP;
            IF v_start > v_now THEN
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
        END IF;
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
        INSERT INTO django_tasks_ratestate (key, tat) VALUES (v_key[j], v_next[j])
        ON CONFLICT (key) DO UPDATE SET tat = EXCLUDED.tat;
    END LOOP;
END
$$;
"""

BACK = (
    "DROP FUNCTION IF EXISTS "
    "django_tasks_admit(uuid[], jsonb, jsonb, boolean, boolean, text);\n" + _0017.ADMIT
)


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks", "0020_partial_fk_indexes"),
    ]

    operations = [migrations.RunSQL(ADMIT, reverse_sql=BACK)]
