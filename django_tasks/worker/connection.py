"""A worker's own connection, reopened with backoff whenever the database goes away."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from ..connect import open_worker_connection
from ..poolers import disconnected, lost, preparing, stop_preparing

__all__ = ["MAX_BACKOFF", "QueueConnection", "clock_offset"]

logger = logging.getLogger("django_tasks.worker")

#: The longest wait, in seconds, between two tries of a lost connection.
MAX_BACKOFF = 5.0
#: Round trips that measure the database's clock when a connection opens (the quickest wins).
_CLOCK_SAMPLES = 3


def clock_offset(conn: psycopg.Connection[Any]) -> float:
    """The database's clock minus this process's, in seconds, from the quickest of
    :data:`_CLOCK_SAMPLES` round trips (its middle is nearest to when the database read its
    clock)."""
    samples = []
    for _ in range(_CLOCK_SAMPLES):
        before = time.time()
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = time.time()
        assert row is not None
        samples.append((after - before, float(row[0]) - (before + after) / 2))
    return min(samples)[1]


class QueueConnection:
    """One autocommit connection, reopened on demand.

    Connection errors are transient by rule: a worker that gives up when PostgreSQL restarts
    stops all processing, so every statement is retried until the database answers, or, when
    ``give_up_on_stop`` is set (claims, polls), until the worker is stopping. ``abandon``
    says when even the others give up: the process is leaving at once (a supervisor asked
    twice to stop, or past its shutdown timeout, while the database is away), and what they
    were to write is left to the rescue.
    """

    def __init__(
        self,
        alias: str,
        stopping: Callable[[], bool],
        abandon: Callable[[], bool] | None = None,
    ) -> None:
        self.alias = alias
        self.stopping = stopping
        self.abandon = abandon
        self.conn: psycopg.Connection[Any] | None = None
        self.clock_offset = 0.0
        self.prepare = preparing()
        #: Since when (monotonic clock) the database has been unreachable, if it is now.
        self.lost_since: float | None = None
        #: When the database answered again after it was lost (monotonic clock).
        self.regained_at: float | None = None

    def open(self) -> psycopg.Connection[Any]:
        """Connect, and measure how far the database's clock is from ours.

        Deferred completions are stamped by the worker (:meth:`db_time`) but must sort with
        the stamps the database gives (``clock_timestamp()``): the offset keeps one clock. It
        is read from the quickest of a few round trips: the first one of a new session is
        slow to reach its clock (the backend loads its caches) and biased the offset by
        about 0.1 ms - every RUNNING time of a deferred run was that much late.
        """
        conn = open_worker_connection(self.alias)
        # Django turns preparing off (prepare_threshold=None), and then psycopg ignores even
        # an explicit prepare=True: switch it back on for the queue's own connections.
        conn.prepare_threshold = 5 if self.prepare else None
        self.clock_offset = clock_offset(conn)
        self.conn = conn
        return conn

    def db_time(self) -> datetime:
        """Now, on the database's clock."""
        return datetime.fromtimestamp(self.db_epoch(), tz=UTC)

    def db_epoch(self) -> float:
        """Now, on the database's clock, in seconds since the epoch."""
        return time.time() + self.clock_offset

    def execute(
        self, query: str, params: dict[str, Any] | None = None, *, give_up_on_stop: bool
    ) -> list[Any]:
        delay = 0.1
        while True:
            try:
                conn = self.conn if self.conn is not None and not self.conn.closed else self.open()
                # Server-side prepared: the queue's statements are few and fixed, and planning
                # them costs more than running them (PREPARE_STATEMENTS=False for PgBouncer
                # versions that cannot keep prepared statements in transaction mode).
                cursor = conn.execute(query, params, prepare=self.prepare and params is not None)
                rows = cursor.fetchall() if cursor.description else []
            except psycopg.Error as exc:
                if self._mend(exc, delay):  # or raise: not about the connection
                    continue
                if (give_up_on_stop and self.stopping()) or self._abandoned():
                    return []
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            else:
                if self.lost_since is not None:
                    self._regained()
                return rows

    def execute_many(self, query: str, params_seq: list[dict[str, Any]]) -> list[list[Any]]:
        """``query`` once per parameters, in one transaction and one round trip (psycopg
        pipelines ``executemany``): the rows each returned, in order. All are written or none;
        a lost connection is retried like :meth:`execute` (the statements it is used for
        change nothing when run twice)."""
        delay = 0.1
        while True:
            try:
                conn = self.conn if self.conn is not None and not self.conn.closed else self.open()
                results: list[list[Any]] = []
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(query, params_seq, returning=True)
                    while True:
                        results.append(cursor.fetchall() if cursor.description else [])
                        if not cursor.nextset():
                            break
            except psycopg.Error as exc:
                if self._mend(exc, delay):
                    continue
                if self._abandoned():
                    return [[] for _ in params_seq]
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            else:
                if self.lost_since is not None:
                    self._regained()
                return results

    def _abandoned(self) -> bool:
        if self.abandon is None or not self.abandon():
            return False
        logger.warning("Database unavailable and leaving at once: a statement is given up")
        return True

    def recovering(self, window: float) -> bool:
        """Whether the database is unreachable now, or answered again less than ``window``
        seconds ago after it was lost. Every worker lost it too, and each needs up to
        :data:`MAX_BACKOFF` to try again and beat: meanwhile their heartbeats look old, and
        a rescue would take their running runs from them (see :func:`.maintenance.rescue`)."""
        if self.lost_since is not None:
            return True
        return self.regained_at is not None and time.monotonic() - self.regained_at < window

    def _regained(self) -> None:
        self.lost_since = None
        self.regained_at = time.monotonic()

    def _mend(self, error: psycopg.Error, delay: float) -> bool:
        """After ``error``: when a pooler lost our prepared statements, prepare no more and
        return True (send the statement again at once); when the connection is lost
        (:func:`..poolers.disconnected`: the database restarted, a pooler cannot log in to
        it...), close it and return False (try again after ``delay``); anything else is
        about the statement, not the connection: raised."""
        if self.prepare and lost(error):
            self._stop_preparing(error)
            return True
        if not disconnected(error):
            raise error
        logger.warning("Database unavailable (%s); retrying in %.1fs", error, delay)
        self.note_lost()
        self.close()
        return False

    def note_lost(self) -> None:
        """The database is unreachable (seen here, or by its owner on the raw connection)."""
        if self.lost_since is None:
            self.lost_since = time.monotonic()

    def _stop_preparing(self, error: BaseException) -> None:
        """A pooler lost our prepared statements (:mod:`..poolers`): none from now on; this
        connection is replaced (psycopg's record of what it prepared no longer holds)."""
        stop_preparing(error)
        self.prepare = False
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):  # closing a dead socket may complain
                self.conn.close()
            self.conn = None
