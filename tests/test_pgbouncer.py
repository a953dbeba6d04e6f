"""Workers and enqueues through a real PgBouncer in transaction mode (Debian's ``pgbouncer``
package; ``.ci/run`` installs it) with default settings - PREPARE_STATEMENTS on, which such a
pooler cannot keep: each process falls back to unprepared statements with one warning naming
the setting, and enqueue, drain, cancel and the rescue after kill -9 all work through it."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from django_tasks import TaskRunFuture
from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.tasks import add, sleep_then_record, sleep_then_record_retry, slow_echo

from .conftest import (
    FAST_WORKER_SETTINGS,
    ROOT,
    restart_database,
    wait_for_live_workers,
    wait_until,
    worker_log,
    worker_processes,
)

pytestmark = pytest.mark.django_db(transaction=True)


def names(future: Any) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=future.id).values_list("name", flat=True))


def _pgbouncer() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        reason = "the PgBouncer test needs pgbouncer (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run installs it")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def pgbouncer() -> Iterator[dict[str, Any]]:
    """A PgBouncer in transaction mode in front of the test database, on a port of its own:
    two server connections for every client (so statements of different clients meet on the
    same server connection), server_login_retry 1 s (its 15 s default stalls workers after a
    database restart: docs/deployment.md)."""
    with _running_pgbouncer("server_login_retry = 1\n") as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_defaults() -> Iterator[dict[str, Any]]:
    """The same PgBouncer with its default server_login_retry (15 s): after a failed login to
    the database it answers every new client with 08P01 'server login has been failing, try
    again later (server_login_retry)' for that long."""
    with _running_pgbouncer("") as bouncer:
        yield bouncer


