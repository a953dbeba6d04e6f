"""A lost database is a lost connection, whatever the error says: class 08 (PgBouncer's
"server login has been failing" is a 08P01 ProtocolViolation), a shutdown, a restart - and a
worker that has just got the database back does not take the others for lost (issue 24,
item 2). Against real PostgreSQL; tests/test_pgbouncer.py restarts it behind a real PgBouncer.
"""

from __future__ import annotations

import os
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


@pytest.mark.slow
def test_a_pool_started_as_the_database_comes_back_does_not_rescue_live_runs(
    start_worker, worker_env
):
    """The database is down for four times the heartbeat timeout while a pool runs a run; a second
    pool starts the moment it is back (a deploy, an orchestrator replacing pods). That pool
    never lost the database, but every heartbeat it finds is old: the first pool, still in its
    reconnect backoff, must not be taken for lost - its run completes once, uncharged."""
    from tests.taskapp.tasks import slow_echo

    from .conftest import restart_database, wait_for_live_workers, wait_until

    first = start_worker()
    wait_for_live_workers(1)
    future = slow_echo.delay("kept", 15)
    wait_until(lambda: future.state.is_running(), 30)
    holder = TaskRun.objects.get(pk=future.id).worker
    # Down long enough that the first pool's backoff reaches its longest waits (5 s).
    if not restart_database(down_for=8.0):  # FAST_WORKER_SETTINGS: HEARTBEAT_TIMEOUT 2 s
        pytest.skip("this machine cannot restart the test database")
    start_worker()  # the second pool, at once
    assert future.result(timeout=60) == "kept"
    run = TaskRun.objects.get(pk=future.id)
    assert (run.attempts, run.crashes, run.worker) == (1, 0, holder)
    assert not run.states.filter(message__contains="was lost").exists()
    assert first.poll() is None


@pytest.mark.slow
@pytest.mark.parametrize("how", ["a second request", "the shutdown timeout"])
def test_a_supervisor_leaves_while_the_database_is_down_when_asked_twice_or_past_its_timeout(
    start_worker, how
):
    """A worker process dies while the database is down: its supervisor waits for the
    database to settle it. Asked to stop, it still leaves - at a second request, or once its
    shutdown timeout has passed - instead of waiting for the database (only SIGKILL stopped
    it): what it could not settle is left to the rescue."""
    import signal

    from .conftest import database_down, wait_for_live_workers, worker_processes

    supervisor = start_worker("--shutdown-timeout", "3")
    wait_for_live_workers(1)
    [child] = worker_processes(supervisor.pid)
    with database_down() as stopped:
        if not stopped:
            pytest.skip("this machine cannot stop the test database")
        os.kill(child, signal.SIGKILL)
        time.sleep(1.5)  # the supervisor has found it dead and waits for the database
        supervisor.send_signal(signal.SIGTERM)
        if how == "a second request":
            time.sleep(0.5)
            supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(20)
    assert code == (1 if how == "a second request" else 0)
