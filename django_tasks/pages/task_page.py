"""The task page: one task's runs over time by state, its durations (p50/p95/p99) over time,
its failure rate and most frequent exceptions, what waits in its queue, its schedules and the
limits that apply to it.

The series come from the slot summaries (:func:`~django_tasks.stats.slots.task_slots`) for
the 24-hour and 7-day windows and from one statement over the last hour's runs for the 1-hour
window (a point a minute). The exceptions are read through the index of failed runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import OperationalError
from django.http import HttpRequest
from django.utils import timezone

from ..api.queries import queue_depths, sql_rows
from ..ids import uuid7_floor
from ..limits.models import Limit
from ..permissions import VIEW_LIMIT, VIEW_SCHEDULE, may
from ..registry import registry
from ..schedules.models import Schedule
from ..stats.slots import SLOT_SECONDS, Summary, percentile, task_slots
from .budget import time_budget
from .charts import Point, duration_chart, runs_chart
from .links import task_url

__all__ = ["WINDOWS", "TaskSeries", "task_page_context", "task_series"]

#: Window name -> (length, seconds per point of the charts).
WINDOWS = {
    "1h": (timedelta(hours=1), 60),
    "24h": (timedelta(hours=24), SLOT_SECONDS),
    "7d": (timedelta(days=7), 6 * SLOT_SECONDS),
}
DEFAULT_WINDOW = "24h"
SCHEDULES_SHOWN = 50
KEYS_TIMEOUT_MS = 150

_MINUTES = """
SELECT floor(extract(epoch FROM created) / 60)::bigint, state_type, count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished - started)
       ) FILTER (WHERE started IS NOT NULL AND finished IS NOT NULL)
FROM django_tasks_taskrun
WHERE id >= %(since)s AND task_key = ANY(%(keys)s)
GROUP BY GROUPING SETS ((1, 2), (1))
"""

#: Through django_tasks_failed_idx (migration 0028): failed runs only, by task and id.
_EXCEPTIONS = """
SELECT left(split_part(state_message, ':', 1), 120) AS kind, count(*), max(id::text)::uuid
FROM django_tasks_taskrun
WHERE state_type IN ('FAILED', 'CRASHED') AND task_key = ANY(%(keys)s) AND id >= %(since)s
GROUP BY 1 ORDER BY 2 DESC, 3 DESC LIMIT 5
"""

_WHOLE = """
SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished - started))
FROM django_tasks_taskrun
WHERE id >= %(since)s AND task_key = ANY(%(keys)s) AND started IS NOT NULL
  AND finished IS NOT NULL
