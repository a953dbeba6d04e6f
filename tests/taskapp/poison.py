"""Tasks that misbehave as careless or hostile code does: they kill their own process, return
or raise values PostgreSQL refuses, log what it refuses, or leave processes behind.

Imported by ``tasks.py`` so that workers register them like any task.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import subprocess
import time
from typing import Any

from django_tasks import get_run_logger, task
from django_tasks.cache_policies import INPUTS

from .models import Effect

if os.environ.get("DJANGO_TASKS_TEST_BROKEN_CHILD") and multiprocessing.parent_process():
    # A tasks module that imports in the supervisor but not in its worker processes (an
    # environment difference, a module-level side effect): tests/test_boot.py.
    raise ImportError("tests.taskapp.poison cannot be imported in a worker process")

if os.environ.get("DJANGO_TASKS_TEST_BROKEN_FORK"):
    # A library that cannot run in a forked process (it kills it, as some do when they find
    # their threads gone): the fork server is forked once from the supervisor and lives;
    # the worker processes it forks, one fork further, die at once. tests/test_boot.py.
    _forks = 0

    def _die_in_forked_worker() -> None:
        global _forks
        _forks += 1
        if _forks >= 2:
            os.write(2, b"this library cannot run in a forked process\n")
            os._exit(70)

    os.register_at_fork(after_in_child=_die_in_forked_worker)

if os.environ.get("DJANGO_TASKS_TEST_BROKEN_CLAIM"):
    # Claims that fail on every try for a reason other than the connection (a bug, a schema
    # older than the code): a --burst pool must end, with an error. tests/test_boot.py.
    from django_tasks.worker.claimer import Claimer

    def _broken_claim(self: Claimer, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this claim always fails")

    Claimer.claim = _broken_claim  # type: ignore[method-assign]

if os.environ.get("DJANGO_TASKS_TEST_THREAD_AT_IMPORT"):
    # A library that starts a thread when imported (as some error reporters do): forking
    # would copy the locks that thread holds, so the pool spawns. tests/test_forking.py.
    import threading

    threading.Thread(target=threading.Event().wait, name="error-reporter", daemon=True).start()


@task
def exit_process(code: int = 1) -> None:
    """Ends its worker process at once, as a C extension's ``exit()`` would."""
    os._exit(code)


@task
def segfault() -> None:
    """Reads address 0: the worker process dies of SIGSEGV."""
    ctypes.string_at(0)


@task(retries=10)
def exit_process_retried() -> None:
    """Kills its process on every attempt, with retries to spare."""
    Effect.objects.create(label="exit_process_retried")
    os._exit(3)


@task
def kill_my_group_later(seconds: float) -> None:
    """Sleeps, then kills its own process group."""
    time.sleep(seconds)
    os.killpg(os.getpgrp(), 9)


#: Values PostgreSQL refuses as they are: NaN in JSON, NUL in text, a lone surrogate (not
#: UTF-8), and an int longer than Python turns into a string by default.
REFUSED_VALUES: dict[str, Any] = {
    "nan": float("nan"),
    "nul": "before\x00after",
    "surrogate": "lone \ud800 surrogate",
    "huge_int": 10**5000,
}


@task
def returns_refused(kind: str) -> Any:
    return REFUSED_VALUES[kind]


class BadStr(Exception):
    """An exception whose message cannot even be turned into a string."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")


@task
def raises_refused(kind: str) -> None:
    if kind == "bad_str":
        raise BadStr()
    if kind == "huge":
        raise ValueError("x" * (50 * 1024 * 1024))
    if kind == "huge_int":  # str() of this exception fails: the int is too long to print
        raise ValueError(f"refused {kind}:", REFUSED_VALUES[kind])
    raise ValueError(f"refused {kind}: {REFUSED_VALUES[kind]}")


@task
def logs_refused(kind: str) -> str:
    get_run_logger().warning("logged %s: %s", kind, REFUSED_VALUES[kind])
    return kind


@task
async def async_returns_refused(kind: str) -> Any:
    return REFUSED_VALUES[kind]


@task
async def async_raises_refused(kind: str) -> None:
    raises_refused.fn(kind)


@task
async def async_logs_refused(kind: str) -> str:
    get_run_logger().warning("logged %s: %s", kind, REFUSED_VALUES[kind])
    return kind


@task(timeout_seconds=0.3)
def grandchild_then_hang(seconds: float) -> str:
    """Starts ``sleep`` (a grandchild of the worker), records its pid, then ignores its own
    timeout: only the supervisor's kill stops it."""
    sleeper = subprocess.Popen(["sleep", "120"])
    Effect.objects.create(label="grandchild", run_marker=str(sleeper.pid))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):
            time.sleep(0.05)
    return "finished"


