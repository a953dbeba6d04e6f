"""Worker processes forked from a fork server: ready in a fraction of the time a new
interpreter takes.

A worker process started by *spawn* is a new interpreter that imports Django, the settings
and every app again: half a second of CPU or more before it can claim a run, paid by every
deploy, autoscaled pool and ``--burst`` job. Forking the supervisor whenever a worker process
is needed would be quick, but would copy what the supervisor holds by then (its database
connection, the metrics thread). So at start, before the supervisor opens a connection or
starts a thread, it forks one small process - the fork server - that only forks worker
processes on request. Each starts with Django set up and the project imported, shares that
memory copy-on-write, and inherits no connection, no thread and no lock held by one.

The fork server is the parent of the worker processes: it reaps them and tells the
supervisor, over a pipe, how each ended (the exit code, or minus the signal that killed it,
as :mod:`multiprocessing` reports it). It ignores SIGINT and SIGTERM - stopping is the
supervisor's decision - and exits when the supervisor is gone (its pipe closes); its worker
processes then see their parent change and stop, as they do when a spawned worker's
supervisor dies. If the fork server itself dies, :class:`ForkedChild` still finds out when a
worker process it started ends (exit code unknown), and the supervisor starts the next ones
by spawn.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from .journal import ProcessJournal

__all__ = ["ForkServer", "ForkServerGone", "ForkedChild", "WorkerProcess", "can_fork_here"]

#: What a worker process runs once forked, given its journal and its parent's pid (the fork
#: server's: the worker stops when it changes): returns the exit code.
ChildMain = Callable[[ProcessJournal, int], int]


class WorkerProcess(Protocol):
    """What the supervisor uses of a worker process, spawned (``multiprocessing``) or forked."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None: ...


class ForkServerGone(RuntimeError):
    """The fork server exited or was killed: worker processes must be spawned."""


def can_fork_here() -> str | None:
    """Why forking worker processes from this process would be unsafe, or ``None``.

    Threads are the reason: a forked process keeps only the thread that forked, so a lock
    another thread held (a logging handler's, a client library's) stays held for ever in the
    child. A project that starts threads at import (some error reporters do) gets spawned
    worker processes, as before the fork server existed."""
    if not hasattr(os, "fork"):
        return "this platform cannot fork"
    import threading

    if threading.current_thread() is not threading.main_thread():
        return "the supervisor does not run on the main thread"
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        return f"threads already run in this process ({', '.join(sorted(others))})"
    return None


class ForkServer:
    """The supervisor's handle on its fork server (see the module docstring).

    ``journals`` are made before :meth:`start`, in shared memory: the fork server and every
    worker process it forks see them, so each worker process is given one by its index."""

    def __init__(self, journals: Sequence[ProcessJournal], child_main: ChildMain) -> None:
        self.journals = list(journals)
        self._child_main = child_main
        self.pid: int | None = None
        self.alive = False
        self._requests = -1  # write end: "<journal index>\n" per worker process wanted
        self._notices = -1  # read end: "started <pid>\n", "exited <pid> <code>\n"
        self._buffer = b""
        self._started: deque[int] = deque()
        self._exits: dict[int, int] = {}

    def start(self) -> None:
        """Fork the fork server. Call with no connection open and no other thread running."""
        request_r, request_w = os.pipe()
        notice_r, notice_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the fork server
            code = 1
            try:
                os.close(request_w)
                os.close(notice_r)
                code = _Server(request_r, notice_w, self.journals, self._child_main).serve()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(request_r)
        os.close(notice_w)
        self.pid, self._requests, self._notices, self.alive = pid, request_w, notice_r, True

    def start_child(self, index: int) -> ForkedChild:
        """A new worker process using ``journals[index]`` (reset by the caller)."""
        if not self.alive:
            raise ForkServerGone("the fork server is gone")
        try:
            os.write(self._requests, f"{index}\n".encode())
        except OSError:  # BrokenPipeError: it died
            self._gone()
            raise ForkServerGone("the fork server is gone") from None
        while not self._started:
            self.poll(timeout=1.0)
            if not self.alive:
                raise ForkServerGone("the fork server is gone")
        return ForkedChild(self, self._started.popleft(), index)

    def poll(self, timeout: float = 0.0) -> None:
        """Read the fork server's notices, waiting up to ``timeout`` seconds for one."""
        if not self.alive:
            return
        ready, _, _ = select.select([self._notices], [], [], timeout)
        if not ready:
            return
        data = os.read(self._notices, 65536)
        if not data:
            self._gone()
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            kind, *numbers = line.decode().split()
            if kind == "started":
                self._started.append(int(numbers[0]))
            else:
                self._exits[int(numbers[0])] = int(numbers[1])

    def exitcode(self, pid: int) -> int | None:
        return self._exits.get(pid)

    def close(self) -> None:
        """Let the fork server go (it exits when its request pipe closes) and reap it."""
        if self.pid is None:
            return
        if self._requests >= 0:
            os.close(self._requests)
            self._requests = -1
        if self._notices >= 0:
            os.close(self._notices)
            self._notices = -1
        self.alive = False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.pid = None

    def _gone(self) -> None:
        self.alive = False
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)


