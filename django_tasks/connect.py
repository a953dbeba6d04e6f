"""The app's own connections to PostgreSQL, beside Django's.

Workers, the recorder, progress and artifacts writers use a connection of their own, held for
the life of the process whatever ``CONN_MAX_AGE`` says, so task code that closes or breaks
Django's connection cannot disturb them, and no run pays for a new connection. A module of the
bottom layer (docs/architecture.md): whatever writes can import it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connections
from psycopg.types.json import set_json_loads

from . import json_input
from .conf import task_settings

__all__ = ["open_worker_connection"]


def open_worker_connection(
    alias: str | None = None, name: str = "worker"
) -> psycopg.Connection[Any]:
    """A new autocommit psycopg connection to the database Django uses for task tables, named
    ``django_tasks <name>`` in ``pg_stat_activity``."""
    wrapper = connections[alias or task_settings().DATABASE_ALIAS]
    params = wrapper.get_connection_params()
    # Django's cursor class and adapter context are for the ORM; the queue wants plain tuples.
    for key in ("cursor_factory", "context"):
        params.pop(key, None)
    conn: psycopg.Connection[Any] = psycopg.connect(**params, autocommit=True)
    if not name.isidentifier():  # our own constants: never text from outside
        raise ValueError(f"Not a connection name: {name!r}")
    conn.execute(f"SET application_name = 'django_tasks {name}'")
    # JSON the worker reads: a value SQL nested thousands deep costs its run, not a batch.
    set_json_loads(json_input.read_stored, conn)
    return conn