def _raise_when_loaded(kind: str) -> None:
    raise {
        "SystemExit": SystemExit(3),
        "KeyboardInterrupt": KeyboardInterrupt(),
        "RuntimeError": RuntimeError("this argument cannot be loaded here"),
    }[kind]


class RaisesWhenLoaded:
    """An argument that pickles but raises ``kind`` when unpickled - in the worker, while it
    prepares the run (before the task's code)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"RaisesWhenLoaded({self.kind!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise_when_loaded, (self.kind,))


def _slow_to_load(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    if isinstance(value, BaseException):
        raise value
    return value


class SlowToLoad:
    """An argument that takes ``seconds`` to unpickle in the worker, then is ``value`` - or
    raises it, an exception: the run is being prepared for that long."""

    def __init__(self, seconds: float, value: Any) -> None:
        self.seconds, self.value = seconds, value

    def __repr__(self) -> str:
        return f"SlowToLoad({self.seconds}, {self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_slow_to_load, (self.seconds, self.value))


def _exit_in_hook(task: object, task_run: object, state: object) -> None:
    raise SystemExit("a hook called sys.exit()")


@task(on_completion=[_exit_in_hook])
def hook_exits(label: str) -> str:
    """Completes; then its on_completion hook raises SystemExit in the worker."""
    Effect.objects.create(label=label)
    return label


def _start_daemon() -> int:
    """A ``sleep`` that leaves the run's process group and session (``setsid``) and whose
    parent exits at once (a double fork, as daemons do): it belongs to no group of the
    worker's. Returns its pid."""
    done = subprocess.run(
        ["sh", "-c", "setsid sleep 120 </dev/null >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[0])


def _hang(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):
            time.sleep(0.05)


@task(timeout_seconds=0.3)
def daemon_then_hang(seconds: float) -> str:
    """Starts a daemon, records its pid, then ignores its own timeout: only the supervisor's
    kill stops it."""
    Effect.objects.create(label="daemon", run_marker=str(_start_daemon()))
    _hang(seconds)
    return "finished"


@task
def daemon_then_ignore_cancel(seconds: float) -> str:
    """Starts a daemon, records its pid, then ignores a cancel: the supervisor kills it after
    CANCEL_GRACE."""
    Effect.objects.create(label="daemon", run_marker=str(_start_daemon()))
    _hang(seconds)
    return "finished"


@task
def daemon_and_done() -> int:
    """Starts a daemon and ends: the daemon lives on (nothing killed the worker), adopted by
    the worker process, which reaps it when it ends."""
    pid = _start_daemon()
    Effect.objects.create(label="daemon", run_marker=str(pid))
    return pid


@task
def forks_and_returns(label: str) -> str:
    """Forks, and the child does not exit: it returns from the task, into the worker's own
    code, as a second copy of the worker process (same connections, same journal)."""
    Effect.objects.create(label=label)
    return "child" if os.fork() == 0 else "parent"


# -- async tasks that attack their event loop (tests/test_async_poison.py) ------------------


def _stop_as(how: str) -> None:
    """What a run does to stop, the same in a sync task and in a coroutine."""
    if how == "exit":
        raise SystemExit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "generator_exit":
        raise GeneratorExit
    raise ValueError(f"unknown way to stop: {how}")


@task(retries=2)
def stops_like(how: str, label: str) -> None:
    """The sync twin of :func:`async_stops_like`: a mark per attempt, then ``how``."""
    Effect.objects.create(label=label)
    _stop_as(how)


@task(retries=2)
async def async_stops_like(how: str, label: str) -> str:
    """A mark per attempt, then ``how``: raise SystemExit, KeyboardInterrupt or GeneratorExit
    (as the sync twin), or stop or close the event loop running it."""
    await Effect.objects.acreate(label=label)
    loop = asyncio.get_running_loop()
    if how == "stop_loop":
        loop.stop()
        await asyncio.sleep(0.05)
        return "went on after stopping the loop"
    if how == "close_loop":
        loop.close()
        return "closed the loop"
    _stop_as(how)
    return "unreachable"


async def _refuse_cancel(how: str, label: str, seconds: float) -> str:
    """Sleeps ``seconds``; cancelled, it leaves a mark (``<label>-cancelled``), then
    ``swallow``s every cancel and goes on for good, or raises in its ``finally``
    (``raise_in_finally``: ValueError, ``exit_in_finally``: SystemExit)."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        # A task of its own: a cancel repeated while the mark is written does not stop it.
        _marks.add(asyncio.ensure_future(Effect.objects.acreate(label=f"{label}-cancelled")))
        if how == "swallow":
            while True:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.05)
        raise
    finally:
        if how == "raise_in_finally":
            raise ValueError("raised while being cancelled")
        if how == "exit_in_finally":
            raise SystemExit(4)
    return "finished"


#: The marks being written (the loop keeps only weak references to its tasks).
_marks: set[asyncio.Future[Any]] = set()


@task(timeout_seconds=0.5)
async def async_refuses_timeout(how: str, label: str, seconds: float = 60) -> str:
    """Past its timeout (0.5 s) it ``how``s (see :func:`_refuse_cancel`)."""
    return await _refuse_cancel(how, label, seconds)


@task
async def async_refuses_cancel(how: str, label: str, seconds: float = 60) -> str:
    """Cancelled (no timeout), it ``how``s (see :func:`_refuse_cancel`)."""
    return await _refuse_cancel(how, label, seconds)


@task
async def async_forks_and_returns(label: str) -> str:
    """Forks on the lane's loop thread, and the child does not exit: it goes on in the
    coroutine and returns from it, into the worker's own event loop - whose epoll instance
    and wake-up pipe it shares with the worker."""
    await Effect.objects.acreate(label=label)
    pid = os.fork()
    if pid == 0:
        await asyncio.sleep(0.1)
        return "child"
    await Effect.objects.acreate(label=f"{label}-forked", run_marker=str(pid))
    return "parent"


@task
async def async_exit_process(seconds: float) -> None:
    """Sleeps, then ends its whole process (a C extension's exit()) from its coroutine."""
    await asyncio.sleep(seconds)
    os._exit(1)


@task
async def async_shuts_executor(label: str) -> str:
    """Shuts the default executor of the loop running it (as a careless ``asyncio.run``-style
    cleanup does), then returns."""
    await asyncio.get_running_loop().shutdown_default_executor()
    return label


@task
async def async_to_thread(label: str) -> str:
    """An innocent async run that does blocking work in a thread, as asyncio advises."""
    await asyncio.to_thread(time.sleep, 0.01)
    return label


@task
def resets_signal(name: str) -> str:
    """A library call that puts a signal back to its default action (as some C libraries and
    ``subprocess`` helpers do) and returns: nothing else is wrong with the run."""
    signal.signal(getattr(signal, name), signal.SIG_DFL)
    return name


@task
def grandchild_then_wait(label: str, seconds: float) -> str:
    """Starts ``sleep`` (in the worker's process group), records its pid, then waits: the test
    kills the worker process from outside, as the kernel's OOM killer does."""
    import subprocess

    sleeper = subprocess.Popen(["sleep", "300"])
    Effect.objects.create(label=label, run_marker=str(sleeper.pid))
    time.sleep(seconds)
    return label


@task
def backgrounds_a_command(label: str) -> str:
    """``cmd &`` in a shell that exits at once (as ``nohup cmd &`` or a start script does):
    the command is orphaned in the worker's own session and process group."""
    import subprocess

    subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)
    return label


@task
def closes_descriptors(label: str) -> str:
    """Closes every file descriptor above stderr (a daemonising helper does), then returns."""
    os.closerange(3, 65536)
    return label


@task(retries=3)
def fails_then_exits(label: str) -> None:
    """Attempt 1 fails as usual (a retry); every later attempt kills its process."""
    Effect.objects.create(label=label)
    if Effect.objects.filter(label=label).count() == 1:
        raise ValueError("first attempt fails normally")
    os._exit(7)


@task(atomic=True)
def atomic_exit(label: str) -> None:
    """Writes inside its atomic transaction, then kills its process before the commit."""
    Effect.objects.create(label=label)
    os._exit(7)


@task(cache_policy=INPUTS)
def cached_exit(x: int) -> int:
    """Kills its process while its cache key's advisory lock is held."""
    os._exit(7)
