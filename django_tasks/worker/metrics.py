"""Prometheus metrics served by the worker supervisor (``runtaskworker --metrics-port``).

A surface, like the ``/metrics`` view (docs/architecture.md): the command hands
:func:`metrics_server` to the supervisor, which never imports this module.

The pool's own figures - processes alive, processes replaced, runs its processes finished -
exist only in the supervisor, so it serves them; next to them, the table figures of
:mod:`django_tasks.metrics` (the same from every worker host and from the web view: scrape
one of them for those). Children count their runs in shared memory, so a scrape costs the
children nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connections

from ..metrics import TaskRunCollector

__all__ = ["PoolCollector", "metrics_server", "serve_metrics"]

logger = logging.getLogger("django_tasks.worker")


class PoolCollector:
    """The supervisor's figures, read when scraped."""

    def __init__(
        self,
        processes: Callable[[], int],
        replaced: Callable[[], int],
        processed: Callable[[], int],
    ) -> None:
        self.processes, self.replaced, self.processed = processes, replaced, processed

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "django_tasks_worker_processes",
            "Worker processes alive in this pool",
            value=self.processes(),
        )
        yield CounterMetricFamily(
            "django_tasks_worker_processes_replaced",
            "Worker processes started again after one exited (died, killed or recycled)",
            value=self.replaced(),
        )
        yield CounterMetricFamily(
            "django_tasks_worker_runs_processed",
            "Runs this pool's processes took to an end or to a retry",
            value=self.processed(),
        )


class _TablesCollector(TaskRunCollector):
    """The table figures, on the scrape's own thread and connection (closed after)."""

    def collect(self) -> Iterator[Any]:
        try:
            yield from list(super().collect())
        finally:
            connections.close_all()  # this thread's connections only


def serve_metrics(pool: PoolCollector, port: int, addr: str) -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the server (its
    ``shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(pool)
    registry.register(_TablesCollector())
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    logger.info("Metrics on http://%s:%d/metrics", addr, port)
    return server


def metrics_server(port: int, addr: str) -> Callable[..., Any]:
    """What ``runtaskworker --metrics-port`` gives its supervisor: called with the pool's
    figures (``processes``, ``replaced``, ``processed``: callables), it serves them."""

    def serve(**figures: Callable[[], int]) -> Any:
        return serve_metrics(PoolCollector(**figures), port, addr)

    return serve
