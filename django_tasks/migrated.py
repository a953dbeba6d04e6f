"""Whether the database has what django_tasks needs: "run migrate", not a missing relation.

A project that adds the app and forgets ``manage.py migrate`` (or upgrades it and forgets the
new migrations) would otherwise meet ``function django_tasks_enqueue(jsonb, bytea) does not
exist`` from ``.delay()`` and pages of tracebacks from the worker. Commands check the
migrations when they start (:func:`check_migrated`); enqueueing turns PostgreSQL's "undefined
table/function/column" into :class:`NotMigrated` (:func:`explain_missing_schema`), at no
cost until it happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg.errors
from django.db import ProgrammingError, connections
from django.db.migrations.executor import MigrationExecutor

__all__ = ["NotMigrated", "check_migrated", "explain_missing_schema", "is_missing_schema"]

_MISSING = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedColumn,
)


class NotMigrated(ProgrammingError):
    """The database lacks django_tasks' tables or functions: ``manage.py migrate`` is due."""


def _advice(alias: str) -> str:
    database = "" if alias == "default" else f" --database {alias}"
    return f"run `python manage.py migrate{database}`"


def is_missing_schema(error: BaseException) -> bool:
    """Whether ``error`` (psycopg's, or Django's wrapping it) says a table, function or
    column does not exist."""
    return isinstance(error, _MISSING) or isinstance(error.__cause__, _MISSING)


@contextmanager
def explain_missing_schema(alias: str) -> Iterator[None]:
    """Re-raise "does not exist" errors of the statements inside as :class:`NotMigrated`."""
    try:
        yield
    except ProgrammingError as exc:
        if not is_missing_schema(exc):
            raise
        raise NotMigrated(
            f"The database {alias!r} lacks what django_tasks needs ({exc.__cause__}): "
            f"{_advice(alias)}."
        ) from exc


def check_migrated(alias: str) -> None:
    """Raise :class:`NotMigrated` if migrations of django_tasks are not applied to ``alias``."""
    executor = MigrationExecutor(connections[alias])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes("django_tasks"))
    if plan:
        names = ", ".join(migration.name for migration, _ in plan)
        raise NotMigrated(
            f"The database {alias!r} lacks {len(plan)} migration(s) of django_tasks "
            f"({names}): {_advice(alias)}."
        )
