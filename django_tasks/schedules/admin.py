"""The Schedule admin: enable or disable any schedule; add and edit the admin's own.

Schedules declared in code or settings are theirs: the admin may switch them off and on, and
shows their timing and arguments read-only. The form checks what a worker would otherwise find
at the tick - an unknown task, arguments that do not fit it or that no run could carry (JSON
PostgreSQL cannot store, NaN, nesting too deep, a payload over the limit), a bad cron
expression, a time zone name that is not IANA's, a cron expression and an interval both - and
says so on the field.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.fields import JSONString
from django.http import HttpRequest

from .. import json_input
from ..admin_filters import SafeChangeList
from ..admin_links import change_link
from ..registry import registry
from ..storable import shown
from ..tasks import check_queue
from .arguments import check_arguments
from .models import EDITABLE_FIELDS, Schedule
from .timing import timing_of, zone

__all__ = ["ScheduleAdmin", "ScheduleForm"]

if TYPE_CHECKING:
    _ScheduleAdminBase = admin.ModelAdmin[Schedule]
    _ScheduleFormBase = forms.ModelForm[Schedule]
else:
    _ScheduleAdminBase = admin.ModelAdmin
    _ScheduleFormBase = forms.ModelForm

_DEFINITION_FIELDS = ["task_name", "cron", "interval_seconds", "timezone", "args", "kwargs"]


class ArgumentsField(forms.JSONField):
    """``args`` or ``kwargs`` as typed: JSON PostgreSQL stores, read by
    :mod:`django_tasks.json_input`, or an error that says why. (Django's own field lets NaN
    through to the database's refusal, and recurses on 100,000 ``[`` until a
    ``RecursionError`` - when reading the input and again when showing the form.)"""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["decoder"] = json_input.StorableJSONDecoder  # bound_data() reads with it too
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        try:
            converted = json_input.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not JSON PostgreSQL can store: {exc.msg}.") from None
        return JSONString(converted) if isinstance(converted, str) else converted


class ScheduleForm(_ScheduleFormBase):
    class Meta:
        model = Schedule
        fields = EDITABLE_FIELDS
        field_classes = {"args": ArgumentsField, "kwargs": ArgumentsField}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk and self.instance.source != Schedule.Source.ADMIN:
            # Declared: only enabled (and missed) change here; one whose stored timing is bad
            # (written in SQL, or by older code) may be switched off, not on.
            if data.get("enabled"):
                try:
                    self.instance.timing()
                except ValueError as exc:
                    self.add_error("enabled", str(exc))
            return data
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
        if {"cron", "interval_seconds", "timezone"} & set(self.errors):
            return  # said already (not a number, too long)
        cron, interval = data.get("cron", ""), data.get("interval_seconds")
        try:
            zone(data.get("timezone", ""))
        except ValueError as exc:
            self.add_error("timezone", str(exc))
            return
        try:
            timing_of(cron, interval, data["timezone"])
        except (TypeError, ValueError) as exc:
            self.add_error("cron" if cron else "interval_seconds", str(exc))

    def _check_task(self, data: dict[str, Any]) -> None:
        if "args" not in data or "kwargs" not in data:
            return  # not JSON PostgreSQL stores: said on the field
        args, kwargs = data["args"], data["kwargs"]
        if not isinstance(args, list):
            self.add_error("args", 'A JSON list, e.g. [1, "two"].')
            return
        if not isinstance(kwargs, dict):
            self.add_error("kwargs", 'A JSON object, e.g. {"full": true}.')
            return
        try:
            task = registry.by_name(data.get("task_name", ""))
        except LookupError as exc:
            self.add_error("task_name", str(exc.args[0]) if exc.args else str(exc))
            return
        try:
            check_arguments(task, args, kwargs)
        except (TypeError, ValueError) as exc:
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
            try:
                schedule.save()  # computes the next tick (or clears it)
            except ValueError as exc:  # a bad definition (written in SQL): it stays off
                message = f"Schedule {shown(schedule.name)} not enabled: {exc}"
                self.message_user(request, message, messages.WARNING)
                continue
            changed += 1
        verb = "Enabled" if on else "Disabled"
        self.message_user(request, f"{verb} {changed} schedule(s).", messages.SUCCESS)
