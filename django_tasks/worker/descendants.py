"""The processes a run started, wherever they went: killed with its worker process.

A worker process leads a process group of its own, and killing the group (a run that ignored
its timeout or a cancel, the shutdown timeout) kills what its runs started - but not a
daemon that left the group: ``setsid()`` puts a process in a new session (and group), and a
double fork then leaves it an orphan, which the kernel gives to init. Such a process outlived
the run it belonged to, holding files, ports or the work it was meant to stop.

So on Linux each worker process is a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``):
orphans among its descendants are given to it instead of init, and stay in its tree of
descendants however they detach. Killing a worker process kills that whole tree
(:func:`kill_tree`), each process stopped first so that none forks away meanwhile. A
subreaper must also reap the orphans it adopts once they end (:func:`reap_adopted`), or
they stay zombies for as long as it lives.

Elsewhere (no ``/proc``, no ``prctl``) only the process group is killed, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

__all__ = ["become_subreaper", "descendants", "kill_tree", "reap_adopted"]

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")
#: Rounds of looking for new descendants while stopping them (each round finds those forked
#: before the previous round's stops landed).
_ROUNDS = 5


_subreaper = False


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants (Linux); ``False`` elsewhere."""
    global _subreaper
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and session of a process (``None`` once it is gone)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1]), int(fields[3])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in _PROC.iterdir():
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None and stat[0] != "Z":
                    children.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_tree(pid: int, *, itself: bool = True) -> None:
    """SIGKILL ``pid``, its process group and every process below it (``itself=False``: only
    the processes below it - a process cleaning up before it exits).

    The processes are stopped (SIGSTOP) first, the tree looked at again until no new one
    appears, then all are killed: a process that forks while the tree is being read cannot
    leave a child behind."""
    if itself:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGSTOP)
        _signal(pid, signal.SIGSTOP)
    stopped: set[int] = set()
    for _ in range(_ROUNDS):
        new = [p for p in descendants(pid) if p not in stopped]
        if not new:
            break
        for process in new:
            _signal(process, signal.SIGSTOP)
        stopped.update(new)
    for process in stopped:
        _signal(process, signal.SIGKILL)
    if itself:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _signal(pid, signal.SIGKILL)


def reap_adopted(*, every_session: bool = False) -> int:
    """Reap the orphans this process adopted as a subreaper that have ended; returns how
    many. Those of another session (a daemon detaches with ``setsid()``) always; with
    ``every_session``, those of its own session too (``sh -c 'cmd &'``, ``nohup``) - only
    when no task code of this process runs, since a child of its own session may be one that
    ``subprocess`` or ``asyncio`` started and is about to wait for by pid (reaped here, it
    would report a wrong exit status). Costs one system call when no child has ended."""
    if not _subreaper:
        return 0
    try:
        ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # no child at all
        return 0
    if ended is None:
        return 0
    me = os.getpid()
    own = _stat(me)
    if own is None:
        return 0
    reaped = 0
    for pid in _children(me):
        stat = _stat(pid)
        if stat is not None and stat[0] == "Z" and (every_session or stat[2] != own[2]):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped += 1
    return reaped


def _children(pid: int) -> list[int]:
    """The children of ``pid``, from ``/proc/<pid>/task/*/children`` (each thread's)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in (_PROC / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(p) for p in (task / "children").read_text().split())
    return found
