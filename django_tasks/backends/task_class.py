"""The Task class of our backend: Django's ``Task`` plus our retry options.

With ``TASKS = {"default": {"BACKEND": "django_tasks.backends.PostgresBackend"}}``, Django's
``@task`` builds this class (the backend's ``task_class``; Django 6.1 passes extra keywords
of the decorator to it), so ``@task(retries=3, retry_delay_seconds=10)`` works. Each failed
attempt is a ``TaskError`` of the result; between attempts the result is READY again.
Defaults for every Task come from the backend's ``OPTIONS`` (``RETRIES``,
``RETRY_DELAY_SECONDS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.tasks.base import Task

__all__ = ["RetryingTask"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryingTask(Task):  # type: ignore[type-arg]
    """A ``django.tasks`` Task that our worker retries: ``retries`` more attempts after a
    failure, ``retry_delay_seconds`` apart (``None``: the backend's ``OPTIONS``)."""

    retries: int | None = None
    retry_delay_seconds: float | None = None
