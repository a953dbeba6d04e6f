"""A worker's own connection, reopened with backoff whenever the database goes away."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ..topic import open_worker_connection

__all__ = ["QueueConnection"]

logger = logging.getLogger("django_tasks.worker")


class QueueConnection:
    """One autocommit connection, reopened on demand.

    Connection errors are transient by rule: a worker that gives up when PostgreSQL restarts
    stops all processing, so every statement is retried until the database answers, or, when
    ``give_up_on_stop`` is set (claims, polls), until the worker is stopping.
    """

    def __init__(self, alias: str, stopping: Callable[[], bool]) -> None:
        self.alias = alias
        self.stopping = stopping
        self.conn: psycopg.Connection[Any] | None = None

    def execute(
        self, query: str, params: dict[str, Any] | None = None, *, give_up_on_stop: bool
    ) -> list[Any]:
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