class ForkedChild:
    """A worker process forked by the fork server: the parts of ``multiprocessing.Process``
    the supervisor uses."""

    name = "django_tasks-worker"

    def __init__(self, server: ForkServer, pid: int, index: int) -> None:
        self.server = server
        self.pid: int | None = pid
        self.index = index  # of its journal in server.journals
        self._lost_code: int | None = None
        self._ended = False

    def __repr__(self) -> str:
        return f"<ForkedChild pid={self.pid}>"

    @property
    def exitcode(self) -> int | None:
        assert self.pid is not None
        code = self.server.exitcode(self.pid)
        return self._lost_code if code is None else code

    def is_alive(self) -> bool:
        assert self.pid is not None
        if self._ended:
            return False
        self.server.poll()
        if self.server.exitcode(self.pid) is not None:
            self._ended = True
        elif not self.server.alive:  # orphaned: reaped by whoever adopted it
            self._ended = not self._still_there()
        return not self._ended

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self.server.alive:
                self.server.poll(timeout=0.05)
            else:
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def _still_there(self) -> bool:
        """Whether the process exists, once the fork server is gone. Adopted by this process
        (the supervisor is PID 1 in a container), it is reaped here, with its exit code."""
        assert self.pid is not None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # adopted by another process, which reaps it (or not)
            return _exists(self.pid)
        if pid == 0:
            return True
        self._lost_code = os.waitstatus_to_exitcode(status)
        return False


def _exists(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc: trust kill()
        return True


class _Server:
    """The fork server's loop (in its own process)."""

    def __init__(
        self, requests: int, notices: int, journals: list[ProcessJournal], child_main: ChildMain
    ) -> None:
        self.requests, self.notices = requests, notices
        self.journals = journals
        self.child_main = child_main
        self.wake_r, self.wake_w = os.pipe()
        self.pid = os.getpid()

    def serve(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        # A child's exit wakes the select() below (the signal writes to wake_w).
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)
        gc.freeze()  # what Django set up stays shared: the collector does not touch it
        buffer = b""
        while True:
            if not self._reap():
                return 0
            ready, _, _ = select.select([self.requests, self.wake_r], [], [])
            if self.wake_r in ready:
                self._drain_wake()
            if self.requests in ready:
                data = os.read(self.requests, 4096)
                if not data:  # the supervisor is gone
                    return 0
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not self._fork(int(line)):
                        return 0

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> bool:
        """Tell the supervisor about every child that ended. ``False``: it is gone."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return True
            if not self._tell(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n"):
                return False

    def _tell(self, notice: str) -> bool:
        try:
            os.write(self.notices, notice.encode())
        except OSError:
            return False
        return True

    def _fork(self, index: int) -> bool:
        pid = os.fork()
        if pid == 0:
            self._become_worker(index)
        with contextlib.suppress(OSError):  # also done by the child: whichever runs first
            os.setpgid(pid, pid)
        return self._tell(f"started {pid}\n")

    def _become_worker(self, index: int) -> None:
        """In the forked worker process: shed the fork server's pipes and signal handling,
        run the worker, exit with its code (never returning into the server's loop)."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (self.requests, self.notices, self.wake_r, self.wake_w):
                os.close(fd)
            code = self.child_main(self.journals[index], self.pid)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # a closed stream: nothing left to say
                    stream.flush()
            os._exit(code)
