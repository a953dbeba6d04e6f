"""What a worker process keeps in memory its supervisor can read after the process died.

Short runs are executed without writing RUNNING first, and their outcomes are written in
batches with the next claim (deferred completions: a round trip per batch instead of three
per run). Kept only in the process, those outcomes would die with it - and a run that kills
its process (a segfault, ``os._exit()``, the OOM killer) would leave no trace of having
started. So each worker process writes, in shared memory that its supervisor created:

* the run it is executing, and since when - set before the function is called, cleared once
  the outcome is written or journaled;
* the async run whose coroutine is taking a step on the async lane's loop, if one is: set
  before each step, cleared after it (the async runs in flight are many, but at most one
  runs code on the loop at a time: if the process dies in a step, that run took it down);
* the outcomes not written yet, as the JSON the FLUSH statement takes;
* whether it got as far as its first claim (boot), and the error that stopped it before;
* how many runs it processed (the supervisor's metrics).

When a child dies, the supervisor writes those outcomes, records the run that was executing
as CRASHED (with the exit code or signal), and hands back what the child claimed but had not
started (:mod:`.salvage`). Nothing is lost, and no run is executed again because another run
of its batch killed the process. Writing here is a memory copy: no system call, no lock
shared with another process (one writer, and the reader reads only after the writer died).

A worker that no supervisor started (tests, embedding) keeps the same journal in private
memory, so there is one code path.
"""

from __future__ import annotations

import ctypes
import uuid
from datetime import UTC, datetime
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

__all__ = ["JOURNAL_BYTES", "Executing", "ProcessJournal", "Stepping"]

#: Room for outcomes not written yet. A batch of 100 short runs takes about 30 KB; an outcome
#: that does not fit (a large result) is written at once instead.
JOURNAL_BYTES = 1024 * 1024
_ERROR_BYTES = 4096


class _Header(ctypes.Structure):
    _fields_ = (
        ("processed", ctypes.c_longlong),
        ("ready", ctypes.c_int),
        ("busy", ctypes.c_int),  # 1 while ``executing`` names the run being executed
        ("executing", ctypes.c_ubyte * 16),
        ("executing_since", ctypes.c_double),  # seconds since the epoch, database clock
        ("executing_task", ctypes.c_char * 256),
        ("stepping", ctypes.c_int),  # 1 while ``stepping_run``'s coroutine takes a step
        ("stepping_run", ctypes.c_ubyte * 16),
        ("stepping_task", ctypes.c_char * 256),
        ("used", ctypes.c_longlong),  # bytes of journal
        ("error", ctypes.c_char * _ERROR_BYTES),
    )


class Executing(NamedTuple):
    run_id: uuid.UUID
    task_name: str
    since: datetime


class Stepping(NamedTuple):
    run_id: uuid.UUID
    task_name: str


