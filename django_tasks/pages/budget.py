"""A time budget for the one statement of a page whose cost depends on what a filter
matches (a filter that matches few of millions of runs reads through the primary key until it
has found enough): past the budget the page says so instead of waiting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

from ..conf import task_settings

__all__ = ["time_budget"]


@contextmanager
def time_budget(milliseconds: int) -> Iterator[None]:
    """Statements inside take at most ``milliseconds`` each: past it they raise
    ``OperationalError`` (QueryCanceled). A savepoint of its own: a cancelled statement and
    the setting end with it, a surrounding transaction (ATOMIC_REQUESTS) goes on."""
    alias = task_settings().DATABASE_ALIAS
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('statement_timeout'), setting::bigint FROM pg_settings "
            "WHERE name = 'statement_timeout'"
        )
        before, before_ms = cursor.fetchone()
        budget = milliseconds if not before_ms else min(before_ms, milliseconds)  # never looser
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{budget}ms"])
        yield
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [before])
