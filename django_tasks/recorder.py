"""Recording inline and submitted runs: batched by a background writer, or synchronously.

Inline calls and ``.submit()`` runs are orchestrated in the caller's process (as Prefect
orchestrates task runs client-side). Writing each of their state changes as it happens would
cost a round trip and a commit per transition, more than a small task itself. Instead each
change is queued here and a writer thread writes them in batches: one statement per batch
(runs upserted, history rows and dependency edges inserted, as data-modifying CTEs), when
``RECORD_BATCH_SIZE`` events wait or ``RECORD_FLUSH_INTERVAL`` seconds after the first, at
exit, and when :func:`flush` is called. Readers (the admin, the API) are therefore eventually
consistent for these runs - a fraction of a second behind.

The writer has its own connection, outside the caller's transaction: a run that happened is
recorded even if the view that called it rolls back. ``RECORD_MODE = "sync"`` writes each
record at once on Django's connection, in the caller's transaction instead (the simplest
choice inside ``TestCase``). Background runs (``.delay()``) never go through here: their
writes are the queue itself and are synchronous.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from django.db import DatabaseError, DataError, transaction
from django.utils import timezone
from psycopg.types.json import Json

from . import sql
from .conf import task_settings
from .states import StateType, check_transition
from .storable import storable_json, storable_message

__all__ = ["RunRecord", "RunWriter", "flush", "record", "writer"]

logger = logging.getLogger("django_tasks.recorder")

#: In :meth:`RunRecord.move`, a field set to ``NOW`` gets the new state's timestamp.
NOW = object()

#: Seconds without anything to write after which the writer closes its connection.
IDLE_CLOSE = 5.0


@dataclass
class RunRecord:
    """The current picture of one inline or submitted run, and what happened since the last
    record of it: new history rows and upstream edges."""

    id: uuid.UUID
    task_key: str
    task_name: str
    name: str
    origin: str
    queue: str
    priority: int
    tags: list[str]
    state_type: StateType
    state_name: str
    state_message: str
    attempts: int
    parameters_preview: Any
    created: datetime
    updated: datetime
    started: datetime | None = None
    finished: datetime | None = None
    result_preview: Any = None
    #: The last ``set_progress()`` value (django_tasks.progress), as JSON.
    progress: Any = None
    #: The signed result payload, when the task persists results (persist_result, caching).
    result: bytes | None = None
    traceback: str = ""
    #: New history rows: (type, name, message, timestamp).
    states: list[tuple[StateType, str, str, datetime]] = field(default_factory=list)
    #: New upstream edges: (upstream run id, kind, allow_failure).
    edges: list[tuple[uuid.UUID, str, bool]] = field(default_factory=list)
    #: The last state type written for this run (checked against ALLOWED_MOVES).
    written_type: StateType | None = None
    #: The bound arguments (never written: the preview is), for the run context.
    arguments: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The run's thread changes the record while the writer's thread reads it.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def move(
        self,
        state_type: StateType,
        name: str,
        message: str = "",
        timestamp: datetime | None = None,
        **changes: Any,
    ) -> None:
        """Enter a new state (and change other fields with it), as one change."""
        when = timestamp or timezone.now()
        message = storable_message(message) if message else message
        with self.lock:
            self.states.append((state_type, name, message, when))
            self.state_type, self.state_name, self.state_message = state_type, name, message
            self.updated = when
            for key, value in changes.items():
                setattr(self, key, when if value is NOW else value)

    def update(self, **changes: Any) -> None:
        """Change fields other than the state."""
        with self.lock:
            for key, value in changes.items():
                setattr(self, key, value)

    def take(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """The run row, its new history rows and new edges, as JSON-ready dicts; clears them.

        Every new state is checked against the table of allowed moves first."""
        with self.lock:
            return self._take()

    def _take(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        for state_type, *_ in self.states:
            self.written_type = check_transition(self.written_type, state_type)
        row = {
            "id": str(self.id),
            "task_key": self.task_key,
            "task_name": self.task_name,
            "name": self.name,
            "origin": self.origin,
            "queue": self.queue,
            "priority": self.priority,
            "tags": self.tags,
            "state_type": self.state_type.value,
            "state_name": self.state_name,
            "state_message": self.state_message,
            "attempts": self.attempts,
            "parameters_preview": self.parameters_preview,
            "result_preview": self.result_preview,
            "progress": self.progress,
            "result": base64.b64encode(self.result).decode() if self.result is not None else None,
            "traceback": self.traceback,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
        }
        states = [
            {
                "run_id": str(self.id),
                "type": t.value,
                "name": n,
                "message": m,
                "timestamp": ts.isoformat(),
            }
            for t, n, m, ts in self.states
        ]
        edges = [
            {"downstream": str(self.id), "upstream": str(up), "kind": k, "allow_failure": a}
            for up, k, a in self.edges
        ]
        self.states, self.edges = [], []
        return row, states, edges


@dataclass
class _Batch:
    """What one RECORD_RUNS statement writes: run rows, history rows, edges, log lines."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Records in it (runs and log lines), as counted by the writer."""
        return len(self.runs) + len(self.logs)

    def params(self) -> dict[str, Any]:
        return {
            "runs": Json(self.runs),
            "states": Json(self.states),
            "edges": Json(self.edges),
            "logs": Json(self.logs),
        }

    def parts(self) -> list[_Batch]:
        """One batch per run (with its history and edges) and per log line: to find and keep
        apart a record the database refuses."""
        parts = [
            _Batch(
                [row],
                [s for s in self.states if s["run_id"] == row["id"]],
                [e for e in self.edges if e["downstream"] == row["id"]],
            )
            for row in self.runs
        ]
        return parts + [_Batch(logs=[line]) for line in self.logs]

    def storable(self) -> _Batch:
        """The same records with every string and number made storable (escaped)."""
        return _Batch(
            *(storable_json(rows) for rows in (self.runs, self.states, self.edges, self.logs))
        )


