"""The slot-freed trigger looks for waiting runs once per statement, not once per run.

Each run that held a slot fires ``django_tasks_slot_freed()`` when it stops being held; the
function asked whether any run waits for a slot (an index probe through SPI, about 3 µs) for
every such run, though a worker writes a hundred of them in one statement. Now the first run
of a statement that finds no run waiting says so in a transaction-local setting, keyed by
the statement's start, and the other runs of that statement skip the probe. A statement that
finds runs waiting probes (and releases) for each run, as before; a run parked later in the
same statement fires the trigger itself and finds itself waiting. The race this leaves is the
one the per-run probe had (a run parked by another transaction just after the probe): the
workers' heartbeat releases it.
"""

import importlib

from django.db import migrations

_0017 = importlib.import_module("django_tasks.migrations.0017_limits")

SLOT_FREED = f"""
CREATE OR REPLACE FUNCTION django_tasks_slot_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('django_tasks.none_waiting', true)
       IS NOT DISTINCT FROM statement_timestamp()::text THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM django_tasks_taskrun WHERE {_0017.WAITING}) THEN
        PERFORM django_tasks_unpark();
    ELSE
        PERFORM set_config('django_tasks.none_waiting', statement_timestamp()::text, true);
    END IF;
    RETURN NULL;
END
$$;
"""

BACK = f"""
CREATE OR REPLACE FUNCTION django_tasks_slot_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM django_tasks_taskrun WHERE {_0017.WAITING}) THEN
        PERFORM django_tasks_unpark();
    END IF;
    RETURN NULL;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks", "0021_admit_from_the_claim"),
    ]

    operations = [migrations.RunSQL(SLOT_FREED, reverse_sql=BACK)]
