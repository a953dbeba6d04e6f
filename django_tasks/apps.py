"""App configuration: registers checks and discovers every installed app's ``tasks.py``."""

from __future__ import annotations

import django
from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules, import_string


class DjangoTasksConfig(AppConfig):
    name = "django_tasks"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        # Importing each app's tasks.py runs its @task decorators, which fill the registry that
        # workers use to find functions by task key: functions are never unpickled.
        autodiscover_modules("tasks")
        from . import housekeeping  # noqa: F401  (the built-in task django_tasks.purge_history)

        _import_our_django_tasks_backends()


def _import_our_django_tasks_backends() -> None:
    """Django 6: import the ``TASKS`` backends that are ours, so that the registry knows how
    to make the tasks of ``django.tasks`` runs (the backend registers a resolver) in every
    process - a worker included, which never touches ``django.tasks`` itself."""
    if django.VERSION < (6, 0):
        return
    for options in (getattr(settings, "TASKS", None) or {}).values():
        path = options.get("BACKEND", "") if isinstance(options, dict) else ""
        if isinstance(path, str) and path.startswith("django_tasks.backends"):
            import_string(path)
