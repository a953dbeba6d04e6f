"""Task run states: the types of Prefect's lifecycle, their display names, and the allowed moves.

Every state change of a run goes through :func:`check_transition` (and, for writes through the
ORM, :func:`django_tasks.runs.transition`); raw-SQL writes in :mod:`django_tasks.sql` state the
move they make and are checked against the same table when the module is imported, so the
table below is the single source of truth.
"""

from __future__ import annotations

from django.db import models

__all__ = [
    "ALLOWED_MOVES",
    "FINAL_TYPES",
    "InvalidTransition",
    "StateName",
    "StateType",
    "check_transition",
    "default_name",
    "failure_state",
    "is_final",
]


class StateType(models.TextChoices):
    """The state *type* decides what may happen next; the *name* only adds detail."""

    SCHEDULED = "SCHEDULED", "Scheduled"
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    CRASHED = "CRASHED", "Crashed"
    CANCELLING = "CANCELLING", "Cancelling"
    CANCELLED = "CANCELLED", "Cancelled"


class StateName:
    """Prefect's state names, including the sub-types that share a type."""

    SCHEDULED = "Scheduled"
    LATE = "Late"
    AWAITING_RETRY = "AwaitingRetry"
    AWAITING_CONCURRENCY_SLOT = "AwaitingConcurrencySlot"
    AWAITING_RATE_LIMIT = "AwaitingRateLimit"
    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    COMPLETED = "Completed"
    CACHED = "Cached"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    ROLLED_BACK = "RolledBack"
    CRASHED = "Crashed"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"


FINAL_TYPES: frozenset[StateType] = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
)

_S = StateType
#: ``None`` is "no state yet": a new run starts SCHEDULED (background) or PENDING (inline).
ALLOWED_MOVES: dict[StateType | None, frozenset[StateType]] = {
    None: frozenset({_S.SCHEDULED, _S.PENDING}),
    # Claimed by a worker, cancelled before it started, or failed before it could start
    # (for example an upstream dependency failed).
    _S.SCHEDULED: frozenset({_S.PENDING, _S.CANCELLED, _S.FAILED}),
    # Started, handed back at shutdown, refused (unknown task, bad payload), lost with its
    # worker, or completed without running by a cache hit (Cached).
    _S.PENDING: frozenset(
        {_S.RUNNING, _S.SCHEDULED, _S.FAILED, _S.CRASHED, _S.CANCELLED, _S.COMPLETED}
    ),
    # Finished one way or another; SCHEDULED again when a retry is awaited.
    _S.RUNNING: frozenset(
        {_S.COMPLETED, _S.FAILED, _S.CRASHED, _S.CANCELLING, _S.CANCELLED, _S.SCHEDULED}
    ),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.COMPLETED, _S.FAILED, _S.CRASHED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    # A crashed run (its worker died) is scheduled again, in the same transaction, when the
    # task's retries allow; otherwise CRASHED is where it ends.
    _S.CRASHED: frozenset({_S.SCHEDULED}),
    _S.CANCELLED: frozenset(),
}


class InvalidTransition(ValueError):
    """Raised when code asks for a move the table above does not allow."""


def check_transition(current: StateType | str | None, new: StateType | str) -> StateType:
    """Return ``new`` as a :class:`StateType` if ``current -> new`` is allowed, else raise."""
    try:
        target = StateType(new)
        source = StateType(current) if current is not None else None
    except ValueError as exc:
        raise InvalidTransition(f"Unknown state type: {exc}") from None
    if target not in ALLOWED_MOVES[source]:
        raise InvalidTransition(f"A run cannot move from {source or 'no state'} to {target}.")
    return target


def is_final(state_type: StateType | str) -> bool:
    """True for types after which a run never changes again."""
    return StateType(state_type) in FINAL_TYPES


def default_name(state_type: StateType | str) -> str:
    """The display name of a type when no sub-type applies (``RUNNING`` -> ``Running``)."""
    return str(StateType(state_type).label)


def failure_state(exc: BaseException) -> tuple[StateType, str]:
    """The state a run ends in when its function raised ``exc``: CRASHED for an interrupt
    (``KeyboardInterrupt``) or an exit (``SystemExit``) - the process was being stopped, the
    task did not fail on its own account - FAILED for anything else. Prefect's rule."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return StateType.CRASHED, StateName.CRASHED
    return StateType.FAILED, StateName.FAILED
