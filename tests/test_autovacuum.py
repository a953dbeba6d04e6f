"""The tables every run churns carry their own autovacuum settings (migration 0026).

With PostgreSQL's defaults a 30-minute soak grew the run and history tables from 1.2 to
13.6 GB while their row counts stayed flat (docs/performance.md, "Soak"). The figures that
show the settings at work are the soak's (benchmarks/soak.py); this checks they are there,
and that migrating backwards gives the tables PostgreSQL's defaults again.
"""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from django_tasks.models import TaskRun
from django_tasks.schedules.models import Schedule

pytestmark = pytest.mark.django_db(transaction=True)

tuning = importlib.import_module("django_tasks.migrations.0026_queue_table_autovacuum")


def reloptions() -> dict[str, set[str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, coalesce(reloptions, '{}') FROM pg_class "
            "WHERE relname = ANY(%s) AND relkind = 'r'",
            [list(tuning.TABLES)],
        )
        return {name: set(options) for name, options in cursor.fetchall()}


def per_run_tables() -> set[str]:
    """The run table and every table with rows per run: those whose model points at a run -
    but the schedules, which point at their last run only. A new per-run table must be in
    the migration's list (or a later one's)."""
    per_run = {TaskRun._meta.db_table}
    for model in apps.get_app_config("django_tasks").get_models():
        points_at_runs = any(f.related_model is TaskRun for f in model._meta.fields)
        if points_at_runs and model is not Schedule:
            per_run.add(model._meta.db_table)
    return per_run


def test_each_churned_table_is_vacuumed_unthrottled_once_a_hundredth_of_it_is_dead():
    expected = {
        "autovacuum_vacuum_cost_delay=0",
        "autovacuum_vacuum_scale_factor=0.01",
        "autovacuum_vacuum_threshold=10000",
        "autovacuum_vacuum_insert_scale_factor=0.01",
        "autovacuum_analyze_scale_factor=0.02",
    }
    found = reloptions()
    assert set(found) == set(tuning.TABLES) == per_run_tables()
    assert all(options == expected for options in found.values()), found


def test_migrating_backwards_gives_the_tables_the_servers_defaults_again():
    call_command("migrate", "django_tasks", "0025", verbosity=0)
    try:
        assert reloptions() == {table: set() for table in tuning.TABLES}
    finally:
        call_command("migrate", "django_tasks", verbosity=0)
    assert all(len(options) == 5 for options in reloptions().values())
