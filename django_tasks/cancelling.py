"""Cancelling a run: one statement, in the caller's transaction.

Below the futures (``TaskRunFuture.cancel()``), the admin's and the API's actions and the
topic, which all cancel through it (docs/architecture.md).
"""

from __future__ import annotations

import uuid

from django.db import connections

from . import sql
from .conf import task_settings
from .migrated import explain_missing_schema
from .states import StateType

__all__ = ["cancel"]


def cancel(run_id: uuid.UUID, *, message: str = "Cancelled by request.") -> StateType | None:
    """Cancel a run, in the caller's transaction.

    SCHEDULED or PENDING -> CANCELLED at once; RUNNING -> CANCELLING (its worker interrupts
    the task, or the supervisor kills it after ``CANCEL_GRACE``). Returns the new state type,
    or ``None`` when the run was already final (or does not exist).
    """
    alias = task_settings().DATABASE_ALIAS
    with explain_missing_schema(alias), connections[alias].cursor() as cursor:
        cursor.execute(sql.CANCEL, {"id": run_id, "message": message})
        row = cursor.fetchone()
    return StateType(row[0]) if row else None
