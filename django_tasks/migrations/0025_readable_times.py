"""Times SQL can write are times Python can read (red team of issue 24; ``django_tasks.times``).

A run's ``scheduled_time`` set to ``-infinity`` (to put it first) made every claim of its queue
fail ("cannot subtract infinite timestamps"); set to a year BC, the claim committed and psycopg
could not read the row it returned - the run stayed PENDING, held by a live worker, for ever.
A schedule's ``next_tick`` set to ``-infinity``, ``infinity`` or a year BC stopped the ticker
for every schedule. And each made every page that lists such rows a 500. CHECK constraints
keep these columns between 0001-01-02 and 9999-12-30 (UTC):

* ``django_tasks_scheduled_time`` on runs;
* ``django_tasks_schedule_next_tick`` and ``django_tasks_schedule_last_tick`` on schedules.

A time already outside is moved to the nearest bound first (``-infinity``: due now, which is
what it asked for; ``infinity``: as late as can be), so that the migration never fails on it.

The run table can hold millions of rows: the constraint is added ``NOT VALID`` (a moment's
lock; new rows are checked from then on), the rows outside are mended, and ``VALIDATE
CONSTRAINT`` then reads the table under a lock that lets the workers go on. Hence a
non-atomic migration: each statement commits on its own.

The JSON columns of schedules, runs, results, artifacts and workers are read with the bounded
JSON decoder from now on (state only, no SQL): a value SQL nested thousands deep, or an int of
more digits than Python reads, comes back as its text instead of making the page a 500.
"""

from django.db import migrations, models

import django_tasks.json_input

#: The bounds as this migration knows them (``django_tasks.times`` in 2026-12).
EARLIEST = "'0001-01-02 00:00:00+00'::timestamptz"
LATEST = "'9999-12-30 00:00:00+00'::timestamptz"


def within(field: str) -> models.Q:
    from datetime import UTC, datetime

    bounds = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))
    return models.Q((f"{field}__range", bounds))


def checked(table: str, model: str, name: str, column: str) -> migrations.operations.base.Operation:
    """Add the CHECK ``name`` on ``column`` of ``table``: NOT VALID, mend, validate."""
    return migrations.SeparateDatabaseAndState(
        database_operations=[
            migrations.RunSQL(
                [
                    f"ALTER TABLE {table} ADD CONSTRAINT {name} "
                    f"CHECK ({column} BETWEEN {EARLIEST} AND {LATEST}) NOT VALID",
                    f"UPDATE {table} SET {column} = LEAST(GREATEST({column}, {EARLIEST}), "
                    f"{LATEST}) WHERE NOT ({column} BETWEEN {EARLIEST} AND {LATEST})",
                    f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}",
                ],
                [f"ALTER TABLE {table} DROP CONSTRAINT {name}"],
            )
        ],
        state_operations=[
            migrations.AddConstraint(
                model_name=model,
                constraint=models.CheckConstraint(condition=within(column), name=name),
            )
        ],
    )


ARGS_HELP = "Positional arguments (JSON)."
KWARGS_HELP = "Keyword arguments (JSON)."
DELAYS_HELP = "Seconds before each retry; the last one repeats."


def bounded(model: str, name: str, **options: object) -> migrations.AlterField:
    """``model.name`` as a JSON field read with the bounded decoder (state only: no SQL)."""
    field = models.JSONField(decoder=django_tasks.json_input.BoundedJSONDecoder, **options)
    return migrations.AlterField(model_name=model, name=name, field=field)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_tasks", "0024_limit_checks"),
    ]

    operations = [
        bounded("schedule", "args", blank=True, default=list, help_text=ARGS_HELP),
        bounded("schedule", "kwargs", blank=True, default=dict, help_text=KWARGS_HELP),
        bounded("artifact", "data"),
        bounded("resultrecord", "result_preview", blank=True, null=True),
        bounded("taskrun", "parameters_preview", blank=True, default=dict),
        bounded("taskrun", "progress", blank=True, editable=False, null=True),
        bounded("taskrun", "result_preview", blank=True, null=True),
        bounded("taskrun", "retry_delays", blank=True, default=list, help_text=DELAYS_HELP),
        bounded("taskrun", "tags", blank=True, default=list),
        bounded("worker", "queues", default=list),
        checked(
            "django_tasks_schedule", "schedule", "django_tasks_schedule_next_tick", "next_tick"
        ),
        checked(
            "django_tasks_schedule", "schedule", "django_tasks_schedule_last_tick", "last_tick"
        ),
        checked("django_tasks_taskrun", "taskrun", "django_tasks_scheduled_time", "scheduled_time"),
    ]
