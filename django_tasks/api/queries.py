"""The aggregate queries of the API, the dashboard and the metrics endpoint.

Windows up to ``LIVE_WINDOW`` are one statement each over the runs of the window (exact
percentiles); longer ones read the summaries of closed slots (:mod:`..stats.slots`), so that
they cost about the same with ten million runs of history.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from ..conf import task_settings
from ..ids import uuid7_floor
from ..models import TaskRun, Worker
from ..registry import registry
from ..stats.slots import SLOT_SECONDS, Window, percentile, window_cells

__all__ = [
    "LIVE_WINDOW",
    "live_workers",
    "queue_depths",
    "sql_rows",
    "state_counts",
    "task_stats",
    "throughput",
    "window_start",
    "window_stats",
]

#: Windows up to this long are read from the runs themselves; longer ones from summaries.
LIVE_WINDOW = timedelta(hours=1)

_TASK_STATS = """
SELECT task_key, count(*),
       count(*) FILTER (WHERE state_type = 'COMPLETED'),
       count(*) FILTER (WHERE state_type IN ('FAILED', 'CRASHED')),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished - started))
           FILTER (WHERE started IS NOT NULL AND finished IS NOT NULL),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished - started))
           FILTER (WHERE started IS NOT NULL AND finished IS NOT NULL)
FROM django_tasks_taskrun
WHERE id >= %(since)s  -- runs created in the window, through the primary key (UUIDv7)
GROUP BY task_key
"""

_STATE_COUNTS = """
SELECT state_type, count(*) FROM django_tasks_taskrun
WHERE id >= %(since)s
GROUP BY state_type
"""

#: Through the ready index: counting what waits costs what waits, not what finished (the
#: task page adds a filter on its task's keys).
_QUEUE_DEPTHS = """
SELECT queue, count(*), min(scheduled_time) FROM django_tasks_taskrun
WHERE state_type = 'SCHEDULED' AND blocked = 0 AND scheduled_time <= clock_timestamp(){tasks}
GROUP BY queue ORDER BY queue
"""


def window_start(window: timedelta) -> uuid.UUID:
    """The first run id of the window (ids are time-ordered: the primary key serves it)."""
    return uuid7_floor(timezone.now() - window)


def sql_rows(query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of a statement on the app's database (the aggregate queries, the pages)."""
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def task_stats(window: timedelta) -> list[dict[str, Any]]:
    """Every registered task (and any task seen in the window), with counts and durations."""
    if window <= LIVE_WINDOW:
        rows = sql_rows(_TASK_STATS, {"since": window_start(window)})
        return _task_list({row[0]: row[1:] for row in rows})
    return _task_list(_task_figures(_cells(window)))


