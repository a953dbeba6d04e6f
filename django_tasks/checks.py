"""System checks for the ``DJANGO_TASKS`` settings and what the app needs, with stable ids
(``django_tasks.E00x`` errors, ``django_tasks.W00x`` warnings)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.checks.registry import registry
from django.db import connections
from django.urls import NoReverseMatch, reverse

from .conf import DEFAULTS
from .metrics import metrics_available
from .storable import shown

__all__ = [
    "NOT_FOR_WORKERS",
    "RECORD_MODES",
    "TAG",
    "check_database",
    "check_included_urls",
    "check_schedules",
    "check_settings",
    "checks_without",
]

#: The tag of the app's own checks (``manage.py check --tag django_tasks``).
TAG = "django_tasks"
#: The checks ``runtaskworker`` leaves out (:func:`checks_without`): the URL configuration and
#: the templates, which a worker never serves and whose checks took about 0.12 s of its
#: 0.5-0.6 s start-up (importing every view, loading the template engines). ``manage.py
#: check``, ``migrate`` and ``runserver`` still run them.
NOT_FOR_WORKERS = (Tags.urls, Tags.templates)


@contextmanager
def checks_without(tags: Iterable[str]) -> Iterator[None]:
    """Django's check registry without the checks tagged with any of ``tags`` while the block
    runs (a command's checks, before it starts any thread). A command's
    ``requires_system_checks`` can only name the tags to run, which would leave out every
    untagged check - most projects' own - and Django's caches, translation or security ones."""
    left_out = {
        check for check in registry.registered_checks if set(getattr(check, "tags", ())) & set(tags)
    }
    registry.registered_checks -= left_out
    try:
        yield
    finally:
        registry.registered_checks |= left_out


RECORD_MODES = ("batched", "sync")
#: Settings that take one of a few strings.
CHOICES = {"RECORD_MODE": RECORD_MODES, "WORKER_START_METHOD": ("fork", "spawn")}
_OPTIONAL_INTS = ("BATCH_SIZE", "TASK_RUNNER_MAX_WORKERS")


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Unknown keys and wrongly typed values in ``DJANGO_TASKS`` are errors, not silent defaults."""
    user = getattr(settings, "DJANGO_TASKS", {})
    if not isinstance(user, dict):
        return [Error("DJANGO_TASKS must be a dict.", id="django_tasks.E001")]
    errors: list[CheckMessage] = []
    for key, value in user.items():
        if key not in DEFAULTS:
            errors.append(
                Error(
                    f"Unknown DJANGO_TASKS setting {shown(key)}.",
                    hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
                    id="django_tasks.E002",
                )
            )
            continue
        if DEFAULTS[key] is None and value is None:
            continue
        if key in CHOICES:
            if value not in CHOICES[key]:
                errors.append(
                    Error(
                        f"DJANGO_TASKS[{shown(key)}] must be one of {CHOICES[key]}, got "
                        f"{shown(value)}.",
                        id="django_tasks.E006",
                    )
                )
            continue
        expected = int if key in _OPTIONAL_INTS else type(DEFAULTS[key])
        if expected is bool:
            if not isinstance(value, bool):
                errors.append(
                    Error(
                        f"DJANGO_TASKS[{shown(key)}] must be True or False, got {shown(value)}.",
                        id="django_tasks.E003",
                    )
                )
            continue
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        # NaN is not <= 0, and infinity is no number of seconds: both refused.
        out_of_range = isinstance(value, int | float) and not 0 < value < math.inf
        if not ok or isinstance(value, bool) or out_of_range:
            errors.append(
                Error(
                    f"DJANGO_TASKS[{shown(key)}] must be a positive {expected.__name__}, got "
                    f"{shown(value)}.",
                    id="django_tasks.E003",
                )
            )
    return errors


@register(TAG)
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Declared schedules (``@task(schedule=...)``, ``DJANGO_TASKS["SCHEDULES"]``) that a
    worker could not sync: a bad entry, a name declared twice, a task no process has."""
    from .registry import registry
    from .schedules.arguments import check_arguments
    from .schedules.declared import declared_schedules

    user = getattr(settings, "DJANGO_TASKS", {})
    if not isinstance(user, dict) or not isinstance(user.get("SCHEDULES", {}), dict):
        return []  # E001 / E003 already say so
    try:
        declared = declared_schedules()
    except ValueError as exc:
        return [Error(str(exc), id="django_tasks.E011")]
    errors: list[CheckMessage] = []
    for schedule in declared:
        try:
            task = registry.by_name(schedule.task_name)
            check_arguments(task, schedule.args, schedule.kwargs)
        except (LookupError, TypeError, ValueError) as exc:
            message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
            errors.append(
                Error(f"Schedule {shown(schedule.name)}: {message}", id="django_tasks.E011")
            )
    return errors


@register(TAG)
def check_database(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The queue relies on SKIP LOCKED and LISTEN/NOTIFY: PostgreSQL only."""
    configured = getattr(settings, "DJANGO_TASKS", {}) or {}
    alias = configured.get("DATABASE_ALIAS", "default")
    if alias not in connections:
        return [Error(f"DATABASE_ALIAS {alias!r} is not in DATABASES.", id="django_tasks.E004")]
    listen = configured.get("LISTEN_DATABASE_ALIAS", "")
    if listen and listen not in connections:
        return [
            Error(f"LISTEN_DATABASE_ALIAS {listen!r} is not in DATABASES.", id="django_tasks.E004")
        ]
    if connections[alias].vendor != "postgresql":
        return [
            Error(
                "django_tasks needs a PostgreSQL database.",
                hint=f"DATABASES[{alias!r}] uses {connections[alias].vendor}.",
                id="django_tasks.E005",
            )
        ]
    return []


def _included(url_name: str) -> bool:
    """Whether the project's URLconf includes this view of ours (a settings module without
    ROOT_URLCONF - a worker-only one - includes nothing)."""
    if not getattr(settings, "ROOT_URLCONF", None):
        return False
    try:
        reverse(url_name)
    except NoReverseMatch:
        return False
    return True


def _metrics_configured() -> bool:
    """Metrics are optional: the dashboard's URLs include them for whoever wants them. They
    count as configured - worth a warning at every command when their extra is missing - only
    once a scraper's token is set and the URL is included; otherwise the view itself says so
    (503, and a warning in the log) the first time it is asked."""
    configured = getattr(settings, "DJANGO_TASKS", {}) or {}
    return bool(configured.get("METRICS_TOKEN")) and _included("django_tasks:metrics")


@register(Tags.urls)
def check_included_urls(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """What an included URL needs that the project may lack: said here, not by a 500."""
    problems: list[CheckMessage] = []
    if _included("django_tasks_api:run-list") and not apps.is_installed("rest_framework"):
        problems.append(
            Warning(
                "The django_tasks API is included but 'rest_framework' is not in "
                "INSTALLED_APPS: it answers JSON only, without DRF's browsable pages.",
                hint="Add 'rest_framework' to INSTALLED_APPS for the browsable API.",
                id="django_tasks.W002",
            )
        )
    if _metrics_configured() and not metrics_available():
        problems.append(
            Warning(
                "DJANGO_TASKS['METRICS_TOKEN'] is set for the metrics URL but prometheus-client "
                "is not installed: /metrics/ answers 503.",
                hint="pip install 'django-taskruns[metrics]'",
                id="django_tasks.W003",
            )
        )
    return problems
