"""The ``Schedule`` table: periodic runs of a task, defined in code, in settings or in the admin.

Workers enqueue due ticks (:mod:`.ticker`); ``next_tick`` is the only thing they move, with a
compare-and-set, and each tick's run carries ``(schedule, tick)`` under a unique constraint, so
one tick gives one run however many workers look at it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from ..json_input import BoundedJSONDecoder
from ..times import within_range
from .timing import Timing, timing_of

__all__ = ["EDITABLE_FIELDS", "STATUS_FIELDS", "Schedule"]

_DEFINITION = ("cron", "interval_seconds", "timezone")
#: What the admin's form edits (and the API and the CLI show first).
EDITABLE_FIELDS = [
    "name",
    "task_name",
    "cron",
    "interval_seconds",
    "timezone",
    "args",
    "kwargs",
    "queue",
    "missed",
    "enabled",
]
#: What the workers and the declarations write.
STATUS_FIELDS = ["source", "next_tick", "last_tick", "last_error"]


class Schedule(models.Model):
    """A task to run periodically with fixed arguments."""

    class Source(models.TextChoices):
        CODE = "code", "@task(schedule=...)"
        SETTINGS = "settings", "DJANGO_TASKS['SCHEDULES']"
        ADMIN = "admin", "Admin"

    class Missed(models.TextChoices):
        ONCE = "once", "Run once for all missed ticks"
        SKIP = "skip", "Skip missed ticks"

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, help_text="The task's name (@task(name=...)).")
    cron = models.CharField(
        max_length=100, blank=True, help_text="Five fields: minute hour day month weekday."
    )
    interval_seconds = models.FloatField(
        null=True, blank=True, help_text="Seconds between ticks (instead of a cron expression)."
    )
    timezone = models.CharField(max_length=64, default="UTC", help_text="For the cron expression.")
    # Read with the bounded decoder: arguments SQL nested thousands deep, or an int of more
    # digits than Python reads, come back as their text (Django's JSONField does that with a
    # JSONDecodeError) instead of a RecursionError or ValueError - a 500 - on every page.
    args = models.JSONField(
        default=list,
        blank=True,
        decoder=BoundedJSONDecoder,
        help_text="Positional arguments (JSON).",
    )
    kwargs = models.JSONField(
        default=dict, blank=True, decoder=BoundedJSONDecoder, help_text="Keyword arguments (JSON)."
    )
    queue = models.CharField(max_length=100, blank=True, help_text="Blank: the task's queue.")
    missed = models.CharField(max_length=8, choices=Missed.choices, default=Missed.ONCE)
    enabled = models.BooleanField(default=True)
    source = models.CharField(
        max_length=8, choices=Source.choices, default=Source.ADMIN, editable=False
    )
    next_tick = models.DateTimeField(null=True, blank=True, editable=False)
    last_tick = models.DateTimeField(null=True, blank=True, editable=False)
    last_run = models.ForeignKey(
        "django_tasks.TaskRun",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="+",
    )
    last_error = models.TextField(blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The workers' "what is due" query reads only enabled schedules, by next tick.
            models.Index("next_tick", name="django_tasks_due_idx", condition=Q(enabled=True))
        ]
        constraints = [
            # Times Python can read (django_tasks.times): one row set to '-infinity' by SQL
            # made the ticker and every page that lists schedules fail.
            models.CheckConstraint(
                condition=within_range("next_tick"), name="django_tasks_schedule_next_tick"
            ),
            models.CheckConstraint(
                condition=within_range("last_tick"), name="django_tasks_schedule_last_tick"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A new, re-timed or re-enabled schedule ticks next after now: turning a schedule on
        again after a month runs nothing for the month it was off."""
        stored = (
            Schedule.objects.filter(pk=self.pk).values_list(*_DEFINITION, "enabled").first()
            if self.pk is not None
            else None
        )
        if stored is None or tuple(stored) != self._definition():
            self.next_tick = self.compute_next_tick(timezone.now())
        super().save(*args, **kwargs)

    def _definition(self) -> tuple[Any, ...]:
        return (*(getattr(self, f) for f in _DEFINITION), self.enabled)

    def timing(self) -> Timing:
        """The cron expression or interval (ValueError when the row holds neither or both)."""
        return timing_of(self.cron, self.interval_seconds, self.timezone)

    def compute_next_tick(self, now: datetime) -> datetime | None:
        return self.timing().next_after(now) if self.enabled else None

    @property
    def description(self) -> str:
        try:
            return self.timing().describe()
        except ValueError as exc:
            return f"invalid: {exc}"
