"""A schedule's fixed arguments, checked where they are given - ``@task(schedule=...)``, the
settings' ``SCHEDULES`` (system check), the admin's form - as every tick will use them.

Arguments whose run can never be enqueued (they do not fit the task, PostgreSQL cannot store
them, they pickle to more than ``MAX_PAYLOAD_BYTES``) are refused there, once, instead of
failing every tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..json_input import check_storable
from ..serializers import dumps

if TYPE_CHECKING:
    from ..tasks import Task

__all__ = ["check_arguments"]


def check_arguments(task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """``TypeError`` for arguments that do not fit ``task``; ``ValueError`` for arguments that
    are not JSON PostgreSQL stores, or whose payload is over the limit (as the ticker makes it:
    :meth:`django_tasks.topic.RunDocument.build`)."""
    check_storable(list(args), "args")
    check_storable(dict(kwargs), "kwargs")
    task.bind(tuple(args), dict(kwargs))
    dumps((tuple(args), dict(kwargs)), what="parameters", task_key=task.key)
