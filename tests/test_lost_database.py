"""A lost database is a lost connection, whatever the error says: class 08 (PgBouncer's
"server login has been failing" is a 08P01 ProtocolViolation), a shutdown, a restart - and a
worker that has just got the database back does not take the others for lost (issue 24,
item 2). Against real PostgreSQL; tests/test_pgbouncer.py restarts it behind a real PgBouncer.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from django.utils import timezone
from psycopg import errors

from django_tasks.models import TaskRun
from django_tasks.poolers import disconnected
from django_tasks.worker.connection import MAX_BACKOFF, QueueConnection
from django_tasks.worker.maintenance import rescue
from tests.taskapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (errors.ProtocolViolation("server login has been failing, try again later"), True),
        (errors.ProtocolViolation("query_wait_timeout"), True),
        (errors.ConnectionFailure("server closed the connection"), True),
        (errors.AdminShutdown("terminating connection due to administrator command"), True),
        (errors.CannotConnectNow("the database system is starting up"), True),
        (errors.TooManyConnections("sorry, too many clients already"), True),
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (errors.QueryCanceled("canceling statement due to statement timeout"), True),
        # A prepared statement a pooler mixed up is mended otherwise (poolers.lost).
        (
            errors.ProtocolViolation(
                'bind message supplies 2 parameters, but prepared statement "_pg3_0" requires 3'
            ),
            False,
        ),
        # The statement itself: sending it again would fail again, for ever.
        (errors.ProgramLimitExceeded("index row size exceeds btree maximum"), False),
        (errors.DataError("invalid input syntax"), False),
        (errors.UniqueViolation("duplicate key"), False),
        (ValueError("not a database error"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_what_counts_as_a_lost_connection(error, lost):
    assert disconnected(error) is lost


def _terminate(conn: QueueConnection) -> None:
    """End ``conn``'s server session from another connection, as a restart does."""
    assert conn.conn is not None
    pid = conn.conn.info.backend_pid
    with psycopg.connect(conn.conn.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_statement_on_a_terminated_session_is_sent_again_on_a_new_one():
    db = QueueConnection("default", lambda: False)
    try:
        assert db.execute("SELECT 1", None, give_up_on_stop=False) == [(1,)]
        _terminate(db)
        assert db.execute("SELECT 2", None, give_up_on_stop=False) == [(2,)]
        assert db.lost_since is None
        assert db.regained_at is not None
        assert db.recovering(60.0)
        assert not db.recovering(0.0)
    finally:
        db.close()


def test_a_rescuer_that_just_got_the_database_back_waits_for_the_others():
    """Every worker lost the database with it and has not beaten since: right after the
    rescuer gets it back, their heartbeats look old. It rescues nobody for one heartbeat
    timeout plus the longest backoff; then it rescues those still silent."""
    future = add.delay(1, 1)
    TaskRun.objects.filter(pk=future.id).update(
        state_type="RUNNING",
        state_name="Running",
        worker="silent-host:1",
        started=timezone.now(),
        attempts=1,
    )
    db = QueueConnection("default", lambda: False)
    try:
        db.execute("SELECT 1", None, give_up_on_stop=False)
        _terminate(db)
        db.execute("SELECT 1", None, give_up_on_stop=False)  # lost, and got back

        assert rescue(db, rescuer="me", heartbeat_timeout=1.0).total == 0
        assert TaskRun.objects.get(pk=future.id).state_type == "RUNNING"

        assert db.regained_at is not None
        db.regained_at = time.monotonic() - (1.0 + MAX_BACKOFF)  # the window has passed
        assert rescue(db, rescuer="me", heartbeat_timeout=1.0).crashed == 1
        assert TaskRun.objects.get(pk=future.id).state_type == "CRASHED"
    finally:
        db.close()


def test_a_rescuer_that_never_lost_the_database_rescues_at_once():
    """A worker starting after a crash of the whole pool frees the old pool's runs at once."""
    future = add.delay(1, 1)
    TaskRun.objects.filter(pk=future.id).update(
        state_type="RUNNING",
        state_name="Running",
        worker="gone-host:1",
        started=timezone.now(),
        attempts=1,
    )
    db = QueueConnection("default", lambda: False)
    try:
        assert rescue(db, rescuer="me", heartbeat_timeout=1.0).crashed == 1
    finally:
        db.close()
