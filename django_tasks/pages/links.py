"""Links to the pages."""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse

__all__ = ["task_url"]


def task_url(task_name: str) -> str:
    """The task page of ``task_name`` (in the query string: a path segment cannot carry every
    name - a newline, "..", "//" - browsers and proxies rewrite those)."""
    return f"{reverse('admin:django_tasks_taskrun_task')}?{urlencode({'name': task_name})}"