class ProcessJournal:
    """A worker process's shared header and journal of outcomes (see the module docstring)."""

    def __init__(self, header: Any, buffer: Any) -> None:
        self._header = header
        self._buffer = buffer
        self._address = ctypes.addressof(buffer)  # memmove: a fraction of a slice's cost
        self.capacity = len(buffer)
        self._task_name: str | None = None
        self._stepping_task: str | None = None

    def __getstate__(self) -> tuple[Any, Any]:  # pickled to a child when it is started
        return self._header, self._buffer

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self.__init__(*state)  # type: ignore[misc]  # the address in this process's mapping

    @classmethod
    def shared(cls, context: BaseContext, capacity: int = JOURNAL_BYTES) -> ProcessJournal:
        """In shared memory, for a child process (passed to it when it is started)."""
        return cls(context.RawValue(_Header), context.RawArray(ctypes.c_char, capacity))

    @classmethod
    def private(cls, capacity: int = JOURNAL_BYTES) -> ProcessJournal:
        """In this process's own memory (a worker without a supervisor)."""
        return cls(_Header(), (ctypes.c_char * capacity)())

    def reset(self) -> None:
        """Empty, for the next worker process (the fork server's journals are reused: made
        before it forked, they are the only ones its worker processes can share)."""
        ctypes.memset(ctypes.addressof(self._header), 0, ctypes.sizeof(self._header))
        self._task_name = self._stepping_task = None

    # -- runs processed, boot ---------------------------------------------------------------

    @property
    def processed(self) -> int:
        return int(self._header.processed)

    def count_processed(self) -> None:
        self._header.processed += 1

    @property
    def ready(self) -> bool:
        """Whether the process got as far as claiming runs."""
        return bool(self._header.ready)

    def set_ready(self) -> None:
        self._header.ready = 1

    @property
    def error(self) -> str:
        """What stopped the process before it was ready, if it could say."""
        return bytes(self._header.error).decode("utf-8", "replace")

    def set_error(self, text: str) -> None:
        data = text.encode("utf-8", "replace")[: _ERROR_BYTES - 1]
        self._header.error = data

    # -- the run being executed -------------------------------------------------------------

    def begin(self, run_id: uuid.UUID, task_name: str, since: float) -> None:
        """``run_id`` (a run of ``task_name``) is about to be executed from ``since`` (seconds
        since the epoch on the database's clock)."""
        header = self._header
        header.executing_since = since
        if task_name != self._task_name:  # most runs are of the task before them
            header.executing_task = task_name.encode("utf-8", "replace")[:255]
            self._task_name = task_name
        ctypes.memmove(header.executing, run_id.bytes, 16)
        header.busy = 1

    def end(self) -> None:
        """No run is being executed (its outcome is written or journaled)."""
        self._header.busy = 0

    @property
    def executing(self) -> Executing | None:
        """The run being executed, if any."""
        if not self._header.busy:
            return None
        raw = bytes(self._header.executing)
        return Executing(
            uuid.UUID(bytes=raw),
            bytes(self._header.executing_task).decode("utf-8", "replace"),
            datetime.fromtimestamp(self._header.executing_since, tz=UTC),
        )

    # -- the async run taking a step --------------------------------------------------------

    def step(self, run_id: uuid.UUID, task_name: str) -> None:
        """The coroutine of ``run_id`` (a run of ``task_name``) takes a step on the loop."""
        header = self._header
        if task_name != self._stepping_task:  # as in begin(): mostly the same task
            header.stepping_task = task_name.encode("utf-8", "replace")[:255]
            self._stepping_task = task_name
        ctypes.memmove(header.stepping_run, run_id.bytes, 16)
        header.stepping = 1

    def stepped(self) -> None:
        """The step is over: the coroutine awaits (or has ended)."""
        self._header.stepping = 0

    @property
    def stepping(self) -> Stepping | None:
        """The async run whose coroutine was taking a step, if one was."""
        if not self._header.stepping:
            return None
        return Stepping(
            uuid.UUID(bytes=bytes(self._header.stepping_run)),
            bytes(self._header.stepping_task).decode("utf-8", "replace"),
        )

    # -- outcomes not written yet -----------------------------------------------------------

    def add(self, entry: bytes) -> bool:
        """Append one outcome (a JSON object); ``False`` if there is no room for it."""
        used = self._header.used
        start = used + 1 if used else 0  # a comma between entries
        end = start + len(entry)
        if end > self.capacity:
            return False
        if used:
            entry = b"," + entry
        ctypes.memmove(self._address + used, entry, len(entry))
        self._header.used = end  # published after the bytes: a reader never sees half
        return True

    @property
    def size(self) -> int:
        """Bytes of outcomes not written yet."""
        return int(self._header.used)

    def entries(self, size: int | None = None) -> str:
        """The first ``size`` bytes of outcomes (all by default) as a JSON array."""
        used = self.size if size is None else size
        return "[" + ctypes.string_at(self._address, used).decode("utf-8") + "]"

    def written(self, size: int) -> None:
        """The first ``size`` bytes of outcomes are in the database: forget them."""
        used = self.size
        if size <= 0:
            return
        if size >= used:
            self._header.used = 0
            return
        rest = used - size - 1  # -1: the separator after the written part
        ctypes.memmove(self._address, self._address + size + 1, rest)
        self._header.used = rest
