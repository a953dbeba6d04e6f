"""The task run table (the topic *and* the record) and its state history.

``TaskRun`` is both the queue and the permanent record: a worker claims rows whose state is
SCHEDULED, and the same row later holds the result. A partial index covers exactly the ready
rows in claim order, so dequeue cost does not grow with finished history.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from .artifacts.models import Artifact
from .ids import uuid7
from .json_input import BoundedJSONDecoder
from .limits.models import Limit, RateState
from .schedules.models import Schedule
from .states import FINAL_TYPES, StateType
from .stats.models import SlotStats
from .times import within_range

__all__ = [
    "Artifact",
    "Limit",
    "RateState",
    "ResultRecord",
    "Schedule",
    "SlotStats",
    "TaskRun",
    "TaskRunDependency",
    "TaskRunLog",
    "TaskRunState",
    "Worker",
]


class TaskRun(models.Model):
    """One invocation of a task: inline (``__call__``) or in the background (``.delay()``)."""

    class Origin(models.TextChoices):
        CALL = "call", "Called inline"
        SUBMIT = "submit", "Submitted (.submit/.map)"
        DELAY = "delay", "Background (.delay)"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    task_key = models.CharField(max_length=64, help_text="Hash of the task name and function.")
    # Not indexed on its own: every index costs each state change of every run (the claim and
    # the completion rewrite the row); the admin's filters use the (state_type, created) index.
    task_name = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True, help_text="The run's display name.")
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.DELAY)
    queue = models.CharField(max_length=100, default="default")
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first (-100..100).")
    tags = models.JSONField(default=list, blank=True, decoder=BoundedJSONDecoder)

    state_type = models.CharField(max_length=16, choices=StateType.choices)
    state_name = models.CharField(max_length=32)
    state_message = models.TextField(blank=True)

    scheduled_time = models.DateTimeField(help_text="Not taken by a worker before this time.")
    # Counted when a worker claims the run (durably, before its function can run): a run that
    # kills its worker process has still used an attempt. Given back when a claimed run is
    # known not to have started (handed back by a stopping worker, or by a supervisor whose
    # child died running another run).
    attempts = models.PositiveIntegerField(default=0)
    # Times in a row a worker process died while running this run; at MAX_CRASHES the run
    # ends CRASHED and is not claimed again (a run that keeps killing workers is discarded).
    crashes = models.PositiveIntegerField(
        db_default=0, help_text="Times in a row its worker process died while running it."
    )
    # The task's retry and timeout options, copied at enqueue so that the worker's maintenance
    # (rescue of crashed runs, hard timeouts) can apply them in SQL without importing the task.
    retries = models.PositiveIntegerField(default=0, help_text="Retries allowed after a failure.")
    retry_delays = models.JSONField(
        default=list,
        blank=True,
        decoder=BoundedJSONDecoder,
        help_text="Seconds before each retry; the last one repeats.",
    )
    retry_jitter = models.FloatField(
        null=True, blank=True, help_text="Retry delays vary by up to this fraction."
    )
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds a run may take.")
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid of the worker.")
    # Background dependencies: a SCHEDULED run with upstream runs not finished yet is
    # ``blocked`` (and outside the ready index, so claims never read it); a database trigger
    # on runs that ``has_downstream`` releases or fails their downstream runs when they end.
    # Defaults in the database: the queue's raw INSERTs leave these columns out.
    blocked = models.PositiveIntegerField(db_default=0, help_text="Upstream runs still awaited.")
    has_downstream = models.BooleanField(db_default=False)
    # A run made by "retry" (admin, API, CLI) from a finished one: same task and parameters.
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retried_by",
        db_constraint=False,
        db_index=False,  # a partial index (Meta.indexes): most runs are no retry
        help_text="The finished run this one was created to retry.",
    )

    # Signed cloudpickle payloads: only workers and explicit ``result()`` calls unpickle them.
    parameters = models.BinaryField()
    parameters_preview = models.JSONField(default=dict, blank=True, decoder=BoundedJSONDecoder)
    result = models.BinaryField(null=True, blank=True)
    result_preview = models.JSONField(null=True, blank=True, decoder=BoundedJSONDecoder)
    traceback = models.TextField(blank=True)
    #: ``set_progress()`` of the run's code: {"done", "total", "message"} (django_tasks.progress).
    progress = models.JSONField(null=True, blank=True, editable=False, decoder=BoundedJSONDecoder)
    # Runs enqueued through Django's django.tasks (our backend, django_tasks.backends): what a
    # TaskResult shows and our own columns cannot keep exactly - the Task's module path and
    # options, the JSON arguments, the JSON return value, one error per failed attempt. JSON
    # only: the web side reads it without unpickling anything.
    django_task = models.JSONField(
        null=True, blank=True, help_text="django.tasks runs: the Task, JSON values, errors."
    )
    # Unique runs (django_tasks.unique): while a run with this key is not final, enqueueing
    # the key again returns this run (a partial unique index, below, keeps it so). NULL, not
    # '', for "no key": the indexes leave NULL rows out, and the enqueue function writes NULL.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Periodic runs (django_tasks.schedules): the schedule and the tick this run is for; one
    # run per (schedule, tick), however many workers enqueue due ticks.
    schedule = models.ForeignKey(
        "django_tasks.Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        # Looked up through django_tasks_one_run_per_tick (schedule, tick), a partial index:
        # a run without a schedule adds no entry anywhere.
        db_index=False,
        related_name="runs",
    )
    tick = models.DateTimeField(null=True, blank=True)
    # Limits (django_tasks.limits): the run holds a concurrency slot while it is held by a
    # worker (PENDING, RUNNING, CANCELLING); ``rate_slot`` is the start a rate reserved for it.
    holds_slot = models.BooleanField(db_default=False)
    rate_slot = models.DateTimeField(null=True, blank=True)

    # Not indexed: ids are time-ordered (UUIDv7), so "newest first" is the primary key read
    # backwards, and one index fewer is one write fewer on every state change of every run.
    created = models.DateTimeField()
    updated = models.DateTimeField()
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]  # newest first: UUIDv7 ids sort by creation time
        # Beside view_taskrun (reading runs anywhere): acting on them (see permissions.py).
        permissions = [
            ("retry_taskrun", "Can retry task runs"),
            ("cancel_taskrun", "Can cancel task runs"),
        ]
        indexes = [
            # Matches the claim query in sql.py exactly: its WHERE (state) and ORDER BY.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "scheduled_time",
                name="django_tasks_ready_idx",
                condition=Q(state_type="SCHEDULED", blocked=0),
            ),
            # The rescue looks up runs held by dead workers: only held runs are indexed.
            models.Index(
                "worker",
                name="django_tasks_held_idx",
                condition=Q(state_type__in=["PENDING", "RUNNING", "CANCELLING"]),
            ),
            # Runs with a unique key, final ones included (unique_for looks them up).
            models.Index(
                "unique_key",
                name="django_tasks_unique_key_idx",
                condition=Q(unique_key__isnull=False),
            ),
            # Retries of a run (its page lists them): only runs that are retries are indexed,
            # so an enqueue adds no entry here.
            models.Index(
                "retry_of",
                name="django_tasks_retry_of_idx",
                condition=Q(retry_of__isnull=False),
            ),
            # Runs waiting for the start a rate reserved for them: claims take those whose
            # start has come before older runs (sql.claim(rates=True)).
            models.Index(
                "queue",
                "scheduled_time",
                name="django_tasks_reserved_idx",
                condition=Q(state_type="SCHEDULED", blocked=0, rate_slot__isnull=False),
            ),
            # Failed runs by task (the task page's most frequent exceptions; the run list's
            # "Failed" filter): a run enters it only when it fails.
            models.Index(
                "task_key",
                "id",
                name="django_tasks_failed_idx",
                condition=Q(state_type__in=["FAILED", "CRASHED"]),
            ),
            # Runs waiting for a concurrency slot: what a freed slot looks for.
            models.Index(
                "priority",
                "id",
                name="django_tasks_awaiting_slot_idx",
                condition=Q(
                    state_type="SCHEDULED", blocked=1, state_name="AwaitingConcurrencySlot"
                ),
            ),
        ]
        constraints = [
            # Partial indexes: a run without a key or a schedule costs them nothing but the
            # check of their conditions.
            models.UniqueConstraint(
                "unique_key",
                name="django_tasks_one_live_run_per_key",
                condition=Q(unique_key__isnull=False) & ~Q(state_type__in=sorted(FINAL_TYPES)),
            ),
            models.UniqueConstraint(
                "schedule",
                "tick",
                name="django_tasks_one_run_per_tick",
                condition=Q(schedule__isnull=False),
            ),
            # A time Python can read (see django_tasks.times; added NOT VALID, then validated,
            # by migration 0025).
            models.CheckConstraint(
                condition=within_range("scheduled_time"), name="django_tasks_scheduled_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.task_name} [{self.state_name}]"

    @property
    def duration(self) -> float | None:
        """Seconds between RUNNING and the final state, when both are known."""
        if self.started and self.finished:
            return (self.finished - self.started).total_seconds()
        return None


class TaskRunState(models.Model):
    """One transition of a run: the history the admin shows as a timeline."""

    id = models.BigAutoField(primary_key=True)
    # db_index=False: the (run, timestamp) index below serves every lookup by run.
    # db_constraint=False: a deferred foreign-key check per history row cost the worker about
    # a tenth of its throughput; every history row is written in the same statement as its
    # run's update, and retention deletes both together, so the database check adds nothing.
    run = models.ForeignKey(
        TaskRun,
        on_delete=models.CASCADE,
        related_name="states",
        db_index=False,
        db_constraint=False,
    )
    type = models.CharField(max_length=16, choices=StateType.choices)
    name = models.CharField(max_length=32)
    message = models.TextField(blank=True)
    timestamp = models.DateTimeField()
    worker = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [models.Index(fields=["run", "timestamp"], name="django_tasks_state_run_idx")]

    def __str__(self) -> str:
        return self.name


class TaskRunDependency(models.Model):
    """An upstream edge: ``downstream`` started only after ``upstream`` finished.

    ``kind`` says how the edge arose: ``data`` (a future was passed as an argument) or
    ``wait_for``. No database foreign-key checks: submitted runs are recorded in batches by a
    writer, and an edge may be written before its upstream run's row.
    """

    class Kind(models.TextChoices):
        DATA = "data", "Argument"
        WAIT_FOR = "wait_for", "wait_for"

    id = models.BigAutoField(primary_key=True)
    downstream = models.ForeignKey(
        TaskRun,
        on_delete=models.CASCADE,
        related_name="upstream_edges",
        db_index=False,
        db_constraint=False,
    )
    upstream = models.ForeignKey(
        TaskRun,
        on_delete=models.CASCADE,
        related_name="downstream_edges",
        db_constraint=False,
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.DATA)
    allow_failure = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["downstream", "upstream"], name="django_tasks_dependency_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.upstream_id} -> {self.downstream_id}"


class Worker(models.Model):
    """One worker process: what it takes and when it last said it was alive.

    A run held (PENDING/RUNNING/CANCELLING) by a worker whose heartbeat is older than
    ``HEARTBEAT_TIMEOUT`` is rescued by any live worker: it is marked CRASHED and retried if the
    task allows.
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=255, unique=True, help_text="host:pid, as runs name it.")
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    queues = models.JSONField(default=list, decoder=BoundedJSONDecoder)
    concurrency = models.PositiveIntegerField(default=1)
    started = models.DateTimeField()
    last_heartbeat = models.DateTimeField(db_index=True)
    stopped = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started"]

    def __str__(self) -> str:
        return self.name


