"""How evenly a task's runs started: read from the RUNNING rows of their histories (the
rate tests, tests/test_rates.py, and the binding-rate line of benchmarks/limits.py)."""

from __future__ import annotations

from datetime import datetime

from django_tasks.models import TaskRunState

__all__ = ["busiest", "starts"]


def starts(task_name: str) -> list[datetime]:
    """When the task's runs started (a retry starts again), in order."""
    rows = TaskRunState.objects.filter(type="RUNNING", run__task_name=task_name)
    return sorted(rows.values_list("timestamp", flat=True))


def busiest(times: list[datetime], seconds: float) -> int:
    """The most of ``times`` (in order) in any window of ``seconds``, sliding, half-open: the
    window from each start to just before ``seconds`` later."""
    best, first = 0, 0
    for last, time_ in enumerate(times):
        while (time_ - times[first]).total_seconds() >= seconds:
            first += 1
        best = max(best, last - first + 1)
    return best
