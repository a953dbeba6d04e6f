"""Summaries of closed 30-minute slots of runs for the long statistics windows
(django_tasks/stats/slots.py), and the trigger that keeps them true when a run's row arrives
late.

A slot is summarised once it has closed (5 minutes after its end, and before the oldest open
transaction began); a run is in a slot by its id, made when the run is created. An inline run
is written only when it ends, and a recorder's batch retried after an outage later still: such
a row arrives in a slot that may be summarised already. The trigger fires only for those rows
(``created`` more than 5 minutes before the insert - one comparison for every other insert)
and deletes the summary of the run's slot, which the next window reads from the runs again.
Its advisory lock is the one the summaries take (``slots.LATE_RUN_LOCK``): a summary read
before the late row's commit is stored before the delete, never after it.
"""

from django.db import migrations, models


LATE_RUN = """
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

NO_LATE_RUN = """
DROP TRIGGER django_tasks_slotstats_late_run ON django_tasks_taskrun;
DROP FUNCTION django_tasks_slotstats_late_run();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('django_tasks', '0026_queue_table_autovacuum'),
    ]

    operations = [
        migrations.CreateModel(
            name='SlotStats',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('slot', models.DateTimeField(help_text='The start of the slot (SLOT_SECONDS long).')),
                ('task_key', models.CharField(max_length=64)),
                ('state_type', models.CharField(max_length=16)),
                ('runs', models.BigIntegerField()),
                ('durations', models.JSONField(default=dict, help_text='Runs by duration bucket (stats.slots.bucket_seconds).')),
            ],
            options={
                'default_permissions': (),
                'constraints': [models.UniqueConstraint(fields=('slot', 'task_key', 'state_type'), name='django_tasks_slotstats_key')],
            },
        ),
        migrations.RunSQL(LATE_RUN, NO_LATE_RUN),
    ]
