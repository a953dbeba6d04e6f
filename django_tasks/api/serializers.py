"""Read-only serializers of the API: previews and history, never a payload."""

from __future__ import annotations

import json
import math
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from ..limits.rates import RATE_PATTERN
from ..models import Limit, Schedule, TaskRun, TaskRunLog, TaskRunState, Worker
from ..schedules.models import EDITABLE_FIELDS, STATUS_FIELDS

__all__ = [
    "DependenciesSerializer",
    "LogSerializer",
    "QueueSerializer",
    "RetrySerializer",
    "RunDetailSerializer",
    "RunSerializer",
    "StateSerializer",
    "StatsSerializer",
    "TaskSerializer",
    "WorkerSerializer",
]

RUN_FIELDS = [
    "id",
    "name",
    "task_name",
    "task_key",
    "origin",
    "queue",
    "priority",
    "tags",
    "state_type",
    "state_name",
    "state_message",
    "scheduled_time",
    "attempts",
    "retries",
    "worker",
    "created",
    "started",
    "finished",
    "duration",
    "parameters_preview",
    "result_preview",
    "progress",
    "retry_of",
]


class TagsField(serializers.ListField):
    """A run's tags: a list of strings as our code writes them. A value SQL wrote instead (a
    number, an object) is shown as a list of its one text, not a 500 for the whole list."""

    def to_representation(self, data: Any) -> list[str | None]:
        if not isinstance(data, list):
            data = [json.dumps(data) if not isinstance(data, str) else data]
        return super().to_representation([str(tag) for tag in data])


class RunSerializer(serializers.ModelSerializer[TaskRun]):
    duration = serializers.FloatField(read_only=True, allow_null=True)
    parameters_preview = serializers.JSONField(read_only=True)
    result_preview = serializers.JSONField(read_only=True, allow_null=True)
    #: {"done", "total", "message"} of the run's last set_progress() (django_tasks.progress).
    progress = serializers.JSONField(read_only=True, allow_null=True)
    tags = TagsField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = TaskRun
        fields = RUN_FIELDS
        read_only_fields = RUN_FIELDS


class RunDetailSerializer(RunSerializer):
    class Meta(RunSerializer.Meta):
        fields = [*RUN_FIELDS, "traceback", "blocked", "unique_key", "schedule", "tick"]
        read_only_fields = fields


class StateSerializer(serializers.ModelSerializer[TaskRunState]):
    class Meta:
        model = TaskRunState
        fields = ["timestamp", "type", "name", "message", "worker"]
        read_only_fields = fields


class LogSerializer(serializers.ModelSerializer[TaskRunLog]):
    level_name = serializers.CharField(read_only=True)

    class Meta:
        model = TaskRunLog
        fields = ["id", "timestamp", "level", "level_name", "logger", "message"]
        read_only_fields = fields


class DependenciesSerializer(serializers.Serializer[Any]):
    upstream = serializers.ListField(child=serializers.UUIDField())
    downstream = serializers.ListField(child=serializers.UUIDField())
    retried_by = serializers.ListField(child=serializers.UUIDField())


class RetrySerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(help_text="The new run.")
    retry_of = serializers.UUIDField()


class CancelSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    state_type = serializers.CharField(allow_null=True, help_text="None: it had finished.")


class WorkerSerializer(serializers.ModelSerializer[Worker]):
    heartbeat_age = serializers.SerializerMethodField(help_text="Seconds since its heartbeat.")
    alive = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = [
            "name",
            "host",
            "pid",
            "queues",
            "concurrency",
            "started",
            "last_heartbeat",
            "stopped",
            "heartbeat_age",
            "alive",
        ]
        read_only_fields = fields

    def get_heartbeat_age(self, obj: Worker) -> float:
        return (timezone.now() - obj.last_heartbeat).total_seconds()

    def get_alive(self, obj: Worker) -> bool:
        from ..conf import task_settings

        timeout = task_settings().HEARTBEAT_TIMEOUT
        return obj.stopped is None and self.get_heartbeat_age(obj) <= timeout


class TaskSerializer(serializers.Serializer[Any]):
    key = serializers.CharField()
    name = serializers.CharField()
    module = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    options = serializers.DictField()
    runs = serializers.IntegerField(help_text="Runs created in the window.")
    completed = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="FAILED or CRASHED.")
    failure_rate = serializers.FloatField(allow_null=True)
    p50_seconds = serializers.FloatField(allow_null=True)
    p95_seconds = serializers.FloatField(allow_null=True)


class QueueSerializer(serializers.Serializer[Any]):
    queue = serializers.CharField()
    ready = serializers.IntegerField(help_text="Runs a worker could take now.")
    oldest_ready = serializers.DateTimeField(allow_null=True)
    workers = serializers.IntegerField(help_text="Live workers that serve this queue.")
    unserved = serializers.BooleanField(
        help_text="Runs are ready and no live worker serves this queue (check --queues)."
    )


class StatsSerializer(serializers.Serializer[Any]):
    window_seconds = serializers.FloatField()
    by_state = serializers.DictField(child=serializers.IntegerField())
    queues = QueueSerializer(many=True)
    live_workers = serializers.IntegerField()


class _FiniteFloat(serializers.FloatField):
    """A float column may hold NaN or an infinity (written in SQL), which JSON cannot say:
    shown as null (a schedule's ``when`` then says why it is invalid)."""

    def to_representation(self, value: Any) -> Any:
        number = float(value)
        return number if math.isfinite(number) else None


class ScheduleSerializer(serializers.ModelSerializer[Schedule]):
    when = serializers.CharField(source="description", read_only=True)
    interval_seconds = _FiniteFloat(read_only=True, allow_null=True)
    last_run = serializers.UUIDField(source="last_run_id", read_only=True, allow_null=True)

    class Meta:
        model = Schedule
        fields = ["id", "when", *EDITABLE_FIELDS, *STATUS_FIELDS, "last_run"]
        read_only_fields = fields


class _StrictText(serializers.CharField):
    """A JSON string, not a number turned into one (the schema says string), that PostgreSQL
    can store: no NUL character (DRF's own check) and no lone surrogate."""

    default_error_messages = {
        "surrogate": "Lone surrogates (half of a UTF-16 pair) are not text: not stored."
    }

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        text = super().to_internal_value(data)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("surrogate")
        return text


class _StrictRegex(serializers.RegexField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class _StrictInteger(serializers.IntegerField):
    """A JSON integer, not a string of digits (the schema says integer)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class LimitSerializer(serializers.ModelSerializer[Limit]):
    """A limit; one with neither a concurrency nor a rate limits nothing (and is allowed)."""

    # Untrimmed: what the schema's lengths and pattern say is what is checked and stored.
    name = _StrictText(min_length=1, max_length=100, trim_whitespace=False)
    concurrency = _StrictInteger(min_value=0, max_value=2**31 - 1, allow_null=True, required=False)
    rate = _StrictRegex(
        RATE_PATTERN,
        allow_blank=True,
        required=False,
        max_length=32,
        trim_whitespace=False,
        help_text="100/m, 5/s.",
    )

    class Meta:
        model = Limit
        fields = ["id", "scope", "name", "concurrency", "rate"]
        read_only_fields = ["id"]
