"""Worker processes that cannot start: the supervisor says why and stops, instead of
restarting them forever."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

#: A manage.py as people write it by mistake: the command runs at import, unguarded.
UNGUARDED_MANAGE = f"""
import os
import sys

sys.path.insert(0, {str(ROOT)!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


def run_pool(command: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_a_manage_py_without_its_main_guard_stops_the_pool_with_the_reason(worker_env, tmp_path):
    script = tmp_path / "manage.py"
    script.write_text(UNGUARDED_MANAGE)
    code, output, elapsed = run_pool(
        [sys.executable, str(script), "runtaskworker", "--concurrency", "2"], worker_env
    )
    assert code == 1, output
    assert elapsed < 30
    # Each worker process says what is wrong...
    assert "runtaskworker started again inside one of its own worker processes" in output
    # ...and the supervisor gives up with the reason and the hint, instead of looping.
    assert "3 worker processes in a row exited before they could take a run" in output
    assert 'if __name__ == "__main__":' in output
    assert "bootstrapping phase" not in output  # not multiprocessing's riddle


def test_a_tasks_module_that_fails_in_worker_processes_stops_the_pool(worker_env):
    env = {**worker_env, "DJANGO_TASKS_TEST_BROKEN_CHILD": "1"}
    code, output, elapsed = run_pool(
        [sys.executable, "manage.py", "runtaskworker", "--concurrency", "1"], env
    )
    assert code == 1, output
    assert elapsed < 30
    assert (
        "with this error: ImportError: tests.taskapp.poison cannot be imported in a worker "
        "process" in output
    )
    assert output.count("exited before taking a run") == 2  # two restarts, with a backoff
