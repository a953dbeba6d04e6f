"""Stopping a pool the ways people and process managers do: Ctrl-C to the whole process
group, Ctrl-C plus a manager's SIGTERM, SIGTERM to every process of the service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from django_tasks.worker.stopping import AT_ONCE, DUPLICATE, GRACEFUL, StopRequests
from tests.taskapp.models import Effect
from tests.taskapp.tasks import sleep_then_record

from .conftest import ROOT, session_pids, wait_until, worker_log, worker_processes

pytestmark = pytest.mark.django_db(transaction=True)


def started_pool(start_worker, label: str):
    """A pool of two processes, one of them three seconds into ``label``'s run."""
    run = sleep_then_record.delay(3.0, label)
    supervisor = start_worker("--concurrency", "2")
    wait_until(lambda: run.state.is_running())
    wait_until(lambda: len(worker_processes(supervisor.pid)) == 2)
    return run, supervisor


def assert_drained(run, supervisor, label: str) -> None:
    assert supervisor.wait(20) == 0, worker_log(supervisor)[-2000:]
    assert run.state.is_completed(), run.state
    assert list(Effect.objects.values_list("label", flat=True)) == [label]
    assert "killing the workers" not in worker_log(supervisor)


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_drains_gracefully(start_worker):
    """A terminal's Ctrl-C: SIGINT to every process of the foreground group."""
    run, supervisor = started_pool(start_worker, "ctrl-c")
    os.killpg(supervisor.pid, signal.SIGINT)
    assert_drained(run, supervisor, "ctrl-c")


@pytest.mark.slow
def test_ctrl_c_and_a_process_managers_sigterm_are_one_request(start_worker):
    """honcho, foreman, rundemo: the group gets SIGINT from the terminal, and the manager
    sends SIGTERM to the process it started."""
    run, supervisor = started_pool(start_worker, "ctrl-c and manager")
    os.killpg(supervisor.pid, signal.SIGINT)
    supervisor.send_signal(signal.SIGTERM)
    assert_drained(run, supervisor, "ctrl-c and manager")
    assert "the same request to stop" in worker_log(supervisor)


@pytest.mark.slow
def test_sigterm_to_every_process_of_the_service_drains_gracefully(start_worker):
    """systemd's default KillMode=control-group (and supervisord's stopasgroup) signal every
    process: each child gets the service manager's SIGTERM and the supervisor's."""
    run, supervisor = started_pool(start_worker, "every process")
    for pid in session_pids(supervisor.pid):
        os.kill(pid, signal.SIGTERM)
    assert_drained(run, supervisor, "every process")


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(start_worker):
    run, supervisor = started_pool(start_worker, "never")
    os.killpg(supervisor.pid, signal.SIGINT)
    time.sleep(1.2)  # a person pressing Ctrl-C again, not one keypress seen twice
    os.killpg(supervisor.pid, signal.SIGINT)
    assert supervisor.wait(10) == 1
    assert run.state.type == "CRASHED"
    assert not Effect.objects.exists()


def test_stop_requests_count_a_repeated_signal_but_not_one_request_seen_twice(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    requests = StopRequests()
    assert requests.add(signal.SIGINT) == GRACEFUL
    assert requests.add(signal.SIGTERM) == DUPLICATE  # the group's and the manager's
    assert requests.count == 1
    clock[0] += 0.5
    assert requests.add(signal.SIGINT) == AT_ONCE  # the same signal again: a second request
    assert requests.count == 2

    later = StopRequests()
    assert later.add(signal.SIGTERM) == GRACEFUL
    clock[0] += 5
    assert later.add(signal.SIGINT) == AT_ONCE  # another signal, but long after
    assert StopRequests.name(signal.SIGINT) == "SIGINT"
    assert StopRequests.name(99) == "99"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_ctrl_c_on_rundemo_lets_the_running_run_finish(worker_env):
    """rundemo runs the web server and a worker pool: Ctrl-C reaches both (one process
    group), and rundemo also sends the pool SIGTERM as it exits."""
    run = sleep_then_record.delay(3.0, "demo ctrl-c")
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "rundemo", f"127.0.0.1:{free_port()}", "--concurrency", "1"],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: run.state.is_running(), timeout=60)
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(30) == 0
        assert run.state.is_completed(), run.state
        assert list(Effect.objects.values_list("label", flat=True)) == ["demo ctrl-c"]
    finally:
        for pid in session_pids(demo.pid):
            os.kill(pid, signal.SIGKILL)
