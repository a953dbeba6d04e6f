"""Retry delays per attempt (a list, the last one repeating) and a jitter factor.

Existing runs keep their single delay as a one-item list. ``django_tasks_enqueue()`` gains the
run's display name (``task_run_name``), the delays and the jitter; the old signature is dropped
(see 0003 for why ``.delay()`` is a PL/pgSQL function).
"""

import importlib

from django.db import migrations, models

CREATE_V1 = importlib.import_module("django_tasks.migrations.0003_enqueue_function").CREATE

DROP_V1 = """
DROP FUNCTION IF EXISTS django_tasks_enqueue(
    uuid, text, text, text, integer, jsonb, timestamptz, integer, float8, float8, bytea, jsonb
);
"""

CREATE_V2 = """
CREATE OR REPLACE FUNCTION django_tasks_enqueue(
    p_id uuid, p_task_key text, p_task_name text, p_name text, p_queue text, p_priority integer,
    p_tags jsonb, p_scheduled_time timestamptz, p_retries integer, p_retry_delays jsonb,
    p_retry_jitter float8, p_timeout float8, p_parameters bytea, p_preview jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
BEGIN
    -- A new run: no state -> SCHEDULED (see django_tasks.states.ALLOWED_MOVES).
    INSERT INTO django_tasks_taskrun (
        id, task_key, task_name, name, origin, queue, priority, tags,
        state_type, state_name, state_message, scheduled_time, attempts, worker,
        retries, retry_delays, retry_jitter, timeout, parameters, parameters_preview,
        traceback, created, updated
    ) VALUES (
        p_id, p_task_key, p_task_name, p_name, 'delay', p_queue, p_priority, p_tags,
        'SCHEDULED', 'Scheduled', '', COALESCE(p_scheduled_time, now_), 0, '',
        p_retries, p_retry_delays, p_retry_jitter, p_timeout, p_parameters, p_preview,
        '', now_, now_
    );
    INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
    VALUES (p_id, 'SCHEDULED', 'Scheduled', '', now_, '');
    -- Sent at commit, never for a rolled-back run.
    PERFORM pg_notify('django_tasks', p_queue);
END
$$;
"""

DROP_V2 = """
DROP FUNCTION IF EXISTS django_tasks_enqueue(
    uuid, text, text, text, text, integer, jsonb, timestamptz, integer, jsonb, float8, float8,
    bytea, jsonb
);
"""


class Migration(migrations.Migration):
    dependencies = [("django_tasks", "0003_enqueue_function")]

    operations = [
        migrations.AddField(
            model_name="taskrun",
            name="retry_delays",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Seconds before each retry; the last one repeats.",
            ),
        ),
        migrations.AddField(
            model_name="taskrun",
            name="retry_jitter",
            field=models.FloatField(
                blank=True, help_text="Retry delays vary by up to this fraction.", null=True
            ),
        ),
        migrations.RunSQL(
            "UPDATE django_tasks_taskrun SET retry_delays = jsonb_build_array(retry_delay) "
            "WHERE retry_delay <> 0",
            reverse_sql=(
                "UPDATE django_tasks_taskrun SET retry_delay = "
                "COALESCE((retry_delays ->> 0)::float8, 0)"
            ),
        ),
        migrations.RemoveField(model_name="taskrun", name="retry_delay"),
        migrations.RunSQL(DROP_V1 + CREATE_V2, reverse_sql=DROP_V2 + CREATE_V1),
    ]
