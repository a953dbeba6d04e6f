"""Typed access to the ``DJANGO_TASKS`` settings dict.

All settings live in one dict so that they never collide with Django's own ``TASKS`` setting
(Django 6 owns that name). The merged values are cached and the cache is cleared when the
setting changes (``override_settings`` in tests).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DEFAULTS", "TaskSettings", "task_settings"]

DEFAULTS: dict[str, Any] = {
    # Largest signed payload (parameters or result) accepted, in bytes.
    "MAX_PAYLOAD_BYTES": 1024 * 1024,
    # Queue used by tasks that do not name one.
    "DEFAULT_QUEUE": "default",
    # Seconds a worker sleeps between polls when no NOTIFY arrives (PgBouncer drops LISTEN).
    "POLL_INTERVAL": 1.0,
    # How many runs a worker claims in one short transaction. None: adaptive - one at a time
    # until the worker knows how long its tasks take, then about 20 ms of work (up to 100).
    "BATCH_SIZE": None,
    # Database alias that holds the task tables.
    "DATABASE_ALIAS": "default",
    # Database alias each worker process LISTENs on ("": DATABASE_ALIAS). Behind PgBouncer in
    # transaction mode, an alias straight to PostgreSQL (same database): LISTEN does not pass
    # through such a pooler, and without it idle workers wake only every POLL_INTERVAL.
    "LISTEN_DATABASE_ALIAS": "",
    # Longest text kept in a JSON preview of a parameter or result.
    "PREVIEW_MAX_CHARS": 200,
    # Longest state message, traceback or run log line stored; longer ones are cut (marked).
    "MESSAGE_MAX_CHARS": 64 * 1024,
    # A run whose worker process died while running it this many times in a row ends CRASHED
    # and is never claimed again, whatever retries it has left.
    "MAX_CRASHES": 3,
    # Seconds between a worker's heartbeats (and its rescue and cancel checks).
    "HEARTBEAT_INTERVAL": 2.0,
    # A worker silent for longer is lost: any live worker rescues the runs it held.
    "HEARTBEAT_TIMEOUT": 30.0,
    # A run taken more than this many seconds after its scheduled time is marked Late.
    "LATE_AFTER": 5.0,
    # Seconds past timeout_seconds before the supervisor kills a child that ignores it.
    "TIMEOUT_GRACE": 5.0,
    # Seconds a cancelled run may take to stop before the supervisor kills its child.
    "CANCEL_GRACE": 10.0,
    # Workers and .delay() prepare their few fixed statements on the server (planning costs
    # more than running them; Django's own queries are left as Django configures them). Set
    # False behind a PgBouncer older than 1.21 in transaction mode.
    "PREPARE_STATEMENTS": True,
    # How runtaskworker starts its worker processes: "fork" - forked from a process that has
    # Django set up already (ready in milliseconds; spawn is used anyway when threads already
    # run in the supervisor); "spawn" - each a new interpreter that sets Django up again
    # (for a library that cannot run in a forked process).
    "WORKER_START_METHOD": "fork",
    # How inline and submitted runs are recorded: "batched" - by a background writer with its
    # own connection, many runs per statement, eventually consistent (as Prefect logs task
    # runs client-side); "sync" - at once, on Django's connection, in the caller's
    # transaction (simplest in tests that use TestCase).
    "RECORD_MODE": "batched",
    # The batched writer writes when this many state events wait, or this many seconds after
    # the first of them, and at exit (and on django_tasks.flush()).
    "RECORD_BATCH_SIZE": 500,
    "RECORD_FLUSH_INTERVAL": 0.2,
    # The task runner of .submit()/.map() (a django_tasks.runners.TaskRunner subclass), and
    # the threads of the default thread pool (None: Python's default, min(32, CPUs + 4)).
    "TASK_RUNNER": "django_tasks.runners.ThreadPoolTaskRunner",
    # Level of the run logger (get_run_logger()): records below it are neither stored nor
    # passed on. A number, as in the logging module (20 = INFO).
    "RUN_LOG_LEVEL": 20,
    # Who may use the REST API (django_tasks.api): permission classes, by dotted path. The
    # default follows Django's model permissions as the admin does (django_tasks.permissions).
    "API_PERMISSION_CLASSES": ["django_tasks.api.permissions.TaskRunPermissions"],
    # A token that lets a Prometheus scraper read /metrics/ (Authorization: Bearer ...);
    # empty: staff only.
    "METRICS_TOKEN": "",
    "TASK_RUNNER_MAX_WORKERS": None,
    # Periodic runs (django_tasks.schedules) beside @task(schedule=...): name -> {"task": task
    # name, "cron": "0 3 * * *" and "tz", or "every": seconds; "args", "kwargs", "queue",
    # "missed": "once" | "skip", "enabled"}.
    "SCHEDULES": {},
    # Seconds between a worker's looks for due ticks.
    "SCHEDULE_INTERVAL": 1.0,
    # A tick enqueued later than this is missed: missed="skip" schedules run nothing for it.
    "SCHEDULE_MISSED_AFTER": 60.0,
    # The dashboard warns when a transaction of the database has held its snapshot for
    # longer than this many seconds: VACUUM cannot clean the queue meanwhile (horizon.py).
    "SNAPSHOT_WARNING": 300.0,
}


@dataclass(frozen=True)
class TaskSettings:
    """A snapshot of the effective settings, with defaults filled in."""

    MAX_PAYLOAD_BYTES: int
    DEFAULT_QUEUE: str
    POLL_INTERVAL: float
    BATCH_SIZE: int | None
    DATABASE_ALIAS: str
    LISTEN_DATABASE_ALIAS: str
    PREVIEW_MAX_CHARS: int
    MESSAGE_MAX_CHARS: int
    MAX_CRASHES: int
    HEARTBEAT_INTERVAL: float
    HEARTBEAT_TIMEOUT: float
    LATE_AFTER: float
    TIMEOUT_GRACE: float
    CANCEL_GRACE: float
    PREPARE_STATEMENTS: bool
    WORKER_START_METHOD: str
    RECORD_MODE: str
    RECORD_BATCH_SIZE: int
    RECORD_FLUSH_INTERVAL: float
    TASK_RUNNER: str
    RUN_LOG_LEVEL: int
    API_PERMISSION_CLASSES: list[str]
    METRICS_TOKEN: str
    TASK_RUNNER_MAX_WORKERS: int | None
    SCHEDULES: dict[str, dict[str, Any]]
    SCHEDULE_INTERVAL: float
    SCHEDULE_MISSED_AFTER: float
    SNAPSHOT_WARNING: float


@functools.lru_cache(maxsize=1)
def task_settings() -> TaskSettings:
    """Return the current settings merged over :data:`DEFAULTS` (cached: the worker reads
    them for every run; ``override_settings`` clears the cache through ``setting_changed``)."""
    user: dict[str, Any] = getattr(django_settings, "DJANGO_TASKS", {}) or {}
    merged = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}
    return TaskSettings(**merged)


@receiver(setting_changed)
def _clear_cache(setting: str, **kwargs: Any) -> None:
    if setting == "DJANGO_TASKS":
        task_settings.cache_clear()
