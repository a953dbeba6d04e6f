"""Transactions: task runs whose database writes and results commit together, or not at all.

``@task(atomic=True)`` runs each attempt of the function, with its result record, in one
database transaction (a savepoint when the caller is already in one): an exception rolls the
task's writes back, then the retry policy applies. ``with django_tasks.transaction():`` groups
several inline task calls into one transaction: they commit together when the block ends, or
all roll back when an exception leaves it.

A run in a transaction is recorded COMPLETED only when the transaction commits; if it rolls
back, the run is recorded FAILED (``RolledBack``). ``on_commit`` hooks are called after the
commit (Django's ``transaction.on_commit``), ``on_rollback`` hooks after a rollback - in the
reverse order of the runs - so that side effects outside the database (files, e-mails, other
services) can be undone. Both receive the :class:`TaskTransaction`, which runs can use to pass
data to the hooks (``set``/``get``).

With a ``key``, the transaction is idempotent: its commit stores a record under the key, in
the same transaction, and each task call inside it gets a cache key of its own (the
transaction key, the task and the call's position). Running the block again after it
committed finds those records: every call ends CACHED with its first result and no function
runs again - a re-run is a no-op. The key is locked while the block runs, so two processes
running it at once take turns.

A run of a task that is not atomic, called outside any ``transaction()``, is a transaction of
its own as in Prefect: when it completes (not from the cache), its ``on_commit`` hooks are
called (its database writes are not held back: they committed as they were made).

Only inline calls join a transaction (it lives on this thread's database connection):
``.submit()`` runs on other threads and ``.delay()`` runs in workers are not part of it (a
``.delay()`` inside it is still enqueued in it, as always).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.db import transaction as db_transaction

from . import sql
from .caching import django_execute, lookup, store
from .conf import task_settings
from .futures import State
from .recorder import NOW, RunRecord, record
from .signals import run_finished, send
from .states import StateName, StateType
from .storable import shown

if TYPE_CHECKING:
    from .context import TaskRunContext
    from .tasks import Task

__all__ = ["TaskTransaction", "commit_alone", "current_transaction", "transaction"]

logger = logging.getLogger("django_tasks.transactions")

#: ``hook(transaction)``: ``on_commit`` / ``on_rollback`` hooks of a task.
TransactionHook = Callable[["TaskTransaction"], None]


class TaskTransaction:
    """The transaction of a ``with django_tasks.transaction():`` block (or of one atomic run)."""

    def __init__(self, key: str | None, parent: TaskTransaction | None = None) -> None:
        self.key = key
        self.parent = parent
        self.state = "ACTIVE"
        self._committed_before = False
        self._calls = 0
        self._values: dict[str, Any] = {}
        self._staged: list[tuple[Task[Any, Any], RunRecord, TaskRunContext, State]] = []

    def __repr__(self) -> str:
        return f"<TaskTransaction key={shown(self.key)} {self.state}>"

    def is_committed(self) -> bool:
        """True once committed - or when it had committed before, under the same key."""
        return self.state == "COMMITTED" or self._committed_before

    def set(self, name: str, value: Any) -> None:
        """Keep a value for the hooks (for example the path of a file a task wrote)."""
        self._values[name] = value

    def get(self, name: str, default: Any = None) -> Any:
        """A value set on this transaction - or, in a nested one, on an enclosing one (as in
        Prefect: an inner block sees what the outer set; what it sets stays its own)."""
        if name in self._values:
            return self._values[name]
        if self.parent is not None:
            return self.parent.get(name, default)
        return default

    def call_key(self, task: Task[Any, Any]) -> str | None:
        """The cache key of the next call of ``task`` inside a keyed transaction."""
        if self.key is None:
            return None
        self._calls += 1
        return f"txn:{self.key}:{task.key}:{self._calls}"[:200]

    def stage(
        self, task: Task[Any, Any], run: RunRecord, context: TaskRunContext, state: State
    ) -> None:
        """A run completed inside the transaction: recorded at commit or rollback."""
        self._staged.append((task, run, context, state))

    # -- the end ----------------------------------------------------------------------------

    def _commit(self) -> None:
        from .hooks import call_hooks

        self.state = "COMMITTED"
        for task, run, context, state in self._staged:
            run.move(state.type, state.name, state.message, finished=NOW)
            record(run)
            send(run_finished, task, run_id=run.id, state=state)
            call_hooks(task, context, state)
            _call_each(task.options.on_commit, self, "on_commit", task)

    def _commit_background(self, task: Task[Any, Any]) -> None:
        """An atomic background run committed: its ``on_commit`` hooks."""
        self.state = "COMMITTED"
        _call_each(task.options.on_commit, self, "on_commit", task)

    def _rollback(self) -> None:
        self.state = "ROLLED_BACK"
        message = "Rolled back with its transaction."
        for task, run, _, _ in reversed(self._staged):
            run.move(StateType.FAILED, StateName.ROLLED_BACK, message, finished=NOW)
            record(run)
            state = State(StateType.FAILED, StateName.ROLLED_BACK, message, run.updated)
            send(run_finished, task, run_id=run.id, state=state)
            _call_each(tuple(reversed(task.options.on_rollback)), self, "on_rollback", task)


def commit_alone(task: Task[Any, Any]) -> None:
    """A run of a task that is not atomic completed outside any transaction: it was a
    transaction of its own, which committed, so its ``on_commit`` hooks are called (Prefect
    gives every run a transaction). Its database writes were not held back: they committed as
    they were made."""
    if task.options.on_commit:
        TaskTransaction(None)._commit_background(task)


_current: contextvars.ContextVar[TaskTransaction | None] = contextvars.ContextVar(
    "django_tasks_transaction", default=None
)


def current_transaction() -> TaskTransaction | None:
    """The transaction inline task calls on this thread join, if any."""
    return _current.get()


@contextlib.contextmanager
def transaction(key: str | None = None) -> Iterator[TaskTransaction]:
    """Group inline task calls in one database transaction (see the module docstring)."""
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"A transaction key must be a non-empty str, got {shown(key)}.")
    txn = TaskTransaction(key, parent=_current.get())
    alias = task_settings().DATABASE_ALIAS
    token = _current.set(txn)
    try:
        with db_transaction.atomic(using=alias):
            if key is not None:
                marker = f"txn:{key}"[:200]
                django_execute(sql.CACHE_LOCK_XACT, {"key": marker})
                txn._committed_before = lookup(marker) is not None
            yield txn
            if key is not None and not txn._committed_before:
                store(marker, _MARKER_TASK, None, b"", {"transaction": key})
            db_transaction.on_commit(txn._commit, using=alias)
    except BaseException:
        txn._rollback()
        raise
    finally:
        _current.reset(token)


class _MarkerTask:
    """Stands for the transaction itself in its result record."""

    key = "transaction"
    name = "transaction"

    class options:
        cache_expiration = None


_MARKER_TASK: Any = _MarkerTask()


def _call_each(
    hooks: tuple[TransactionHook, ...], txn: TaskTransaction, kind: str, task: Task[Any, Any]
) -> None:
    for hook in hooks:
        try:
            hook(txn)
        except Exception:
            logger.exception("%s hook %r of %s raised", kind, hook, task)
