"""List filters of the run admin that stay cheap with millions of runs.

Django's default filters for a plain column (``AllValuesFieldListFilter``) list their choices
with ``SELECT DISTINCT`` over the whole table, and a date hierarchy does the same for dates:
seconds each with a million runs, on every page. These filters take their choices from what
the process knows instead (registered tasks, their queues and tags, worker rows), and the
time filter selects runs through the primary key (run ids are time-ordered).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .conf import task_settings
from .ids import uuid7_floor
from .models import Worker
from .registry import registry

__all__ = ["CreatedFilter", "QueueFilter", "TagFilter", "TaskFilter", "WorkerFilter"]


class _ChoiceFilter(admin.SimpleListFilter):
    field = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class TaskFilter(_ChoiceFilter):
    title = "task"
    parameter_name = "task_name__exact"
    field = "task_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = sorted({task.name for task in registry.all()})
        return [(name, name) for name in names]


class QueueFilter(_ChoiceFilter):
    title = "queue"
    parameter_name = "queue__exact"
    field = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = {task.queue for task in registry.all()} | {task_settings().DEFAULT_QUEUE}
        return [(queue, queue) for queue in sorted(queues)]


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = sorted({tag for task in registry.all() for tag in task.tags})
        return [(tag, tag) for tag in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(tags__contains=[value]) if value else queryset


class WorkerFilter(_ChoiceFilter):
    title = "worker"
    parameter_name = "worker__exact"
    field = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Worker.objects.order_by("-started").values_list("name", flat=True)[:30]
        return [(name, name) for name in names]


class CreatedFilter(admin.SimpleListFilter):
    title = "created"
    parameter_name = "created"
    _SPANS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        span = self._SPANS.get(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(pk__gte=uuid7_floor(timezone.now() - span))
