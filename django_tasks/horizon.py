"""The oldest snapshot held in the task tables' database, and the dead row versions it leaves.

A PostgreSQL queue slows down when a transaction stays open for long - a report query, a
``pg_dump``, a session left "idle in transaction": while its snapshot is held, VACUUM may
remove no row version that died after it began, and every claim walks over the dead versions
that pile up in the queue's indexes (``benchmarks/held_snapshot.py`` measures it). The cure is
on the other side - end that transaction - so the operator has to see it: the dashboard warns
once such a transaction is older than ``DJANGO_TASKS["SNAPSHOT_WARNING"]`` seconds, and the
metrics endpoint exports its age and the dead rows of the run tables.

Seen through ``pg_stat_activity`` and ``pg_prepared_xacts``: sessions of other roles show
their transaction only to a superuser or a role granted ``pg_read_all_stats``.
Replication slots and standbys with ``hot_standby_feedback`` hold the horizon back too; they
have no age to show (watch ``pg_replication_slots.xmin``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connections

from .conf import task_settings

__all__ = ["DeadRows", "Holder", "dead_rows", "oldest_snapshot", "snapshot_warning"]

#: The oldest transaction of this database that holds a snapshot (or has a transaction id),
#: other than the session asking; prepared transactions (two-phase commit) count too.
_OLDEST = """
SELECT pid, seconds, state, application_name FROM (
    SELECT pid, extract(epoch FROM clock_timestamp() - xact_start)::float8 AS seconds,
           coalesce(state, '') AS state, coalesce(application_name, '') AS application_name
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
      AND backend_type = 'client backend'  -- not autovacuum: a long VACUUM holds nobody back
      AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
    UNION ALL
    SELECT NULL, extract(epoch FROM clock_timestamp() - prepared)::float8,
           'prepared transaction', gid
    FROM pg_prepared_xacts WHERE database = current_database()
) AS holders
ORDER BY seconds DESC LIMIT 1
"""

#: The run tables, where dead row versions slow the queue down.
_TABLES = ("django_tasks_taskrun", "django_tasks_taskrunstate")
_DEAD = """
SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables
WHERE relid = ANY(ARRAY[%s, %s]::regclass[]) ORDER BY relname
"""


@dataclass(frozen=True)
class Holder:
    """The session (or prepared transaction) whose transaction is the oldest."""

    pid: int | None  # None: a prepared transaction
    seconds: float
    state: str  # "active", "idle in transaction", ... or "prepared transaction"
    application_name: str  # of the session; the gid of a prepared transaction


@dataclass(frozen=True)
class DeadRows:
    """PostgreSQL's estimate of a table's live and dead row versions."""

    table: str
    live: int
    dead: int


def oldest_snapshot() -> Holder | None:
    """The oldest transaction that holds VACUUM back, or None when there is none."""
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(_OLDEST)
        row = cursor.fetchone()
    if row is None:
        return None
    pid, seconds, state, name = row
    return Holder(pid=pid, seconds=max(0.0, seconds), state=state, application_name=name)


def dead_rows() -> list[DeadRows]:
    """Live and dead row versions of the run tables (statistics: a few seconds behind)."""
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(_DEAD, _TABLES)
        return [DeadRows(table, live, dead) for table, live, dead in cursor.fetchall()]


def snapshot_warning() -> Holder | None:
    """The oldest transaction when it is older than ``SNAPSHOT_WARNING`` seconds."""
    holder = oldest_snapshot()
    if holder is None or holder.seconds < task_settings().SNAPSHOT_WARNING:
        return None
    return holder
