"""Worker processes that cannot start: the supervisor says why and stops, instead of
restarting them forever."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from django_tasks.models import TaskRun
from django_tasks.worker.claimer import BURST_ERRORS
from tests.taskapp.tasks import add

from .conftest import FAST_WORKER_SETTINGS, ROOT

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


def spawning(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``WORKER_START_METHOD = "spawn"``: worker processes are new interpreters."""
    settings = {**FAST_WORKER_SETTINGS, "WORKER_START_METHOD": "spawn"}
    return {**env, "DJANGO_TASKS_TEST_SETTINGS": json.dumps(settings)}


def run_pool(command: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_spawned_workers_of_a_manage_py_without_its_main_guard_stop_the_pool_with_the_reason(
    worker_env, tmp_path
):
    script = tmp_path / "manage.py"
    script.write_text(UNGUARDED_MANAGE)
    code, output, elapsed = run_pool(
        [sys.executable, str(script), "runtaskworker", "--concurrency", "2"], spawning(worker_env)
    )
    assert code == 1, output
    assert elapsed < 30
    # Each worker process says what is wrong...
    assert "runtaskworker started again inside one of its own worker processes" in output
    # ...and the supervisor gives up with the reason and the hint, instead of looping.
    assert "3 worker processes in a row exited before they could take a run" in output
    assert 'if __name__ == "__main__":' in output
    assert "bootstrapping phase" not in output  # not multiprocessing's riddle


def test_forked_workers_of_a_manage_py_without_its_main_guard_run(worker_env, tmp_path):
    """Forked worker processes do not import ``__main__`` again: the missing guard is harmless."""
    script = tmp_path / "manage.py"
    script.write_text(UNGUARDED_MANAGE)
    future = add.delay(2, 3)
    code, output, _ = run_pool(
        [sys.executable, str(script), "runtaskworker", "--concurrency", "2", "--burst"],
        worker_env,
    )
    assert code == 0, output
    assert future.result(timeout=1) == 5
    assert "spawned, not forked" not in output


def test_a_tasks_module_that_fails_in_spawned_worker_processes_stops_the_pool(worker_env):
    env = {**spawning(worker_env), "DJANGO_TASKS_TEST_BROKEN_CHILD": "1"}
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


def test_a_library_that_kills_forked_processes_stops_the_pool_with_the_way_out(worker_env):
    env = {**worker_env, "DJANGO_TASKS_TEST_BROKEN_FORK": "1"}
    future = add.delay(2, 3)
    code, output, elapsed = run_pool(
        [sys.executable, "manage.py", "runtaskworker", "--concurrency", "2"], env
    )
    assert code == 1, output
    assert elapsed < 30
    assert "this library cannot run in a forked process" in output
    assert "3 worker processes in a row exited before they could take a run" in output
    assert "(the last one: exit code 70)" in output
    assert 'set DJANGO_TASKS["WORKER_START_METHOD"] = "spawn"' in output
    # The run waits for a pool that can run it.
    assert TaskRun.objects.get(pk=future.id).state_type == "SCHEDULED"

    # And with that setting the same project runs it.
    code, output, _ = run_pool(
        [sys.executable, "manage.py", "runtaskworker", "--concurrency", "1", "--burst"],
        spawning(env),
    )
    assert code == 0, output
    assert future.result(timeout=1) == 5


def test_a_burst_whose_claims_keep_failing_ends_with_an_error_instead_of_retrying_forever(
    worker_env,
):
    env = {**worker_env, "DJANGO_TASKS_TEST_BROKEN_CLAIM": "1"}
    future = add.delay(2, 3)
    code, output, elapsed = run_pool(
        [sys.executable, "manage.py", "runtaskworker", "--concurrency", "2", "--burst"], env
    )
    assert code == 1, output
    assert elapsed < 30
    # In each worker process, the first thread that claims (its slot, its async lane) to fail
    # BURST_ERRORS times in a row (ERROR_BACKOFF apart) gives up for the process; the
    # supervisor does not replace it.
    failures = output.count("RuntimeError: this claim always fails")
    assert 2 * BURST_ERRORS <= failures <= 2 * 2 * BURST_ERRORS, output
    assert f"Could not claim runs {BURST_ERRORS} times in a row; this burst gives up" in output
    assert output.count("gave up: its claims kept failing") == 2
    assert "died" not in output
    assert TaskRun.objects.get(pk=future.id).state_type == "SCHEDULED"  # for a pool that can
