"""What an operator can do to a run - cancel it, retry it - for the admin, the CLI and the API.

Both work on run ids, in the caller's transaction, and never unpickle anything: a retry
copies the signed payload as it is.
"""

from __future__ import annotations

import uuid

from django.db import connections

from . import sql
from .cancelling import cancel
from .conf import task_settings
from .ids import uuid7
from .states import StateType, is_final

__all__ = ["RunNotFound", "cancel_run", "retry_run"]


class RunNotFound(LookupError):
    """No run with this id (never committed, or purged)."""


def _state_and_origin(run_id: uuid.UUID) -> tuple[str, str]:
    from .models import TaskRun

    row = TaskRun.objects.filter(pk=run_id).values_list("state_type", "origin").first()
    if row is None:
        raise RunNotFound(f"No task run {run_id}.")
    return row[0], row[1]


def cancel_run(run_id: uuid.UUID) -> StateType | None:
    """Cancel a run: its new state type, or ``None`` if it had already finished."""
    _state_and_origin(run_id)
    return cancel(run_id, message="Cancelled by an operator.")


def retry_run(run_id: uuid.UUID) -> uuid.UUID:
    """A new SCHEDULED run with the task, parameters and options of a finished background run
    (linked to it by ``retry_of``); returns its id.

    Raises :class:`RunNotFound`, or :class:`ValueError` for a run that is not finished yet or
    that ran inline (inline and submitted runs keep no parameters to run again)."""
    state_type, origin = _state_and_origin(run_id)
    if origin != "delay":
        raise ValueError(
            f"Run {run_id} ran {'inline' if origin == 'call' else 'submitted'}: only background "
            f"runs keep their parameters and can be retried."
        )
    if not is_final(state_type):
        raise ValueError(f"Run {run_id} is {state_type}: only a finished run can be retried.")
    new_id = uuid7()
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(sql.RETRY_AS_NEW, {"id": run_id, "new_id": new_id})
        if cursor.fetchone() is None:  # purged between the check and the insert
            raise RunNotFound(f"No finished background run {run_id}.")
    return new_id
