"""``django_tasks_enqueue()`` inserts without ``ON CONFLICT``; ``django_tasks_tick()`` looks for
the tick's run first.

``ON CONFLICT DO NOTHING`` (0015) makes every insert a speculative one checked against every
unique index: measured about a tenth of the enqueue statement's rate, paid by every
``.delay()`` although only unique and periodic runs can conflict. They need no such insert:
enqueues of a unique key take turns on an advisory lock and look for the key's run first (a
conflict is then possible only under REPEATABLE READ or SERIALIZABLE, where it is the usual
unique violation - the partial unique index still refuses a second live run), and the tick
function, which alone writes ``(schedule, tick)``, now looks for that pair before it enqueues
(the unique constraint still refuses a second run for a tick).
"""

import importlib

from django.db import migrations

_V5 = importlib.import_module("django_tasks.migrations.0015_schedules_unique_runs")

LIVE = _V5.LIVE

CREATE_V6 = f"""
CREATE OR REPLACE FUNCTION django_tasks_enqueue(p jsonb, p_parameters bytea)
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
          AND (state_type IN {LIVE}
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

CREATE_TICK_V2 = """
CREATE OR REPLACE FUNCTION django_tasks_tick(
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


def _or_replace(sql: str) -> str:
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")


# Back to 0015's bodies (its CREATE_V5 begins with a DROP that changed the return type).
REVERSE_V6 = _or_replace(_V5.CREATE_V5.split(";", 1)[1])
REVERSE_TICK_V2 = _or_replace(_V5.CREATE_TICK)


class Migration(migrations.Migration):
    dependencies = [("django_tasks", "0015_schedules_unique_runs")]

    operations = [
        migrations.RunSQL(CREATE_V6, reverse_sql=REVERSE_V6),
        migrations.RunSQL(CREATE_TICK_V2, reverse_sql=REVERSE_TICK_V2),
    ]
