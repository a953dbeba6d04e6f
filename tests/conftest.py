"""Shared fixtures: real PostgreSQL only, and real worker subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client

from django_tasks.artifacts.create import close as close_artifacts
from django_tasks.progress import writer as progress_writer
from django_tasks.recorder import writer
from django_tasks.topic import open_worker_connection
from django_tasks.worker import Worker

ROOT = Path(__file__).resolve().parent.parent

#: Worker subprocesses of the tests beat, rescue and give up quickly.
FAST_WORKER_SETTINGS = {
    "HEARTBEAT_INTERVAL": 0.2,
    "HEARTBEAT_TIMEOUT": 2.0,
    "TIMEOUT_GRACE": 0.5,
    "CANCEL_GRACE": 1.0,
    "POLL_INTERVAL": 0.5,
    # A run is "Late" when taken more than LATE_AFTER after its scheduled time. Worker
    # subprocesses take a second or two to start (more on a loaded machine), so a run enqueued
    # before one starts would get a Late row by chance, and tests asserting its history would
    # depend on start-up time; Late is tested in-process (test_worker_options.py).
    "LATE_AFTER": 3600.0,
    # Look for due ticks five times a second (tests use one-second intervals).
    "SCHEDULE_INTERVAL": 0.2,
}


@pytest.fixture(autouse=True, scope="session")
def _recorder_stops_before_the_test_database(django_db_setup: Any) -> Iterator[None]:
    """The batched writer has its own connection: close it before the test database is
    dropped (and so that nothing is written to the real database at exit)."""
    yield
    writer.close()
    progress_writer.close()
    close_artifacts()


@pytest.fixture(autouse=True)
def _recorder_flushed_after_each_test() -> Iterator[None]:
    """Records of one test's inline runs must not arrive during the next test."""
    yield
    writer.flush()


@pytest.fixture
def close_connections_of_sync_to_async() -> Iterator[None]:
    """Django connections opened by sync_to_async's thread (adelay, aresult, the async ORM of
    async tasks) are closed as at the end of a request, before the test database goes."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all, thread_sensitive=True)())


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Environment for a subprocess that must use the test database."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["DJANGO_TASKS_TEST_DB"] = connection.settings_dict["NAME"]
    env["PYTHONUNBUFFERED"] = "1"
    env["DJANGO_TASKS_TEST_SETTINGS"] = json.dumps(FAST_WORKER_SETTINGS)
    return env


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``manage.py runtaskworker`` subprocesses; kill any still alive at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if "--concurrency" not in args:
            args = ("--concurrency", "1", *args)
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runtaskworker", "-v", "2", *args],
            cwd=ROOT,
            env=worker_env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown kills its children too
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        # A polite stop first (so coverage data of the subprocesses is saved), then the whole
        # session: the supervisor and every worker process (each in a process group of its
        # own), stuck or orphaned, and what their runs started.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
        for pid in session_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_pids(session: int) -> list[int]:
    """Every live process of a session (a worker started by ``start_worker`` leads one)."""
    pids = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def worker_processes(supervisor: int) -> list[int]:
    """The worker processes of a pool: in the supervisor's session, each leading a process
    group of its own (multiprocessing's resource tracker, in the supervisor's group, is not
    one of them)."""
    return [
        pid
        for pid in session_pids(supervisor)
        if pid != supervisor and (fields := _stat(pid)) is not None and int(fields[2]) == pid
    ]


def process_alive(pid: int) -> bool:
    """True for a live process (not a zombie waiting to be reaped)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def drain(**options: Any) -> Worker:
    """Run a Worker in this process until no run is ready; it must exit cleanly."""
    worker = Worker(burst=True, handle_signals=False, **options)
    assert worker.run() == 0
    return worker


def worker_log(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


@pytest.fixture
def second_connection(transactional_db: Any) -> Iterator[psycopg.Connection[Any]]:
    """A real second connection, as a worker would hold: not Django's."""
    conn = open_worker_connection()
    yield conn
    conn.close()


def count(query: str) -> int:
    """A ``SELECT count(*) ...`` on the test's Django connection."""
    with connection.cursor() as cursor:
        cursor.execute(query)
        return int(cursor.fetchone()[0])


def wait_for_live_workers(count: int, timeout: float = 60) -> None:
    """Wait until ``count`` worker processes have registered (they are ready to claim): a test
    that needs several workers to share runs enqueues only then, so that a worker that starts
    late does not leave all the runs to the first."""
    from django_tasks.models import Worker

    wait_until(lambda: Worker.objects.filter(stopped__isnull=True).count() >= count, timeout)


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def restart_database(down_for: float = 0.0) -> bool:
    """Restart the PostgreSQL server the tests use; False when this machine cannot.
    ``down_for``: seconds the server stays stopped between the stop and the start.

    The embedded server is restarted with pg_ctl; the machine's own server (DATABASE_URL on
    127.0.0.1) with pg_ctlcluster when the tests run as root, as in CI.
    """
    if down_for:
        with database_down() as stopped:
            if stopped:
                time.sleep(down_for)
        return stopped
    url = os.environ.get("DATABASE_URL")
    if not url:
        from demo_project.database import restart_embedded

        restart_embedded()
    else:
        cluster = _local_cluster(url)
        if cluster is None:
            return False
        _pg_ctlcluster(cluster, "restart")
    connection.close()  # this process's own connection died with the server
    return True


@contextlib.contextmanager
def database_down() -> Iterator[bool]:
    """The test database's server stopped for the block, started again after it (False
    inside when this machine cannot: see :func:`restart_database`)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        from demo_project.database import postmaster_options, start_embedded, stop_embedded

        options = postmaster_options()
        stop_embedded()
        try:
            yield True
        finally:
            start_embedded(options)
            connection.close()  # this process's own connection died with the server
        return
    cluster = _local_cluster(url)
    if cluster is None:
        yield False
        return
    _pg_ctlcluster(cluster, "stop")
    try:
        yield True
    finally:
        _pg_ctlcluster(cluster, "start")
        connection.close()


def _local_cluster(url: str) -> str | None:
    """The version of the machine's own cluster behind ``url``, when the tests may restart it
    (as root, on 127.0.0.1, with pg_ctlcluster), else ``None``."""
    clusters = Path("/etc/postgresql")
    local = "@127.0.0.1" in url or "@localhost" in url
    if not (local and os.geteuid() == 0 and clusters.is_dir()):
        return None
    return sorted(p.name for p in clusters.iterdir())[0]


def _pg_ctlcluster(version: str, action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def client_with(*codenames: str) -> Client:
    """A logged-in client of a staff user with exactly these permissions (staff status alone
    gives nothing: views follow Django's model permissions, as the admin does)."""
    user = User.objects.create_user("staff-" + "-".join(codenames), password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client
