"""App configuration: registers checks and discovers every installed app's ``tasks.py``."""

from __future__ import annotations

import django
from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


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

        if django.VERSION >= (6, 0):
            # The django.tasks backend's resolver (registry.add_resolver), in every process:
            # a worker makes the tasks of django.tasks runs with it, whatever TASKS names (a
            # subclass of our backend in the project included) and without importing them.
            from .backends import adapter  # noqa: F401