class ResultRecord(models.Model):
    """A cached result, by cache key: a run whose key finds a live record ends CACHED with
    this result instead of calling its function - in any process, on any host."""

    key = models.CharField(primary_key=True, max_length=200)
    task_key = models.CharField(max_length=64)
    task_name = models.CharField(max_length=255)
    run = models.ForeignKey(
        TaskRun,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        help_text="The run that computed the result.",
    )
    result = models.BinaryField(help_text="Signed pickle, as on runs.")
    result_preview = models.JSONField(null=True, blank=True, decoder=BoundedJSONDecoder)
    created = models.DateTimeField()
    expires = models.DateTimeField(null=True, blank=True, help_text="Never, when empty.")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.task_name} {self.key[:12]}"


class TaskRunLog(models.Model):
    """A log line of a run, from ``get_run_logger()`` (or ``print`` with ``log_prints``)."""

    id = models.BigAutoField(primary_key=True)
    # Written in batches, possibly before the run's own row: no database foreign-key check.
    run = models.ForeignKey(
        TaskRun,
        on_delete=models.CASCADE,
        related_name="logs",
        db_index=False,
        db_constraint=False,
    )
    timestamp = models.DateTimeField()
    level = models.PositiveSmallIntegerField()
    logger = models.CharField(max_length=255)
    message = models.TextField()

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [models.Index(fields=["run", "timestamp"], name="django_tasks_log_run_idx")]

    def __str__(self) -> str:
        return self.message[:80]

    @property
    def level_name(self) -> str:
        import logging

        return logging.getLevelName(self.level)