def _task_list(seen: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    tasks = {task.key: task for task in registry.all()}
    out = []
    for key in sorted(set(tasks) | set(seen), key=lambda k: tasks[k].name if k in tasks else k):
        runs, completed, failed, p50, p95 = seen.get(key, (0, 0, 0, None, None))
        task = tasks.get(key)
        out.append(
            {
                "key": key,
                "name": task.name if task else "(not registered here)",
                "module": f"{task.fn.__module__}.{task.fn.__qualname__}" if task else "",
                "description": task.description if task else None,
                "options": _options(task) if task else {},
                "runs": runs,
                "completed": completed,
                "failed": failed,
                "failure_rate": failed / (completed + failed) if completed + failed else None,
                "p50_seconds": p50,
                "p95_seconds": p95,
            }
        )
    return out


def _options(task: Any) -> dict[str, Any]:
    options = task.options
    return {
        "queue": task.queue,
        "priority": options.priority,
        "tags": list(options.tags),
        "retries": options.retries,
        "retry_delays": list(options.retry_delays),
        "timeout_seconds": options.timeout_seconds,
        "atomic": options.atomic,
        "caches": options.caches,
        "version": options.version,
    }


def state_counts(window: timedelta) -> dict[str, int]:
    """Runs created in the window, by state."""
    if window <= LIVE_WINDOW:
        return {row[0]: row[1] for row in sql_rows(_STATE_COUNTS, {"since": window_start(window)})}
    return _state_figures(_cells(window))


def queue_depths(
    workers: list[Worker] | None = None, task_keys: list[str] | None = None
) -> list[dict[str, Any]]:
    """Ready runs per queue (of the tasks ``task_keys``, or all), the oldest, and how many
    live workers serve the queue: a queue with ready runs that no live worker serves is
    ``unserved`` - most often a worker started with a ``--queues`` that forgot it, which
    otherwise fails silently."""
    live = live_workers() if workers is None else workers
    served = Counter(queue for worker in live for queue in worker.queues)
    tasks = "" if task_keys is None else " AND task_key = ANY(%(keys)s)"
    rows = sql_rows(_QUEUE_DEPTHS.format(tasks=tasks), {"keys": task_keys or []})
    return [
        {"queue": q, "ready": n, "oldest_ready": t, "workers": served[q], "unserved": not served[q]}
        for q, n, t in rows
    ]


def live_workers() -> list[Worker]:
    """Worker processes not stopped whose last heartbeat is within ``HEARTBEAT_TIMEOUT``."""
    timeout = timedelta(seconds=task_settings().HEARTBEAT_TIMEOUT)
    now = timezone.now()
    workers = Worker.objects.filter(stopped__isnull=True).order_by("name")
    return [worker for worker in workers if now - worker.last_heartbeat <= timeout]


def running_runs(limit: int = 20) -> list[dict[str, Any]]:
    """The runs running now, longest first, with their progress (the dashboard)."""
    runs = TaskRun.objects.filter(state_type__in=["RUNNING", "CANCELLING"]).order_by("started")
    fields = ["id", "name", "task_name", "worker", "started", "progress"]
    return list(runs.values(*fields)[:limit])


_THROUGHPUT = """
SELECT floor(extract(epoch FROM created) / %(bucket)s)::bigint AS slot,
       count(*) FILTER (WHERE state_type = 'COMPLETED'),
       count(*) FILTER (WHERE state_type IN ('FAILED', 'CRASHED'))
FROM django_tasks_taskrun
WHERE id >= %(since)s
GROUP BY slot ORDER BY slot
"""


def throughput(window: timedelta, buckets: int) -> list[tuple[float, int, int]]:
    """Completed and failed runs per time slot (by creation), oldest first, empty slots too:
    ``(slot start as a Unix time, completed, failed)``."""
    size = max(1.0, window.total_seconds() / buckets)
    if not _summarised(window, size):
        params = {"since": window_start(window), "bucket": size}
        rows = {slot: (done, failed) for slot, done, failed in sql_rows(_THROUGHPUT, params)}
    else:
        rows = _slot_figures(_cells(window), int(size))
    return _slots(rows, size, buckets)


def _slots(
    rows: dict[int, tuple[int, int]], size: float, buckets: int
) -> list[tuple[float, int, int]]:
    last = int(timezone.now().timestamp() // size)
    slots = range(last - buckets + 1, last + 1)
    return [(slot * size, *rows.get(slot, (0, 0))) for slot in slots]


def window_stats(
    window: timedelta, buckets: int
) -> tuple[list[tuple[float, int, int]], dict[str, int], list[dict[str, Any]]]:
    """The dashboard's three figures of a window - :func:`throughput`, :func:`state_counts`,
    :func:`task_stats` - reading a long window's summaries once for the three."""
    size = window.total_seconds() / buckets
    if not _summarised(window, size):
        return throughput(window, buckets), state_counts(window), task_stats(window)
    cells = _cells(window)
    return (
        _slots(_slot_figures(cells, int(size)), size, buckets),
        _state_figures(cells),
        _task_list(_task_figures(cells)),
    )


def _summarised(window: timedelta, chart_slot: float) -> bool:
    """Whether a window's chart is read from slot summaries: a long window whose chart slots
    are whole summaries."""
    return window > LIVE_WINDOW and not chart_slot % SLOT_SECONDS


def _cells(window: timedelta) -> Window:
    return window_cells(timezone.now() - window)


def _task_figures(cells: Window) -> dict[str, tuple[Any, ...]]:
    """(runs, completed, failed, p50, p95) by task, as ``_TASK_STATS`` gives them."""
    runs: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for (_, task_key, state), count in cells.runs.items():
        runs[task_key] += count
        completed[task_key] += count if state == "COMPLETED" else 0
        failed[task_key] += count if state in ("FAILED", "CRASHED") else 0
    return {
        key: (
            runs[key],
            completed[key],
            failed[key],
            percentile(cells.durations[key], 0.5),
            percentile(cells.durations[key], 0.95),
        )
        for key in runs
    }


def _state_figures(cells: Window) -> dict[str, int]:
    states: Counter[str] = Counter()
    for (_, _, state), count in cells.runs.items():
        states[state] += count
    return dict(states)


def _slot_figures(cells: Window, size: int) -> dict[int, tuple[int, int]]:
    """Completed and failed runs by chart slot of ``size`` seconds (a multiple of a summary's)."""
    done: Counter[int] = Counter()
    failed: Counter[int] = Counter()
    for (slot, _, state), count in cells.runs.items():
        chart_slot = slot * SLOT_SECONDS // size
        if state == "COMPLETED":
            done[chart_slot] += count
        elif state in ("FAILED", "CRASHED"):
            failed[chart_slot] += count
    return {slot: (done[slot], failed[slot]) for slot in done.keys() | failed.keys()}