"""

_KEYS_OF_RUNS = """
SELECT DISTINCT task_key FROM django_tasks_taskrun WHERE id >= %(since)s AND task_name = %(name)s
"""


@dataclass
class TaskSeries:
    """A task's runs over a window, point by point."""

    points: list[Point]
    totals: Counter[str]
    p50: float | None
    p95: float | None
    p99: float | None

    @property
    def runs(self) -> int:
        return sum(self.totals.values())

    @property
    def failure_rate(self) -> float | None:
        final = sum(self.totals[s] for s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"))
        failed = self.totals["FAILED"] + self.totals["CRASHED"]
        return failed / final if final else None


def _keys(name: str, since: datetime) -> list[str] | None:
    """The task keys of the runs called ``name``: the registered tasks', else those of the
    window's runs (a task this process does not know: removed, renamed, another project)."""
    keys = [task.key for task in registry.all() if task.name == name]
    if keys:
        return keys
    try:  # every run of the window is read: a name no run has must not cost seconds
        with time_budget(KEYS_TIMEOUT_MS):
            params = {"since": uuid7_floor(since), "name": name}
            return [row[0] for row in sql_rows(_KEYS_OF_RUNS, params)]
    except OperationalError:  # too slow to look through: the page says so
        return None


def task_series(keys: list[str], window: str, now: datetime) -> TaskSeries:
    length, step = WINDOWS[window]
    since = now - length
    first = int(since.timestamp()) // step
    last = int(now.timestamp()) // step
    points = [Point(start=(first + i) * step) for i in range(last - first + 1)]
    totals: Counter[str] = Counter()
    merged: Counter[int] = Counter()
    if window == "1h":
        for minute, state, runs, cuts in sql_rows(
            _MINUTES, {"since": uuid7_floor(since), "keys": keys}
        ):
            point = points[min(max(minute - first, 0), len(points) - 1)]
            if state is None:
                point.p50, point.p95, point.p99 = cuts or (None, None, None)
            else:
                point.states[state] += runs
                totals[state] += runs
        p50 = p95 = p99 = None
        whole = sql_rows(_WHOLE, {"since": uuid7_floor(since), "keys": keys})
        if whole and whole[0][0] is not None:
            p50, p95, p99 = whole[0][0]
        return TaskSeries(points, totals, p50, p95, p99)
    per_point: dict[int, Counter[int]] = {}
    for slot, states in task_slots(keys, since, now).items():
        index = min(max(slot * SLOT_SECONDS // step - first, 0), len(points) - 1)
        for state, summary in states.items():
            _add(points[index], state, summary, per_point.setdefault(index, Counter()))
            totals[state] += summary.runs
            merged.update(summary.durations)
    for index, durations in per_point.items():
        point = points[index]
        point.p50, point.p95, point.p99 = (percentile(durations, f) for f in (0.5, 0.95, 0.99))
    return TaskSeries(points, totals, *(percentile(merged, f) for f in (0.5, 0.95, 0.99)))


def _add(point: Point, state: str, summary: Summary, durations: Counter[int]) -> None:
    point.states[state] += summary.runs
    durations.update(summary.durations)


def _limits(queues: set[str], tags: set[str]) -> list[Limit]:
    """The limits of the task's queues and tags."""
    return [
        limit
        for limit in Limit.objects.order_by("scope", "name")
        if (limit.scope == Limit.Scope.QUEUE and limit.name in queues)
        or (limit.scope == Limit.Scope.TAG and limit.name in tags)
    ]


def task_page_context(request: HttpRequest, name: str) -> dict[str, Any]:
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        window = DEFAULT_WINDOW
    now = timezone.now()
    since = now - WINDOWS[window][0]
    found = _keys(name, since)
    keys = found or []
    tasks = [task for task in registry.all() if task.name == name]
    series = task_series(keys, window, now) if keys else task_series([""], window, now)
    params = {"since": uuid7_floor(since), "keys": keys}
    waiting = queue_depths(task_keys=keys)
    queues = {t.queue for t in tasks} | {row["queue"] for row in waiting}
    tags = {tag for t in tasks for tag in t.tags}
    schedules = (
        list(Schedule.objects.filter(task_name=name).order_by("name")[:SCHEDULES_SHOWN])
        if may(request.user, VIEW_SCHEDULE)
        else None
    )
    return {
        "task_name": name,
        # Plain data: a template calls what it can call, and a Task called runs the task.
        "registered": [
            {"queue": t.queue, "retries": t.options.retries, "tags": sorted(t.tags)} for t in tasks
        ],
        "window": window,
        "page_url": task_url(name),
        "keys_unknown": found is None,
        "windows": list(WINDOWS),
        "series": series,
        "runs_svg": runs_chart(series.points, WINDOWS[window][1]),
        "durations_svg": duration_chart(series.points, WINDOWS[window][1]),
        "exceptions": [
            {"kind": kind or "(no message)", "runs": runs, "latest": latest}
            for kind, runs, latest in sql_rows(_EXCEPTIONS, params)
        ],
        "waiting": waiting,
        "schedules": schedules,
        # As the API and the admin: limits to whoever may view them.
        "limits": _limits(queues, tags) if may(request.user, VIEW_LIMIT) else None,
        "now": now,
    }
