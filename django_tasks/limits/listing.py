"""Limits as the CLI, the API and the admin show and change them: with the runs holding a slot
and the runs waiting, so that a limit that binds is visible."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q

from ..models import TaskRun
from .models import Limit

__all__ = ["holding", "limit_rows", "remove_limit", "runs_of", "set_limit", "waiting"]

HELD = ["PENDING", "RUNNING", "CANCELLING"]
WAITING = ["AwaitingConcurrencySlot", "AwaitingRateLimit"]


def runs_of(limit: Limit) -> Q:
    """The runs a limit applies to."""
    if limit.scope == Limit.Scope.QUEUE:
        return Q(queue=limit.name)
    return Q(tags__contains=[limit.name])


def holding(limit: Limit) -> int:
    """Its runs that hold a slot now."""
    runs = TaskRun.objects.filter(runs_of(limit), state_type__in=HELD, holds_slot=True)
    return runs.count()


def waiting(limit: Limit) -> int:
    """Its runs waiting for a slot or for their turn of a rate."""
    runs = TaskRun.objects.filter(runs_of(limit), state_type="SCHEDULED", state_name__in=WAITING)
    return runs.count()


def limit_rows() -> list[dict[str, Any]]:
    return [
        {
            "scope": limit.scope,
            "name": limit.name,
            "concurrency": limit.concurrency,
            "rate": limit.rate,
            "holding": holding(limit),
            "waiting": waiting(limit),
        }
        for limit in Limit.objects.all()
    ]


def set_limit(scope: str, name: str, concurrency: int | None, rate: str = "") -> Limit:
    """Create or change a limit (ValidationError with every field's problem)."""
    limit = Limit(scope=scope, name=name, concurrency=concurrency, rate=rate)
    if "\x00" in name:  # before any query: PostgreSQL refuses NUL in text
        raise ValidationError("Null characters are not allowed in a name.")
    limit.full_clean(validate_unique=False)
    if concurrency is None and not rate:
        raise ValidationError("Give a concurrency, a rate or both (remove a limit instead).")
    limit.pk = Limit.objects.filter(scope=scope, name=name).values_list("pk", flat=True).first()
    limit.save()
    return limit


def remove_limit(scope: str, name: str) -> bool:
    if "\x00" in name:
        return False
    return Limit.objects.filter(scope=scope, name=name).delete()[0] > 0
