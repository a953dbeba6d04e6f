"""Links to the pages."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django.urls import reverse

__all__ = ["run_url_template", "task_url"]

_ZERO = uuid.UUID(int=0)


def run_url_template() -> str:
    """A run page's URL with ``{}`` for the run id: pages that link hundreds of runs (the
    graph, the runs over time) format it instead of reversing a URL per run (0.1-0.5 ms
    each). reverse() percent-encodes braces, so the only ones left are the placeholder's."""
    return reverse("admin:django_tasks_taskrun_change", args=[_ZERO]).replace(str(_ZERO), "{}")


def task_url(task_name: str) -> str:
    """The task page of ``task_name`` (in the query string: a path segment cannot carry every
    name - a newline, "..", "//" - browsers and proxies rewrite those)."""
    return f"{reverse('admin:django_tasks_taskrun_task')}?{urlencode({'name': task_name})}"
