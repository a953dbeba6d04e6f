"""The Schedule admin: enable or disable any schedule; add and edit the admin's own.

Schedules declared in code or settings are theirs: the admin may switch them off and on, and
shows their timing and arguments read-only. The form checks what a worker would otherwise find
at the tick - an unknown task, arguments that do not fit it, a bad cron expression or time
zone, JSON that PostgreSQL cannot store - and says so on the field.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ..admin_filters import SafeChangeList
from ..admin_links import change_link
from ..registry import registry
from ..tasks import check_queue
from .models import EDITABLE_FIELDS, Schedule
from .timing import Cron, Every

__all__ = ["ScheduleAdmin", "ScheduleForm"]

if TYPE_CHECKING:
    _ScheduleAdminBase = admin.ModelAdmin[Schedule]
    _ScheduleFormBase = forms.ModelForm[Schedule]
else:
    _ScheduleAdminBase = admin.ModelAdmin
    _ScheduleFormBase = forms.ModelForm

_DEFINITION_FIELDS = ["task_name", "cron", "interval_seconds", "timezone", "args", "kwargs"]


class ScheduleForm(_ScheduleFormBase):
    class Meta:
        model = Schedule
        fields = EDITABLE_FIELDS

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk and self.instance.source != Schedule.Source.ADMIN:
            return data  # declared: only enabled (and missed) change here
        self._check_timing(data)
        self._check_task(data)
        queue = data.get("queue")
        if queue:
            try:
                check_queue(queue)
            except (TypeError, ValueError) as exc:
                self.add_error("queue", str(exc))
        return data

    def _check_timing(self, data: dict[str, Any]) -> None:
        cron, interval = data.get("cron"), data.get("interval_seconds")
        if bool(cron) == (interval is not None):
            self.add_error("cron", "Give a cron expression or an interval in seconds, not both.")
            return
        try:
            if cron:
                Cron(cron, data.get("timezone") or "UTC")
            else:
                Every(float(interval or 0))
        except (TypeError, ValueError) as exc:
            self.add_error("cron" if cron else "interval_seconds", str(exc))

    def _check_task(self, data: dict[str, Any]) -> None:
        args, kwargs = data.get("args", []), data.get("kwargs", {})
        if not isinstance(args, list):
            self.add_error("args", 'A JSON list, e.g. [1, "two"].')
            return
        if not isinstance(kwargs, dict):
            self.add_error("kwargs", 'A JSON object, e.g. {"full": true}.')
            return
        if "\\u0000" in json.dumps([args, kwargs]):
            self.add_error("args", "PostgreSQL cannot store a NUL character in JSON.")
            return
        try:
            task = registry.by_name(data.get("task_name", ""))
        except LookupError as exc:
            self.add_error("task_name", str(exc.args[0]) if exc.args else str(exc))
            return
        try:
            task.bind(tuple(args), dict(kwargs))
        except TypeError as exc:
            self.add_error("args", str(exc))


@admin.register(Schedule)
class ScheduleAdmin(SafeChangeList, _ScheduleAdminBase):
    form = ScheduleForm
    list_display = [
        "name",
        "task_name",
        "timing_display",
        "enabled",
        "next_tick",
        "last_tick",
        "last_run_link",
        "source",
        "last_error",
    ]
    list_filter = ["enabled", "source", "missed"]
    search_fields = ["name", "task_name"]
    actions = ["enable_selected", "disable_selected"]
    readonly_fields = ["source", "next_tick", "last_tick", "last_run_link", "last_error"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: Schedule | None = None
    ) -> list[str] | tuple[Any, ...]:
        fields = list(self.readonly_fields)
        if obj is not None and obj.source != Schedule.Source.ADMIN:
            fields += ["name", *_DEFINITION_FIELDS, "queue"]
        return fields

    def has_delete_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        if obj is not None and obj.source != Schedule.Source.ADMIN:
            return False  # it would come back at the next worker start: disable it instead
        return super().has_delete_permission(request, obj)

    @admin.display(description="When")
    def timing_display(self, obj: Schedule) -> str:
        return obj.description

    @admin.display(description="Last run")
    def last_run_link(self, obj: Schedule) -> str:
        return change_link("taskrun", obj.last_run_id, str(obj.last_run_id)[:8])

    @admin.action(description="Enable the selected schedules", permissions=["change"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected schedules", permissions=["change"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Schedule], on: bool) -> None:
        changed = 0
        for schedule in queryset.filter(enabled=not on):
            schedule.enabled = on
            schedule.save()  # computes the next tick (or clears it)
            changed += 1
        verb = "Enabled" if on else "Disabled"
        self.message_user(request, f"{verb} {changed} schedule(s).", messages.SUCCESS)
