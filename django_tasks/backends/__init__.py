"""A backend for Django's own ``django.tasks`` (Django 6.0 or newer): standard Django task code
enqueued on our queue and run by ``manage.py runtaskworker``::

    TASKS = {"default": {"BACKEND": "django_tasks.backends.PostgresBackend"}}

See docs/django-tasks-backend.md. On Django 5.2 importing this package fails with a message
that says so; the rest of django_tasks works there unchanged.
"""

from __future__ import annotations

import django

if django.VERSION < (6, 0):  # pragma: no cover - exercised in a subprocess on Django 5.2
    raise ImportError(
        "django_tasks.backends.PostgresBackend needs Django 6.0 or newer (it implements "
        f"django.tasks, new in 6.0); this is Django {django.get_version()}. The rest of "
        "django_tasks works on this version: use its own @task and .delay()."
    )

from .postgres import PostgresBackend

__all__ = ["PostgresBackend"]
