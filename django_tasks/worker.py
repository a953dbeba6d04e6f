"""The worker: claims runs from the topic, executes them, records their states.

``manage.py runtaskworker`` is a thin wrapper around :class:`Worker`. One process runs
``concurrency`` threads; each holds its own connection and loops *claim a batch -> for each run:
RUNNING, call the function outside any transaction, COMPLETED/FAILED*. The main thread LISTENs
and wakes idle threads when a run is enqueued; they also poll, because LISTEN does not pass
through PgBouncer in transaction mode.

Stopping (SIGTERM/SIGINT, or :meth:`Worker.stop`): no new claims, runs already executing finish,
claimed runs not yet started are handed back (PENDING -> SCHEDULED) for another worker. A second
signal exits at once; what was running is left for the rescue of a later worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import psycopg
from django.db import close_old_connections
from psycopg.types.json import Json

from . import sql
from .conf import task_settings
from .registry import UnknownTask, registry
from .serializers import PayloadError, PayloadSignatureError, dumps, loads, preview
from .states import StateName, StateType
from .topic import open_worker_connection

__all__ = ["ClaimedRun", "Worker"]

logger = logging.getLogger("django_tasks.worker")

T = TypeVar("T")


@dataclass(frozen=True)
class ClaimedRun:
    id: uuid.UUID
    task_key: str
    task_name: str
    parameters: bytes


class _QueueConnection:
    """One worker thread's connection, reopened with backoff whenever the database goes away.

    Connection errors are transient by rule: a worker that gives up when PostgreSQL restarts
    stops all processing, so every statement is retried until the database answers (or, for a
    claim, until the worker is stopping).
    """

    def __init__(self, alias: str, stopping: Callable[[], bool]) -> None:
        self.alias = alias
        self.stopping = stopping
        self.conn: psycopg.Connection[Any] | None = None

    def execute(self, query: str, params: dict[str, Any], *, give_up_on_stop: bool) -> list[Any]:
        delay = 0.1
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = open_worker_connection(self.alias)
                cursor = self.conn.execute(query, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError as exc:
                logger.warning("Database unavailable (%s); retrying in %.1fs", exc, delay)
                self.close()
                if give_up_on_stop and self.stopping():
                    return []
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):  # closing a dead socket may complain
                self.conn.close()
            self.conn = None


class Worker:
    """Executes background runs of the given queues until stopped."""

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        burst: bool = False,
        alias: str | None = None,
        handle_signals: bool = True,
    ) -> None:
        conf = task_settings()
        self.queues = list(queues or [conf.DEFAULT_QUEUE])
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}.")
        self.concurrency = concurrency
        self.batch_size = batch_size or conf.BATCH_SIZE
        self.poll_interval = conf.POLL_INTERVAL if poll_interval is None else poll_interval
        self.burst = burst
        self.alias = alias or conf.DATABASE_ALIAS
        self.handle_signals = handle_signals
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._generation = 0
        self._signals = 0
        self.processed = 0
        self._count_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, with ``burst``, until no run is ready). Returns the exit code."""
        previous = {}
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        logger.info(
            "Worker %s started: queues=%s concurrency=%d", self.name, self.queues, self.concurrency
        )
        threads = [
            threading.Thread(target=self._slot, name=f"django_tasks-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        if self.burst:
            for thread in threads:
                thread.join()
        else:
            self._listen(threads)
        logger.info("Worker %s stopped after %d runs", self.name, self.processed)
        return 0

    def stop(self) -> None:
        """Take no new runs; running ones finish. Safe to call from any thread."""
        self._stopping.set()
        self._bump()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("Second signal: stopping at once; running runs will be rescued.")
            os._exit(1)
        logger.info("Signal %d: finishing running runs, taking no new ones.", signum)
        self.stop()

    def _bump(self) -> None:
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    # -- wake-up ----------------------------------------------------------------------------

    def _listen(self, threads: list[threading.Thread]) -> None:
        """LISTEN in the main thread and wake idle slots on each NOTIFY for our queues."""
        listener = _QueueConnection(self.alias, self._stopping.is_set)
        while not self._stopping.is_set() and any(t.is_alive() for t in threads):
            try:
                if listener.conn is None:
                    listener.execute(sql.LISTEN, {}, give_up_on_stop=True)
                    self._bump()  # we may have missed notifications while not listening
                    continue
                for note in listener.conn.notifies(timeout=0.25):
                    if note.payload in self.queues:
                        self._bump()
            except psycopg.OperationalError as exc:
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
                listener.close()
                time.sleep(0.1)
        listener.close()
        for thread in threads:
            thread.join()

    # -- one slot ---------------------------------------------------------------------------

    def _slot(self) -> None:
        db = _QueueConnection(self.alias, self._stopping.is_set)
        try:
            while not self._stopping.is_set():
                generation = self._generation
                runs = self._claim(db)
                if not runs:
                    if self.burst:
                        return
                    self._sleep(generation)
                    continue
                for index, run in enumerate(runs):
                    if self._stopping.is_set():
                        self._hand_back(db, runs[index:])
                        break
                    self._process(db, run)
        except Exception:  # pragma: no cover - a bug here must not hang the process silently
            logger.exception("Worker thread crashed")
            self.stop()
        finally:
            db.close()

    def _sleep(self, generation: int) -> None:
        """Wait for a NOTIFY seen after ``generation`` was read, a stop, or the poll interval.

        Comparing generations (not a shared Event) means a notification that arrives while
        this thread is claiming is not lost: the thread goes straight back to claiming.
        """
        with self._wake:
            self._wake.wait_for(lambda: self._generation != generation, self.poll_interval)

    def _claim(self, db: _QueueConnection) -> list[ClaimedRun]:
        """Claim a batch from the first of our queues (in the order given) that has ready runs."""
        for queue in self.queues:
            rows = db.execute(
                sql.CLAIM,
                {"queue": queue, "limit": self.batch_size, "worker": self.name},
                give_up_on_stop=True,
            )
            if rows:
                return [ClaimedRun(row[0], row[1], row[2], bytes(row[3])) for row in rows]
        return []

    def _hand_back(self, db: _QueueConnection, runs: Sequence[ClaimedRun]) -> None:
        ids = [run.id for run in runs]
        db.execute(sql.HAND_BACK, {"ids": ids, "worker": self.name}, give_up_on_stop=False)
        logger.info("Handed back %d claimed runs", len(ids))

    # -- one run ----------------------------------------------------------------------------

    def _process(self, db: _QueueConnection, run: ClaimedRun) -> None:
        try:
            task = registry.get(run.task_key)
        except UnknownTask:
            self._refuse(
                db,
                run,
                f"Unknown task {run.task_name!r} (key {run.task_key}): no task with this key is "
                f"registered in this worker. Is its module imported by an installed app's "
                f"tasks.py, and does the worker run the same code as the enqueuer?",
            )
            return
        try:
            args, kwargs = loads(run.parameters)
        except PayloadSignatureError as exc:
            self._refuse(db, run, f"Refused to unpickle the parameters: {exc}")
            return
        except Exception as exc:
            self._refuse(db, run, f"The parameters could not be unpickled: {exc!r}")
            return
        started = db.execute(sql.START, {"id": run.id, "worker": self.name}, give_up_on_stop=False)
        if not started:
            logger.warning("Run %s is no longer held by this worker; skipped", run.id)
            return
        logger.debug("Run %s (%s) started", run.id, task.name)
        self._finish(db, run, *self._call(task.fn, args, kwargs))

    def _call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[StateType, str, bytes | None, Any, str]:
        """Run the function; return (type, message, payload, preview, traceback)."""
        close_old_connections()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            tb = traceback.format_exc()
            try:
                payload: bytes | None = dumps(exc, what="exception")
            except PayloadError:
                payload = None
            return StateType.FAILED, f"{type(exc).__name__}: {exc}", payload, None, tb
        finally:
            close_old_connections()
        try:
            return StateType.COMPLETED, "", dumps(value, what="result"), preview(value), ""
        except PayloadError as exc:
            return StateType.FAILED, str(exc), None, None, traceback.format_exc()

    def _finish(
        self,
        db: _QueueConnection,
        run: ClaimedRun,
        state_type: StateType,
        message: str,
        payload: bytes | None,
        result_preview: Any,
        tb: str,
    ) -> None:
        name = StateName.COMPLETED if state_type == StateType.COMPLETED else StateName.FAILED
        db.execute(
            sql.FINISH,
            {
                "id": run.id,
                "worker": self.name,
                "type": state_type.value,
                "name": name,
                "message": message,
                "result": payload,
                "result_preview": Json(result_preview),
                "traceback": tb,
            },
            give_up_on_stop=False,
        )
        with self._count_lock:
            self.processed += 1
        logger.debug("Run %s %s", run.id, name)

    def _refuse(self, db: _QueueConnection, run: ClaimedRun, message: str) -> None:
        logger.error("Run %s failed before starting: %s", run.id, message)
        db.execute(
            sql.REFUSE,
            {"id": run.id, "worker": self.name, "message": message},
            give_up_on_stop=False,
        )
        with self._count_lock:
            self.processed += 1
