"""Tasks that end their runs by hand (a returned state) or by an exit or interrupt."""

from __future__ import annotations

from django.utils import timezone

from django_tasks import Cancelled, Completed, Crashed, Failed, State, StateType, task
from django_tasks.transactions import TaskTransaction

from .models import Effect


@task(retries=1)
def ends_as(kind: str, label: str) -> object:
    """Leaves a mark per attempt, then returns the state ``kind`` names."""
    Effect.objects.create(label=label)
    if kind == "failed":
        return Failed(message=f"{label} said no")
    if kind == "failed-with":
        return Failed(message="with its exception", data=LookupError(label))
    if kind == "completed":
        return Completed(data={"label": label}, message="done by hand")
    if kind == "cancelled":
        return Cancelled(message="nothing to do")
    if kind == "crashed":
        return Crashed(message="gave up")
    if kind == "running":
        return State(StateType.RUNNING, "Running", "", timezone.now())
    return kind


@task(retries=2)
def stops(how: str, label: str) -> None:
    """Leaves a mark per attempt, then exits or is interrupted."""
    Effect.objects.create(label=label)
    if how == "exit":
        raise SystemExit(3)
    raise KeyboardInterrupt


def _mark_committed(transaction: TaskTransaction) -> None:
    assert transaction.is_committed()
    Effect.objects.create(label="plain-committed")


@task(on_commit=[_mark_committed])
def plain_with_commit_hook(label: str, fail: bool = False) -> str:
    """Not atomic; its on_commit hook leaves a mark."""
    from django_tasks import current_transaction

    txn = current_transaction()
    assert txn is None  # not atomic: no database transaction is held open around it
    if fail:
        raise ValueError(label)
    return label
