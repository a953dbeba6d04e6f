"""Shared fixtures: real PostgreSQL only, and real worker subprocesses."""

from __future__ import annotations

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
from django.db import connection

from django_tasks.topic import open_worker_connection

ROOT = Path(__file__).resolve().parent.parent

#: Worker subprocesses of the tests beat, rescue and give up quickly.
FAST_WORKER_SETTINGS = {
    "HEARTBEAT_INTERVAL": 0.2,
    "HEARTBEAT_TIMEOUT": 2.0,
    "TIMEOUT_GRACE": 0.5,
    "CANCEL_GRACE": 1.0,
    "POLL_INTERVAL": 0.5,
}


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

    def start(*args: str) -> subprocess.Popen[bytes]:
        if "--concurrency" not in args:
            args = ("--concurrency", "1", *args)
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runtaskworker", "-v", "2", *args],
            cwd=ROOT,
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def worker_log(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


@pytest.fixture
def second_connection(transactional_db: Any) -> Iterator[psycopg.Connection[Any]]:
    """A real second connection, as a worker would hold: not Django's."""
    conn = open_worker_connection()
    yield conn
    conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
