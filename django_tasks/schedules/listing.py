"""Schedules as the CLI, the API and the dashboard list them (one query, JSON-ready rows)."""

from __future__ import annotations

from typing import Any

from .models import EDITABLE_FIELDS, STATUS_FIELDS, Schedule

__all__ = ["SCHEDULE_FIELDS", "schedule_rows"]

SCHEDULE_FIELDS = ["id", *EDITABLE_FIELDS, *STATUS_FIELDS, "last_run_id"]


def schedule_rows(limit: int | None = None) -> list[dict[str, Any]]:
    """Every schedule (by name), with ``when`` - its timing in words."""
    rows = []
    for schedule in Schedule.objects.order_by("name")[:limit]:
        row = {field: getattr(schedule, field) for field in SCHEDULE_FIELDS}
        row["when"] = schedule.description
        rows.append(row)
    return rows
