"""Autovacuum settings of the tables every run churns (issue 25, the soak).

Each run inserts a row in ``django_tasks_taskrun``, updates it twice or more (PENDING ->
RUNNING -> a final state: none of these updates is HOT, as the state is in the partial
indexes' predicates) and writes three or more rows in ``django_tasks_taskrunstate``; the
purge later deletes them all. PostgreSQL's defaults vacuum a table once a fifth of it is dead,
at a throttled pace (``autovacuum_vacuum_cost_delay`` 2 ms per 200 cost units): measured on a
30-minute soak at 11,500 runs/s with the purge keeping about three minutes of runs, the run
and history tables grew from 1.2 to 13.6 GB and the ready index from 28 to 234 MB while the
row counts stayed flat - autovacuum could not finish a pass before the next minute's dead rows
doubled it, and every claim and purge batch worked on ever larger files.

These tables therefore carry their own storage parameters (PostgreSQL's other tables and the
server's settings are untouched):

* ``autovacuum_vacuum_cost_delay = 0``: a vacuum of these tables is not throttled; it reads
  what the workers just wrote, mostly from shared buffers;
* ``autovacuum_vacuum_scale_factor = 0.01`` with ``autovacuum_vacuum_threshold = 10000``:
  vacuumed once 1% of the table (and at least 10,000 rows) is dead - with ten million runs of
  history, after 100,000 dead rows instead of 2,000,000;
* ``autovacuum_vacuum_insert_scale_factor = 0.01``: inserted rows are vacuumed soon too, so
  that the visibility map lets the dashboard's counts read the indexes alone;
* ``autovacuum_analyze_scale_factor = 0.02``: the planner's statistics follow the churn.

An operator may change them (``ALTER TABLE ... SET/RESET``); migrating backwards resets them.
"""

from django.db import migrations

TABLES = (
    "django_tasks_taskrun",
    "django_tasks_taskrunstate",
    "django_tasks_taskrundependency",
    "django_tasks_taskrunlog",
    "django_tasks_resultrecord",
    "django_tasks_artifact",
)

SETTINGS = {
    "autovacuum_vacuum_cost_delay": "0",
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "10000",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_analyze_scale_factor": "0.02",
}


def _set(table: str) -> str:
    options = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    return f"ALTER TABLE {table} SET ({options})"


def _reset(table: str) -> str:
    return f"ALTER TABLE {table} RESET ({', '.join(SETTINGS)})"


class Migration(migrations.Migration):
    dependencies = [("django_tasks", "0025_readable_times")]

    operations = [
        migrations.RunSQL(
            sql=[_set(table) for table in TABLES],
            reverse_sql=[_reset(table) for table in TABLES],
        )
    ]
