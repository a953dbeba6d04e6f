"""How far a run has got: ``set_progress(done, total=None, message="")`` inside any task.

A call only keeps the value in memory; one thread per process writes the runs' latest values,
each run at most every :data:`INTERVAL` seconds, so a tight loop of calls costs a dictionary
update each and the database sees a few writes a second. A run's last value is always
written: by that thread within :data:`INTERVAL`, and when the run ends, before its outcome (a
worker's run) or with its record (inline and submitted runs).

The run's row keeps it in ``progress`` - ``{"done": 40, "total": 100, "message": "..."}`` - which
the admin and the dashboard show as a bar while the run is RUNNING, the API gives as
``progress``, ``taskruns logs --follow`` prints as it changes, and ``future.progress`` reads.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString
from psycopg.types.json import Json

from .context import get_run_context
from .storable import shown, storable_text

__all__ = ["INTERVAL", "Progress", "progress_html", "set_progress"]

logger = logging.getLogger("django_tasks.progress")

#: Seconds between two writes of one run's progress.
INTERVAL = 0.25
#: Characters of a progress message kept.
MESSAGE_LENGTH = 200

#: Write a run's progress while the run is not final (a late write never follows the outcome).
UPDATE = """
UPDATE django_tasks_taskrun SET progress = %(progress)s
WHERE id = %(id)s AND state_type NOT IN ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')
"""

Execute = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Progress:
    """A run's progress: ``done`` of ``total`` (unknown: ``None``), with a message."""

    done: float
    total: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    @property
    def percent(self) -> int | None:
        fraction = self.fraction
        return None if fraction is None else int(fraction * 100)

    def as_json(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "message": self.message}

    @classmethod
    def from_json(cls, value: object) -> Progress | None:
        """The progress a row holds (``None`` for none, or for a value it cannot be)."""
        if not isinstance(value, dict):
            return None
        try:
            return _checked(value.get("done"), value.get("total"), value.get("message", ""))
        except (TypeError, ValueError):
            return None


def progress_html(value: object) -> SafeString:
    """A run's progress for a page: a bar (known total) or a count, and the message - all
    escaped (the message is the task's text). ``-`` when there is none."""
    progress = Progress.from_json(value)
    if progress is None:
        return format_html("{}", "-")
    done = f"{progress.done:g}"
    if progress.total is None:
        return format_html('<span class="djt-progress">{} {}</span>', done, progress.message)
    return format_html(
        '<span class="djt-progress"><progress value="{}" max="{}">{} %</progress> {} / {} {}'
        "</span>",
        min(progress.done, progress.total),
        f"{progress.total:g}",
        progress.percent,
        done,
        f"{progress.total:g}",
        progress.message,
    )


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"set_progress(): {name} must be a number, got {shown(value)}.")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ValueError(
            f"set_progress(): {name} must be a finite number >= 0, got {shown(value)}."
        )
    return int(number) if isinstance(value, int) else number


def _checked(done: object, total: object, message: object) -> Progress:
    if not isinstance(message, str):
        raise TypeError(f"set_progress(): message must be a str, got {shown(message)}.")
    value_total = None if total is None else _number("total", total)
    if value_total == 0:
        raise ValueError("set_progress(): total must be more than 0 (or None: unknown).")
    return Progress(_number("done", done), value_total, storable_text(message, MESSAGE_LENGTH))


def set_progress(done: float, total: float | None = None, message: str = "") -> None:
    """Say how far the current run has got (``done`` of ``total``); cheap enough for every
    item of a loop. Outside a run: :class:`~.context.MissingContextError`; a value that is
    not a finite number >= 0: ``TypeError``/``ValueError``, and nothing is kept."""
    value = _checked(done, total, message)
    writer.set(get_run_context().id, value)


class ProgressWriter:
    """The latest progress of this process's runs, and the thread that writes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._latest: dict[uuid.UUID, Progress] = {}  # every run with a value, until it ends
        self._pending: set[uuid.UUID] = set()  # values not written yet
        self._written_at: dict[uuid.UUID, float] = {}
        self._write_lock = threading.Lock()  # one write of a run's progress at a time
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._conn: Any = None

    def set(self, run_id: uuid.UUID, value: Progress) -> None:
        with self._lock:
            self._latest[run_id] = value
            self._pending.add(run_id)
            if self._thread is None or self._pid != os.getpid():
                self._start()
        self._wake.set()

    def get(self, run_id: uuid.UUID) -> Progress | None:
        """The run's latest value in this process (``None``: none, or the run ended)."""
        return self._latest.get(run_id)

    def end(self, run_id: uuid.UUID, execute: Execute | None = None) -> Progress | None:
        """The run ended: its last value, written now with ``execute`` if it is not written
        yet (without ``execute``, the caller records it - inline and submitted runs)."""
        if run_id not in self._latest:  # most runs: one dictionary lookup
            return None
        with self._lock:
            value = self._latest.pop(run_id, None)
            self._pending.discard(run_id)
            self._written_at.pop(run_id, None)
        if value is not None and execute is not None:
            # Written again even if the thread wrote it: the thread may be writing an older
            # value of the run right now; this write comes after it.
            with self._write_lock:
                execute(UPDATE, {"id": run_id, "progress": Json(value.as_json())})
        return value

    def close(self) -> None:
        """Close the thread's connection (it opens another when it has values to write)."""
        with self._write_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._conn = None  # a forked child must not use its parent's connection
        self._thread = threading.Thread(target=self._run, name="django_tasks-progress", daemon=True)
        self._thread.start()

    def _due(self) -> tuple[list[tuple[uuid.UUID, Progress]], float]:
        """Values to write now, and how long until the next one is due."""
        now = time.monotonic()
        due, wait = [], INTERVAL
        with self._lock:
            for run_id in list(self._pending):
                left = self._written_at.get(run_id, 0.0) + INTERVAL - now
                if left <= 0:
                    self._pending.discard(run_id)
                    self._written_at[run_id] = now
                    due.append((run_id, self._latest[run_id]))
                else:
                    wait = min(wait, left)
            if not self._pending:
                self._wake.clear()
                wait = INTERVAL if not due else wait
        return due, wait

    def _run(self) -> None:
        while True:
            self._wake.wait()
            due, wait = self._due()
            if due:
                try:
                    self._write(due)
                except Exception:  # a lost connection: the next value is written next time
                    logger.warning("Could not write the progress of runs", exc_info=True)
                    self._conn = None
            time.sleep(wait)

    def _write(self, due: list[tuple[uuid.UUID, Progress]]) -> None:
        from .connect import open_worker_connection

        if self._conn is None or self._conn.closed:
            self._conn = open_worker_connection(name="progress")
        with self._write_lock:
            with self._lock:  # the runs' values now; a run that ended meanwhile is skipped
                params = [
                    {"id": run_id, "progress": Json(self._latest[run_id].as_json())}
                    for run_id, _ in due
                    if run_id in self._latest
                ]
            if params:
                with self._conn.cursor() as cursor:
                    cursor.executemany(UPDATE, params)


writer = ProgressWriter()
