"""Prometheus metrics, computed from the tables when scraped (``/tasks/metrics/``).

Runs by task and state (created in the last 24 hours), p50/p95 durations by task, ready runs
and the age of the oldest ready run per queue, live workers, the age of the oldest open
transaction and the dead row versions of the run tables - the figures of the dashboard,
in the text format Prometheus reads. Several web processes answer the same, since the figures
come from the database, not from process memory.

Needs ``prometheus-client`` (``pip install django-taskruns[metrics]``). Allowed for staff, or
with ``Authorization: Bearer <DJANGO_TASKS["METRICS_TOKEN"]>`` for a scraper.
"""

from __future__ import annotations

import hmac
import importlib.util
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

from .api import queries
from .conf import task_settings
from .horizon import dead_rows, oldest_snapshot
from .models import Worker
from .permissions import VIEW, may

__all__ = ["TaskRunCollector", "metrics_view"]

WINDOW = timedelta(hours=24)

logger = logging.getLogger("django_tasks")


class TaskRunCollector:
    """A prometheus_client collector that reads the task tables on every scrape."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        runs = GaugeMetricFamily(
            "django_tasks_runs", "Runs created in the last 24 hours", labels=["task", "state"]
        )
        durations = GaugeMetricFamily(
            "django_tasks_run_duration_seconds",
            "Run duration quantiles over the last 24 hours",
            labels=["task", "quantile"],
        )
        for task in queries.task_stats(WINDOW):
            if not task["runs"]:
                continue
            other = task["runs"] - task["completed"] - task["failed"]
            for state, count in (
                ("COMPLETED", task["completed"]),
                ("FAILED", task["failed"]),
                ("OTHER", other),
            ):
                runs.add_metric([task["name"], state], count)
            for quantile, key in (("0.5", "p50_seconds"), ("0.95", "p95_seconds")):
                if task[key] is not None:
                    durations.add_metric([task["name"], quantile], task[key])
        yield runs
        yield durations
        depth = GaugeMetricFamily("django_tasks_queue_ready", "Runs ready now", labels=["queue"])
        oldest = GaugeMetricFamily(
            "django_tasks_queue_oldest_ready_seconds",
            "Age of the oldest ready run",
            labels=["queue"],
        )
        now = datetime.now(tz=UTC)
        for queue in queries.queue_depths():
            depth.add_metric([queue["queue"]], queue["ready"])
            oldest.add_metric([queue["queue"]], (now - queue["oldest_ready"]).total_seconds())
        yield depth
        yield oldest
        timeout = timedelta(seconds=task_settings().HEARTBEAT_TIMEOUT)
        live = Worker.objects.filter(stopped__isnull=True, last_heartbeat__gte=now - timeout)
        yield GaugeMetricFamily("django_tasks_workers", "Live worker processes", value=live.count())
        yield from _horizon_metrics()


def _horizon_metrics() -> Iterator[Any]:
    """What holds VACUUM back (:mod:`.horizon`): the oldest open transaction's age, and the
    dead row versions of the run tables."""
    from prometheus_client.core import GaugeMetricFamily

    holder = oldest_snapshot()
    yield GaugeMetricFamily(
        "django_tasks_oldest_snapshot_seconds",
        "Age of the oldest open transaction in the database (0: none); VACUUM waits for it",
        value=holder.seconds if holder else 0.0,
    )
    dead = GaugeMetricFamily(
        "django_tasks_dead_rows", "Dead row versions of a run table", labels=["table"]
    )
    for table in dead_rows():
        dead.add_metric([table.table], table.dead)
    yield dead


def _allowed(request: HttpRequest) -> bool:
    if may(getattr(request, "user", None), VIEW):
        return True
    token = task_settings().METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` the first time in this process (a scraper asks every 15 seconds)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def metrics_available() -> bool:
    """Whether the ``metrics`` extra (prometheus-client) is installed."""
    return importlib.util.find_spec("prometheus_client") is not None


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponseForbidden("Staff allowed to view task runs, or a metrics token, only.")
    if not metrics_available():  # so does system check W003, once a METRICS_TOKEN is set
        _warn_once(
            "Metrics were asked for but prometheus-client is not installed: "
            "pip install 'django-taskruns[metrics]' (the view answers 503)."
        )
        return HttpResponse(
            "Metrics need prometheus-client: pip install 'django-taskruns[metrics]'.",
            status=503,
            content_type="text/plain",
        )
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(TaskRunCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
