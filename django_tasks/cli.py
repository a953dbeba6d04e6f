"""What ``manage.py taskruns`` shows: runs as terminal tables or JSON, read from the tables
(previews only - nothing is unpickled)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .models import TaskRun, TaskRunDependency, TaskRunLog
from .progress import Progress
from .storable import shown

__all__ = [
    "format_log",
    "list_runs",
    "parse_run_id",
    "run_details",
    "run_logs",
    "run_state",
    "table",
]

LIST_FIELDS = [
    "id",
    "name",
    "task_name",
    "state_type",
    "state_name",
    "queue",
    "origin",
    "attempts",
    "worker",
    "created",
    "started",
    "finished",
]


def parse_run_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(f"{shown(text)} is not a run id (a UUID).") from None


def list_runs(
    *, states: Sequence[str], task: str | None, queue: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest runs first (run ids are time-ordered), filtered."""
    runs = TaskRun.objects.all()
    if states:
        runs = runs.filter(state_type__in=[s.upper() for s in states])
    if task:
        runs = runs.filter(task_name=task)
    if queue:
        runs = runs.filter(queue=queue)
    return [_plain(row) for row in runs.order_by("-id").values(*LIST_FIELDS)[:limit]]


def run_details(run_id: uuid.UUID) -> dict[str, Any] | None:
    """One run with its history, its upstream/downstream runs and its retries."""
    fields = [
        *LIST_FIELDS,
        "task_key",
        "priority",
        "tags",
        "state_message",
        "scheduled_time",
        "parameters_preview",
        "result_preview",
        "traceback",
        "retry_of_id",
    ]
    row = TaskRun.objects.filter(pk=run_id).values(*fields).first()
    if row is None:
        return None
    details = _plain(row)
    details["history"] = [
        _plain(state)
        for state in TaskRun(pk=run_id).states.values(
            "timestamp", "type", "name", "message", "worker"
        )
    ]
    edges = TaskRunDependency.objects
    details["upstream"] = [
        str(i) for i in edges.filter(downstream_id=run_id).values_list("upstream_id", flat=True)
    ]
    details["downstream"] = [
        str(i) for i in edges.filter(upstream_id=run_id).values_list("downstream_id", flat=True)
    ]
    details["retried_by"] = [
        str(i) for i in TaskRun.objects.filter(retry_of_id=run_id).values_list("id", flat=True)
    ]
    return details


def run_state(run_id: uuid.UUID) -> str | None:
    """The run's state type, or ``None`` if there is no such run (one indexed read)."""
    return TaskRun.objects.filter(pk=run_id).values_list("state_type", flat=True).first()


def run_state_and_progress(run_id: uuid.UUID) -> tuple[str, Any] | None:
    """The run's state type and ``progress`` JSON (one indexed read; ``None``: no such run)."""
    row = TaskRun.objects.filter(pk=run_id).values_list("state_type", "progress").first()
    return None if row is None else (row[0], row[1])


def format_progress(value: Any) -> str:
    """A ``set_progress()`` value as a terminal shows it: ``progress 40/100 (40 %) copying``."""
    progress = Progress.from_json(value)
    if progress is None:
        return "progress -"
    text = f"progress {progress.done:g}"
    if progress.total is not None:
        text += f"/{progress.total:g} ({progress.percent} %)"
    return f"{text} {progress.message}".rstrip()


def run_logs(run_id: uuid.UUID, after: int = 0) -> list[dict[str, Any]]:
    """Log lines of a run with ids above ``after`` (for ``--follow``)."""
    lines = TaskRunLog.objects.filter(run_id=run_id, id__gt=after).order_by("id")
    return [_plain(line) for line in lines.values("id", "timestamp", "level", "logger", "message")]


def format_log(line: Mapping[str, Any]) -> str:
    """One log line as a terminal shows it."""
    level = logging.getLevelName(line["level"])
    return f"{line['timestamp']} {level} {line['message']}"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table, columns as wide as their widest cell (at most 40 characters)."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)
    ]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready: ids and times as strings."""
    return {
        key: (
            str(value)
            if isinstance(value, uuid.UUID)
            else value.isoformat()
            if isinstance(value, datetime)
            else value
        )
        for key, value in row.items()
    }
