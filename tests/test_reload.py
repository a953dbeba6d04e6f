"""``runtaskworker`` follows code changes with DEBUG (or ``--reload``): real worker subprocesses
whose tasks module is rewritten while they run."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_tasks.models import TaskRun, TaskRunState
from django_tasks.worker.reloading import CodeWatcher, wants_reload

from .conftest import ROOT, process_alive, session_pids, wait_until, worker_log

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = """
import time

from django_tasks import task


@task(queue="reloadq")
def version() -> str:
    return "{version}"


@task(queue="reloadq")
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slow-{version}"


@task(queue="reloadq")
def lazy() -> str:
    from reloadapp.lazy import VALUE  # imported by a run, not at the worker's start

    return VALUE
"""


@pytest.fixture
def project(tmp_path: Path, worker_env: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    """An app ``reloadapp`` (its tasks.py at version v1) in a project with DEBUG on."""
    package = tmp_path / "reloadapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(TASKS.format(version="v1"))
    (package / "lazy.py").write_text('VALUE = "lazy-1"\n')
    (tmp_path / "reload_settings.py").write_text(
        "from tests.settings import *  # noqa\n"
        "from tests.settings import INSTALLED_APPS\n"
        "INSTALLED_APPS = [*INSTALLED_APPS, 'reloadapp']\n"
        "DEBUG = True\n"
    )
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "reload_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    sys.path.insert(0, str(tmp_path))
    yield package / "tasks.py", env
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("reloadapp")]:
        del sys.modules[name]


def load_tasks(tasks_py: Path) -> ModuleType:
    """The test process's copy of the tasks module (to enqueue its runs)."""
    importlib.invalidate_caches()
    return importlib.import_module("reloadapp.tasks")


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` as an editor would (the file's time: now)."""
    path.write_text(text)


def test_a_code_change_restarts_the_pool_after_its_running_run_finishes(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    handed_over = set(Path(tempfile.gettempdir()).glob("django_tasks-reload-*.json"))
    worker = start_worker("--queues", "reloadq", env=env)  # DEBUG on: reloads by default
    assert tasks.version.delay().result(timeout=60) == "v1"
    # The snapshot of the files' times the reloader handed over: read and removed.
    assert set(Path(tempfile.gettempdir()).glob("django_tasks-reload-*.json")) <= handed_over
    long = tasks.slow.delay(3.0)
    wait_until(lambda: long.state.is_running(), timeout=30)

    rewrite(tasks_py, TASKS.format(version="v2"))

    # The running run finishes with the code it started with: drained, not crashed.
    assert long.result(timeout=60) == "slow-v1"
    types = list(TaskRunState.objects.filter(run_id=long.id).values_list("type", flat=True))
    assert types == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
    # The new pool runs the new code; the reloader is the same process.
    assert tasks.version.delay().result(timeout=60) == "v2"
    assert worker.poll() is None
    log = worker_log(worker)
    assert "Reloading on code changes" in log
    assert "tasks.py changed: workers finish their runs" in log
    assert "Starting the worker again with the changed code" in log
    assert log.index("tasks.py changed") < log.index(f"Run {long.id} Completed")

    # A stop reaches the worker through the reloader; both exit 0, nothing is left behind.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    wait_until(lambda: session_pids(worker.pid) == [], timeout=15)
    assert TaskRun.objects.exclude(state_type="COMPLETED").count() == 0


def test_a_broken_tasks_module_waits_for_the_fix(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    worker = start_worker("--queues", "reloadq", "--reload", env=env)
    assert tasks.version.delay().result(timeout=60) == "v1"

    rewrite(tasks_py, "def broken(:\n")
    wait_until(
        lambda: "starts again when a file of the project changes" in worker_log(worker),
        timeout=60,
    )
    assert "SyntaxError" in worker_log(worker)
    assert worker.poll() is None  # the reloader waits; it did not exit

    rewrite(tasks_py, TASKS.format(version="v3"))
    assert tasks.version.delay().result(timeout=60) == "v3"
    worker.send_signal(signal.SIGINT)  # as Ctrl-C would, to the reloader alone
    assert worker.wait(30) == 0


def test_a_worker_whose_reloader_is_killed_stops_by_itself(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    worker = start_worker("--queues", "reloadq", env=env)
    assert tasks.version.delay().result(timeout=60) == "v1"
    supervisors = [p for p in session_pids(worker.pid) if p != worker.pid]
    assert supervisors

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    # The worker (supervisor and worker processes) notices and stops gracefully.
    wait_until(lambda: not any(process_alive(p) for p in supervisors), timeout=30)
    assert "The reloader that started this worker is gone: stopping." in worker_log(worker)


def test_noreload_and_burst_and_production_do_not_reload(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    with override_settings(DEBUG=True):
        assert wants_reload(None, burst=False) is True
        assert wants_reload(False, burst=False) is False
        assert wants_reload(None, burst=True) is False
    with override_settings(DEBUG=False):
        assert wants_reload(None, burst=False) is False
        assert wants_reload(True, burst=False) is True
    _tasks_py, env = project
    worker = start_worker("--queues", "reloadq", "--noreload", env=env)
    # Its worker process ready (a stop sent while it still boots waits for it: a loaded
    # machine took more than the 30 s below once).
    wait_until(lambda: "] Worker " in worker_log(worker) and " started" in worker_log(worker))
    assert "Reloading on code changes" not in worker_log(worker)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_reload_and_noreload_exclude_each_other() -> None:
    with pytest.raises(CommandError, match="not allowed with argument"):
        call_command("runtaskworker", "--reload", "--noreload")


def test_a_worker_killed_under_its_reloader_starts_again_by_itself(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    worker = start_worker("--queues", "reloadq", "--reload", env=env)
    assert tasks.version.delay().result(timeout=60) == "v1"
    [supervisor] = [p for p in session_pids(worker.pid) if _parent(p) == worker.pid]

    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: "The worker was killed by SIGKILL" in worker_log(worker), timeout=30)
    assert "or in 5 s" in worker_log(worker)
    assert worker.poll() is None  # the reloader waits: for a change, or RETRY_FIRST seconds

    # No edit: the worker is back after the pause (a database away, an OOM kill...).
    assert tasks.version.delay().result(timeout=60) == "v1"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_stop_sent_to_the_whole_process_group_lets_the_running_run_finish(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    """systemd, honcho or a terminal signal the group: the reloader and the worker both get
    it, and the reloader passes it on - still one request (graceful), not two (at once). The
    demo's ``rundemo`` (or honcho) also sends SIGTERM to the reloader itself after a Ctrl-C:
    that third signal is the same request too, not a second Ctrl-C passed on."""
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    for signum, then in (
        (signal.SIGTERM, None),
        (signal.SIGINT, None),
        (signal.SIGINT, signal.SIGTERM),
    ):
        worker = start_worker("--queues", "reloadq", "--reload", env=env)
        long = tasks.slow.delay(2.0)
        wait_until(lambda: long.state.is_running(), timeout=60)  # noqa: B023
        os.killpg(worker.pid, signum)  # start_worker gives each a session (and group) of its own
        if then is not None:
            time.sleep(0.1)
            worker.send_signal(then)  # the reloader alone
        assert worker.wait(30) == 0
        assert long.result(timeout=10) == "slow-v1"
        assert "at once" not in worker_log(worker)


def test_a_file_dated_in_the_future_does_not_restart_the_worker_again_and_again(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    ahead = time.time() + 3600  # a clock that runs ahead (a network filesystem, an archive)
    os.utime(tasks_py, (ahead, ahead))
    worker = start_worker("--queues", "reloadq", "--reload", env=env)
    assert tasks.version.delay().result(timeout=60) == "v1"
    time.sleep(CodeWatcher.SWEEPS[-1] + 1.5)  # past the sweeps that compare the files' times
    assert "changed" not in worker_log(worker)
    assert worker_log(worker).count("Reloading on code changes") == 1


def test_a_module_imported_only_by_a_run_is_watched_too(
    project: tuple[Path, dict[str, str]], start_worker: Callable[..., Any]
) -> None:
    tasks_py, env = project
    tasks = load_tasks(tasks_py)
    worker = start_worker("--queues", "reloadq", "--reload", env=env)
    assert tasks.lazy.delay().result(timeout=60) == "lazy-1"
    rewrite(tasks_py.parent / "lazy.py", 'VALUE = "lazy-2"\n')
    wait_until(lambda: "lazy.py changed" in worker_log(worker), timeout=30)
    assert tasks.lazy.delay().result(timeout=60) == "lazy-2"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
