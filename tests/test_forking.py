"""Worker processes forked by the fork server (django_tasks.worker.forking): they inherit no
connection and no thread, and a pool that loses its fork server goes on with spawned ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from django_tasks.models import Worker
from django_tasks.worker.forking import can_fork_here
from django_tasks.worker.journal import ProcessJournal
from tests.taskapp.tasks import add, sleep_then_record

from .conftest import ROOT, process_alive, wait_until, worker_log, worker_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def fork_server_of(supervisor: int) -> int:
    """The supervisor's child that is not a worker process (those lead a group of their own)."""
    workers = set(worker_processes(supervisor))
    found = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) not in workers
        and _parent_or_none(int(entry.name)) == supervisor
    ]
    assert len(found) == 1, found
    return found[0]


def _parent_or_none(pid: int) -> int | None:
    try:
        return parent_of(pid)
    except (OSError, IndexError):
        return None


def live_workers() -> int:
    return Worker.objects.filter(stopped__isnull=True).count()


def test_forked_worker_processes_inherit_no_connection_and_no_thread(start_worker):
    supervisor = start_worker("--concurrency", "2")
    assert add.delay(2, 3).result(timeout=20) == 5
    wait_until(lambda: len(worker_processes(supervisor.pid)) == 2)
    server = fork_server_of(supervisor.pid)
    assert {parent_of(pid) for pid in worker_processes(supervisor.pid)} == {server}
    # What each worker process starts from: one thread, and no socket (no connection).
    assert os.listdir(f"/proc/{server}/task") == [str(server)]
    fds = [os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(f"/proc/{server}/fd")]
    assert not [fd for fd in fds if fd.startswith("socket:")], fds
    assert "spawned, not forked" not in worker_log(supervisor)


def test_a_pool_whose_fork_server_is_killed_goes_on_with_spawned_processes(start_worker):
    supervisor = start_worker("--concurrency", "2")
    wait_until(lambda: live_workers() == 2, timeout=20)
    running = sleep_then_record.delay(1.0, "finished by a forked process")
    wait_until(lambda: running.state.is_running())
    forked = worker_processes(supervisor.pid)
    server = fork_server_of(supervisor.pid)

    os.kill(server, signal.SIGKILL)

    # The forked processes see their parent gone: they finish what they run, and stop.
    assert running.result(timeout=15) == "finished by a forked process"
    wait_until(lambda: not any(process_alive(pid) for pid in forked), timeout=15)
    # Their supervisor replaces them with spawned ones, which take the next runs.
    wait_until(lambda: len(worker_processes(supervisor.pid)) == 2, timeout=20)
    assert not set(worker_processes(supervisor.pid)) & set(forked)
    assert add.delay(20, 22).result(timeout=20) == 42
    log = worker_log(supervisor)
    assert "The fork server died: worker processes are spawned from now on." in log
    assert supervisor.poll() is None


def test_the_fork_server_ends_with_its_supervisor(start_worker):
    supervisor = start_worker("--concurrency", "2")
    wait_until(lambda: live_workers() == 2, timeout=20)
    server = fork_server_of(supervisor.pid)
    forked = worker_processes(supervisor.pid)
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(10)
    wait_until(lambda: not process_alive(server), timeout=10)
    wait_until(lambda: not any(process_alive(pid) for pid in forked), timeout=15)
    assert live_workers() == 0  # each marked itself stopped


def test_a_project_that_starts_threads_at_import_gets_spawned_worker_processes(
    start_worker, worker_env
):
    supervisor = start_worker(
        "--concurrency", "2", env={**worker_env, "DJANGO_TASKS_TEST_THREAD_AT_IMPORT": "1"}
    )
    assert add.delay(2, 3).result(timeout=30) == 5
    wait_until(lambda: len(worker_processes(supervisor.pid)) == 2, timeout=20)
    assert {parent_of(pid) for pid in worker_processes(supervisor.pid)} == {supervisor.pid}
    assert (
        "Worker processes are spawned, not forked: threads already run in this process "
        "(error-reporter)." in worker_log(supervisor)
    )


def test_can_fork_here_names_what_makes_forking_unsafe():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy-library")
    thread.start()
    try:
        reason = can_fork_here()
    finally:
        stop.set()
        thread.join()
    assert reason is not None
    assert "busy-library" in reason

    found: list[str | None] = []
    other = threading.Thread(target=lambda: found.append(can_fork_here()))
    other.start()
    other.join()
    assert found == ["the supervisor does not run on the main thread"]


def test_a_journal_is_empty_after_reset():
    journal = ProcessJournal.private(capacity=1024)
    journal.set_ready()
    journal.set_error("boom")
    journal.count_processed()
    journal.begin(uuid.uuid4(), "tasks.x", 1.0)
    assert journal.add(b'{"id": 1}')
    journal.reset()
    assert (journal.ready, journal.error, journal.processed) == (False, "", 0)
    assert journal.executing is None
    assert journal.entries() == "[]"


@pytest.mark.parametrize("adopter", ["init", "subreaper"])
def test_the_fork_server_reports_how_each_child_ended_and_its_death(adopter):
    """tests/forking_probe.py, in a process of its own (pytest's may run threads). Orphaned
    by the fork server's death, a worker process is adopted by init - its exit code is lost -
    or, with the supervisor as subreaper (PID 1 in a container), by the supervisor, which
    reaps it and knows how it ended."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.forking_probe", adopter],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    server = found["server"]
    # A child forked by the fork server: its parent, its journal shared with the supervisor.
    assert found["ok"] == [0, 1, f"{server} {server}"]
    assert found["raise"] == 1
    assert "RuntimeError: this child fails" in done.stderr
    assert found["sleeping_alive"] is True
    assert found["killed"] == -signal.SIGKILL
    # The fork server killed: no new child, and one it forked before is followed to its end.
    assert found["gone"] == "the fork server is gone"
    assert found["server_alive"] is False
    assert found["orphan_alive"] is True
    if adopter == "init":
        assert found["orphan_killed"] is None  # its exit code went with the fork server
    else:
        assert found["orphan_killed"] == -signal.SIGKILL
    assert found["orphan_alive_after"] is False