@contextlib.contextmanager
def _running_pgbouncer(extra_settings: str) -> Iterator[dict[str, Any]]:
    binary = _pgbouncer()
    settings = connection.settings_dict
    host = settings["HOST"] or "127.0.0.1"
    server_port = settings["PORT"] or 5432
    user = settings["USER"] or getpass.getuser()
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="djt-pgbouncer-"))
    folder.chmod(0o777)  # started as root, PgBouncer runs as another user (-u)
    config = folder / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={server_port} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        "default_pool_size = 2\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "server_round_robin = 1\nmin_pool_size = 2\n"
        f"{extra_settings}"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    config.chmod(0o644)
    command = [binary, str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: as a user who may connect
        command[1:1] = ["-u", _socket_owner(host) or "nobody"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    dsn = f"postgresql://{user}@127.0.0.1:{port}/{settings['NAME']}"
    try:
        wait_until(lambda: _answers(dsn), 30, 0.1)
        yield {"port": port, "user": user, "dsn": dsn, "log": folder / "pgbouncer.log"}
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def _socket_owner(host: str) -> str | None:
    """The owner of a server's socket directory (the embedded server's runs as a user of
    its own, in a directory only that user may enter); ``None`` for a TCP host."""
    if not host.startswith("/"):
        return None
    import pwd

    return pwd.getpwuid(os.stat(host).st_uid).pw_name


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _through(pgbouncer: dict[str, Any], worker_env: dict[str, str]) -> dict[str, str]:
    env = dict(worker_env)
    env["DATABASE_URL"] = f"postgres://{pgbouncer['user']}@127.0.0.1:{pgbouncer['port']}/x"
    return env  # DJANGO_TASKS_TEST_DB (worker_env) names the test database


def _enqueue_through(env: dict[str, str], code: str) -> str:
    """Run ``code`` in a new process whose Django connection goes through PgBouncer."""
    script = (
        "import django; django.setup()\n"
        "from django.db import transaction\n"
        "from tests.taskapp.tasks import add\n" + code
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_an_enqueue_in_a_transaction_fails_once_with_the_advice_then_all_work(
    pgbouncer, worker_env
):
    """Server connections taken in turn (server_round_robin): the second transaction's
    prepared statement is not on its server connection. That transaction is aborted - the
    error says what to set - and every later one works, unprepared."""
    stderr = _enqueue_through(
        _through(pgbouncer, worker_env),
        "import sys, time\n"
        "from django_tasks.poolers import PreparedStatementsUnsupported\n"
        "failed = []\n"
        "for i in range(10):\n"
        "    try:\n"
        "        with transaction.atomic():\n"
        "            add.delay(i, 0)\n"
        "    except PreparedStatementsUnsupported as exc:\n"
        "        failed.append(i)\n"
        "        print('FAILED', exc, file=sys.stderr)\n"
        "    time.sleep(0.6)  # PgBouncer opens its second server connection meanwhile\n"
        "print('failed', failed, file=sys.stderr)\n",
    )
    assert stderr.count("FAILED ") == 1, stderr
    assert "set DJANGO_TASKS = {'PREPARE_STATEMENTS': False}" in stderr
    assert TaskRun.objects.count() == 9  # the failed transaction's run rolled back with it


def test_workers_and_enqueues_fall_back_to_unprepared_statements_behind_pgbouncer(
    pgbouncer, worker_env, start_worker
):
    env = _through(pgbouncer, worker_env)
    start = time.monotonic()
    proc = start_worker("--concurrency", "2", env=env)
    wait_for_live_workers(2)
    # Enqueued through PgBouncer too: outside a transaction the fallback is silent but for
    # its warning; inside one, after it, nothing is prepared any more; a large delay_many()
    # is chunks pipelined in a transaction of its own.
    stderr = _enqueue_through(
        env,
        "for i in range(100):\n    add.delay(i, i)\n"
        "with transaction.atomic():\n    add.delay_many([(i, 1) for i in range(100)])\n"
        "    add.delay(1000, 1)\n"
        "add.delay_many([(i, 3) for i in range(2500)])\n",  # pipelined chunks (BULK_CHUNK)
    )
    assert stderr.count("PREPARE_STATEMENTS") <= 1
    futures = [add.delay(i, 2) for i in range(300)]  # and directly
    wait_until(lambda: not TaskRun.objects.exclude(state_type="COMPLETED").exists(), 120)
    drained = time.monotonic() - start
    assert TaskRun.objects.filter(state_type="COMPLETED").count() == 3001
    assert [f.result(timeout=5) for f in futures[:3]] == [2, 3, 4]

    # Cancel a running run through PgBouncer.
    long = sleep_then_record.delay(60, "cancelled")
    wait_until(lambda: long.state.is_running(), 30)
    assert long.cancel()
    wait_until(lambda: long.state.is_final(), 30)
    assert long.state.name == "Cancelled"

    # kill -9 the process running a run: rescued (retried) and completed, through PgBouncer.
    rescued = sleep_then_record_retry.delay(2, "rescued")
    wait_until(lambda: rescued.state.is_running(), 30)
    holder = TaskRun.objects.get(pk=rescued.id).worker
    pid = int(holder.rsplit(":", 1)[1])
    assert pid in worker_processes(proc.pid)
    os.kill(pid, signal.SIGKILL)
    assert rescued.result(timeout=60) == "rescued"
    assert TaskRun.objects.get(pk=rescued.id).attempts == 2
    assert Effect.objects.filter(label="rescued").count() == 1

    # No crash loop: the pool is alive, no process died but the one killed above, and each
    # process warned at most once (the two first, and the one started after the kill).
    assert proc.poll() is None
    log = worker_log(proc)
    assert log.count(" died (") == 1, log[-3000:]
    assert "Started worker process" in log
    warned = [
        line.split()[2] for line in log.splitlines() if "cannot keep prepared statements" in line
    ]  # the pids of the processes that warned: the supervisor and its workers
    assert warned, log[-3000:]
    assert len(warned) == len(set(warned)), warned  # once per process
    warnings = len(warned)
    assert "set DJANGO_TASKS = {'PREPARE_STATEMENTS': False}" in log
    print(f"PgBouncer: 501 runs enqueued and drained in {drained:.1f} s; {warnings} warnings")


def test_the_pool_outlives_a_database_restart_behind_pgbouncer_with_its_defaults(
    pgbouncer_defaults, worker_env, start_worker
):
    """PostgreSQL stops for a few seconds while a pool works through PgBouncer with its
    default server_login_retry: PgBouncer's logins fail meanwhile, and for 15 s after that it
    answers every statement that needs a new server connection with 08P01 'server login has
    been failing' (a ProtocolViolation). The supervisor and every worker process treat it as a
    lost connection: nobody exits, the run that was running across the outage keeps its
    outcome (no rescue takes it while its worker has not been able to beat), and the runs
    enqueued during and after the outage complete."""
    # The default heartbeat timeout (30 s): longer than PgBouncer keeps some clients out after
    # it let others in (up to server_login_retry), so nobody is taken for lost.
    settings = {**FAST_WORKER_SETTINGS, "PREPARE_STATEMENTS": False, "HEARTBEAT_TIMEOUT": 30.0}
    env = {**_through(pgbouncer_defaults, worker_env)}
    env["DJANGO_TASKS_TEST_SETTINGS"] = json.dumps(settings)
    proc = start_worker("--concurrency", "2", "--batch-size", "1", env=env)
    wait_for_live_workers(2)
    before = [add.delay(i, 0) for i in range(20)]
    wait_until(lambda: all(f.state.is_completed() for f in before), 60)
    # One run in each worker process (claims of one run), both running while the database
    # goes away and finishing meanwhile.
    across = [slow_echo.delay(f"across the restart {i}", 3) for i in range(2)]
    wait_until(lambda: all(f.state.is_running() for f in across), 30)
    assert len({TaskRun.objects.get(pk=f.id).worker for f in across}) == 2

    if not restart_database(down_for=3.0):
        pytest.skip("this machine cannot restart the test database")
    during = [add.delay(i, 1) for i in range(20)]  # straight to the database, now back

    wait_until(lambda: "server login has been failing" in worker_log(proc), 60)
    after = [add.delay(i, 2) for i in range(20)]
    everything: list[TaskRunFuture[Any]] = [*during, *after, *across]
    wait_until(lambda: all(f.state.is_final() for f in everything), 120)

    for i, future in enumerate(across):
        assert future.result(timeout=5) == f"across the restart {i}"
        assert names(future) == ["Scheduled", "Pending", "Running", "Completed"]
    assert all(f.state.is_completed() for f in everything)
    assert proc.poll() is None, worker_log(proc)[-3000:]
    log = worker_log(proc)
    assert " died (" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_workers_behind_pgbouncer_wake_at_once_when_they_listen_on_postgresql(
    pgbouncer, worker_env, start_worker
):
    """PgBouncer in transaction mode drops LISTEN: its workers would wake only every
    POLL_INTERVAL (60 s here). With LISTEN_DATABASE_ALIAS naming a connection straight to
    PostgreSQL, each run enqueued to an idle pool starts at once, while every other statement
    goes through PgBouncer; the pool holds one direct connection per worker process."""
    direct = {key: connection.settings_dict[key] for key in ("HOST", "PORT", "USER", "NAME")}
    settings = {
        **FAST_WORKER_SETTINGS,
        "POLL_INTERVAL": 60.0,
        "PREPARE_STATEMENTS": False,
        "LISTEN_DATABASE_ALIAS": "listen",
    }
    env = {**_through(pgbouncer, worker_env), "DJANGO_TASKS_TEST_LISTEN_DB": json.dumps(direct)}
    env["DJANGO_TASKS_TEST_SETTINGS"] = json.dumps(settings)
    proc = start_worker("--concurrency", "2", env=env)
    wait_for_live_workers(2)
    time.sleep(1.0)  # idle, waiting for a NOTIFY (or the poll, a minute away)
    for i in range(3):
        began = time.monotonic()
        wait_until(_completed(add.delay(i, 1)), 10)
        assert time.monotonic() - began < 5.0
        time.sleep(0.5)
    with connection.cursor() as cursor:  # the LISTEN of each process, not through PgBouncer
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN django_tasks%%' AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "Traceback" not in worker_log(proc)


def _completed(future: TaskRunFuture[Any]) -> Callable[[], bool]:
    return lambda: future.state.is_completed()