def _batch(records: list[RunRecord], logs: list[dict[str, Any]] | None = None) -> _Batch:
    """One statement's worth of ``records`` (and log lines)."""
    batch = _Batch(logs=list(logs or []))
    for run in records:
        row, new_states, new_edges = run.take()
        batch.runs.append(row)
        batch.states.extend(new_states)
        batch.edges.extend(new_edges)
    return batch


class RunWriter:
    """The per-process writer thread and its queue (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # Runs with changes not written yet. A record is read (serialized) by the writer when
        # it writes, so a short run's Pending, Running and Completed cost one row.
        self._dirty: dict[uuid.UUID, RunRecord] = {}
        self._logs: list[dict[str, Any]] = []
        self._first_at: float | None = None
        self._queued = 0  # records accepted
        self._written = 0  # records written (or given up on)
        self._lost = 0  # records given up on since the last flush()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        #: Statements sent and state events written, for the measurements in docs/concepts.md.
        self.statements = 0
        self.events = 0

    def put(self, record: RunRecord) -> None:
        """``record`` has changed: write it with the next batch (put it again after later
        changes; it is written once per batch, with every state it went through)."""
        with self._cond:
            self._ensure_thread()
            self._dirty[record.id] = record
            self._queued += 1
            self._started_batch()
            if len(self._dirty) >= task_settings().RECORD_BATCH_SIZE:
                self._cond.notify_all()

    def put_log(self, line: dict[str, Any]) -> None:
        """A log line of a run (see :mod:`django_tasks.logs`), written with the next batch."""
        with self._cond:
            self._ensure_thread()
            self._logs.append(line)
            self._queued += 1
            self._started_batch()
            if len(self._logs) >= task_settings().RECORD_BATCH_SIZE:
                self._cond.notify_all()

    def _started_batch(self) -> None:
        """The first event of a batch: the writer, asleep for as long as it may stay idle,
        wakes to wait RECORD_FLUSH_INTERVAL instead (a log line of a long run appeared only
        when the idle wait ended, seconds later). Called with the condition held."""
        if self._first_at is None:
            self._first_at = time.monotonic()
            self._cond.notify_all()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write everything queued so far. ``False`` if that took longer than ``timeout``, or
        if a record queued since the last ``flush()`` could not be written (the log says
        which and why)."""
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                return True
            target = self._queued
            self._first_at = 0.0  # due now
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: self._written >= target, timeout)
            lost, self._lost = self._lost, 0
            return done and not lost

    def close(self) -> None:
        """Flush and stop the thread (at exit; the next record starts a new one)."""
        self.flush()
        with self._cond:
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread.is_alive():
            thread.join(10)

    # -- the thread ------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        # First record in this process (or in a child forked after the parent wrote): what
        # was queued belongs to the parent, which writes it.
        self._dirty, self._logs, self._first_at = {}, [], None
        self._queued = self._written = 0
        self._pid = os.getpid()
        self._thread = threading.Thread(
            target=self._loop, name="django_tasks-recorder", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        conn: psycopg.Connection[Any] | None = None
        while True:
            with self._cond:
                while not self._due() and self._thread is me:
                    if not self._cond.wait(self._wait_time()) and self._first_at is None:
                        conn = _close(conn)  # idle: do not hold a connection
                if self._thread is not me and not self._dirty and not self._logs:
                    break
                dirty, self._dirty, self._first_at = self._dirty, {}, None
                logs, self._logs = self._logs, []
                upto = self._queued
            lost = 0
            if dirty or logs:
                conn, lost = self._write(list(dirty.values()), logs, conn)
            with self._cond:
                self._written = upto
                self._lost += lost
                self._cond.notify_all()
        _close(conn)

    def _wait_time(self) -> float:
        if self._first_at is None:
            return IDLE_CLOSE
        due = self._first_at + task_settings().RECORD_FLUSH_INTERVAL
        return max(0.0, due - time.monotonic())

    def _due(self) -> bool:
        if self._first_at is None:
            return False
        conf = task_settings()
        waited = time.monotonic() - self._first_at
        size = max(len(self._dirty), len(self._logs))
        return size >= conf.RECORD_BATCH_SIZE or waited >= conf.RECORD_FLUSH_INTERVAL

    def _write(
        self,
        records: list[RunRecord],
        logs: list[dict[str, Any]],
        conn: psycopg.Connection[Any] | None,
    ) -> tuple[psycopg.Connection[Any] | None, int]:
        """One statement for the whole batch. If the database refuses it, each record is
        written on its own, and one refused again is written escaped: a bad record never
        costs the others. Returns the connection and the number of records given up on."""
        try:
            batch = _batch(records, logs)
        except Exception:  # a bug, not data: keep the writer thread alive
            logger.exception("Could not prepare %d run records", len(records))
            return conn, len(records) + len(logs)
        conn, error = self._execute(batch, conn)
        if error is None:
            self.events += len(batch.states)
            return conn, 0
        if isinstance(error, psycopg.OperationalError):
            logger.error("Gave up recording %d runs and log lines: %s", batch.size, error)
            return conn, batch.size
        lost = 0
        for part in batch.parts():
            conn, error = self._execute(part, conn)
            if error is not None:
                refused = error
                conn, error = self._execute(part.storable(), conn)
                what = f"run {part.runs[0]['id']}" if part.runs else "a run log line"
                if error is None:
                    logger.warning("Recorded %s with escaped values (refused: %s)", what, refused)
                else:
                    logger.error("Could not record %s: %s", what, error)
                    lost += part.size
                    continue
            self.events += len(part.states)
        return conn, lost

    def _execute(
        self, batch: _Batch, conn: psycopg.Connection[Any] | None
    ) -> tuple[psycopg.Connection[Any] | None, Exception | None]:
        """Send one batch; a lost connection is retried on a new one (five tries)."""
        from .connect import open_worker_connection

        error: Exception | None = None
        for attempt in range(5):
            try:
                if conn is None:
                    conn = open_worker_connection()
                conn.execute(sql.RECORD_RUNS, batch.params())
                self.statements += 1
                return conn, None
            except psycopg.OperationalError as exc:
                logger.warning(
                    "Recording %d runs failed (try %d): %s", batch.size, attempt + 1, exc
                )
                error, conn = exc, _close(conn)
                time.sleep(0.1 * 2**attempt)
            except (psycopg.Error, ValueError, TypeError) as exc:  # data the database refuses
                return conn, exc
        return conn, error


def _close(conn: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
    """Close ``conn`` if open; returns ``None`` to put in its place."""
    if conn is not None:
        conn.close()
    return None


#: The process's writer.
writer = RunWriter()
atexit.register(writer.close)


def record(run: RunRecord) -> None:
    """Record ``run``'s current state: queued for the writer, or at once in ``sync`` mode."""
    if task_settings().RECORD_MODE == "sync":
        _write_now(run)
    else:
        writer.put(run)


def flush(timeout: float | None = 10.0) -> bool:
    """Write every queued inline/submitted run record now (tests, scripts, before reading)."""
    return writer.flush(timeout)


def _write_now(run: RunRecord) -> None:
    """``sync`` mode: one statement on Django's connection, in a savepoint of the caller's
    transaction (written escaped if refused as it is). A failure is logged, never raised:
    recording must not change the call."""
    from django.db import connections

    batch = _batch([run])
    alias = task_settings().DATABASE_ALIAS
    refused: Exception | None = None
    for attempt in (batch, batch.storable()):
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                cursor.execute(sql.RECORD_RUNS, attempt.params())
            return
        except (DataError, ValueError) as exc:  # refused as it is: try it escaped
            refused = exc
        except DatabaseError:
            logger.warning(
                "Could not record inline run %s of %s", run.id, run.task_name, exc_info=True
            )
            return
    logger.warning("Could not record inline run %s of %s: %s", run.id, run.task_name, refused)
