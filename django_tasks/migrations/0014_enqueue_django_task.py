"""``django_tasks_enqueue()`` also writes the run's ``django_task`` document and may be given
its ``created`` time.

A ``django.tasks`` run (django_tasks.backends) used to be written by the function and then
completed by an UPDATE, in a transaction of its own: four round trips in autocommit where
``.delay()`` sends one statement (measured 0.36-0.41 of ``.delay()``'s rate). With both in
the document it is one statement too. ``created`` is given by the backend (the time its
``TaskResult`` shows as ``enqueued_at``); our own runs leave it out and get the database's
clock as before. The body is otherwise 0009's.
"""

import importlib

from django.db import migrations

_V3 = importlib.import_module("django_tasks.migrations.0009_enqueue_one_document")

CREATE_V4 = """
CREATE OR REPLACE FUNCTION django_tasks_enqueue(p jsonb, p_parameters bytea)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    v_created timestamptz := COALESCE((p ->> 'created')::timestamptz, now_);
    v_id uuid := (p ->> 'id')::uuid;
    v_queue text := p ->> 'queue';
BEGIN
    -- A new run: no state -> SCHEDULED (see django_tasks.states.ALLOWED_MOVES).
    INSERT INTO django_tasks_taskrun (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
        traceback, created, updated, django_task
    ) VALUES (
        v_id, p ->> 'task_key', p ->> 'task_name', p ->> 'name', 'delay', v_queue,
        (p ->> 'priority')::integer, p -> 'tags', 'SCHEDULED', 'Scheduled', '',
        COALESCE((p ->> 'scheduled_time')::timestamptz, now_), 0, '',
        (p ->> 'retries')::integer, p -> 'retry_delays', (p ->> 'retry_jitter')::float8,
        (p ->> 'timeout')::float8, p_parameters, p -> 'preview', '', v_created, v_created,
        p -> 'django_task'
    );
    INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
    VALUES (v_id, 'SCHEDULED', 'Scheduled', '', v_created, '');
    -- Sent at commit, never for a rolled-back run.
    PERFORM pg_notify('django_tasks', v_queue);
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("django_tasks", "0013_django_task")]

    operations = [
        migrations.RunSQL(CREATE_V4, reverse_sql=_V3.CREATE_V3),
    ]
