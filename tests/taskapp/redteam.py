"""Tasks of the red team (issue 24's fixes): code that misbehaves in ways the fixed poison
tasks (poison.py) do not - an async task that forks, a task that resets the worker's signal
handlers or closes its file descriptors, an async task that kills its process while a sync run
shares it.

Imported by ``tasks.py`` so that workers register them like any task.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from django_tasks import task
from django_tasks.cache_policies import INPUTS

from .models import Effect


@task
async def async_forks_and_returns(label: str) -> str:
    """Forks on the lane's loop thread; the child returns from the coroutine like the parent,
    into the worker's own event loop."""
    await Effect.objects.acreate(label=label)
    pid = os.fork()
    if pid == 0:
        # The child: leave a mark of being alive a little later (a second copy of the lane).
        await asyncio.sleep(0.1)
        return "child"
    await Effect.objects.acreate(label=f"{label}-forked", run_marker=str(pid))
    return "parent"


@task
def resets_signal(name: str) -> str:
    """A library call that puts a signal back to its default action (as some C libraries and
    ``subprocess`` helpers do) and returns: nothing else is wrong with the run."""
    signal.signal(getattr(signal, name), signal.SIG_DFL)
    return name


@task
def closes_descriptors(label: str) -> str:
    """Closes every file descriptor above stderr (a daemonising helper does), then returns."""
    os.closerange(3, 65536)
    return label


@task
async def async_exit_process(seconds: float) -> None:
    """Sleeps, then ends its whole process (a C extension's exit()) from an async run."""
    await asyncio.sleep(seconds)
    os._exit(1)


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


def _slow_then_raise(seconds: float) -> None:
    time.sleep(seconds)
    raise RuntimeError("this argument cannot be loaded here")


class SlowThenRaises:
    """An argument that takes ``seconds`` to unpickle in the worker, then raises: the run is
    being prepared for that long."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"SlowThenRaises({self.seconds})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_slow_then_raise, (self.seconds,))


@task
def backgrounds_a_command(label: str) -> str:
    """``cmd &`` in a shell that exits at once (as ``nohup cmd &`` or a start script does):
    the command is orphaned in the worker's own session and process group."""
    import subprocess

    subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)
    return label
