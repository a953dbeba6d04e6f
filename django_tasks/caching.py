"""Result records: look up, lock and store cached results by key, in PostgreSQL.

Every run of a task with ``cache_policy`` or ``cache_key_fn`` computes a key when it starts.
With the key locked (an advisory lock, so runs with the same key in other threads, processes
or hosts wait for each other), a live record ends the run CACHED with the recorded result;
otherwise the function runs and its result is stored under the key. So two ``.delay()`` runs
with the same key call the function once, whichever workers take them.

Keys from a cache policy are prefixed with the task key (two tasks never share results by
accident); a ``cache_key_fn`` key is used as given, so tasks can share one on purpose.

The statements run through a ``Execute`` callable: Django's connection for inline and
submitted runs (inside a transaction the lock is held until it ends, so the record it guards
is committed before anyone else looks), a worker's own queue connection for background runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections
from psycopg.types.json import Json

from . import sql
from .cache_policies import CacheKeyError
from .conf import task_settings
from .serializers import loads, rebind
from .storable import shown

if TYPE_CHECKING:
    import uuid

    from .context import TaskRunContext
    from .tasks import Task

__all__ = [
    "CachedResult",
    "Execute",
    "cache_key",
    "cache_lock",
    "django_execute",
    "lookup",
    "store",
]

logger = logging.getLogger("django_tasks.caching")

#: Runs one statement and returns its rows.
Execute = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class CachedResult:
    payload: bytes
    preview: Any
    run_id: uuid.UUID | None
    #: The task whose run computed it: the payload is signed for that task's results.
    task_key: str = ""

    def load(self, task: Task[Any, Any]) -> tuple[Any, bytes]:
        """The cached value, and its payload signed for ``task``'s runs (a cache key may be
        shared by several tasks). Raises :class:`~.serializers.PayloadError` if it does not
        verify."""
        value = loads(self.payload, task_key=self.task_key, field="result")
        payload = rebind(self.payload, field="result", from_task=self.task_key, to_task=task.key)
        return value, payload


def cache_key(task: Task[Any, Any], context: TaskRunContext) -> str | None:
    """The run's key, or ``None`` when the task does not cache (or the policy says not to).

    An input the policy cannot hash raises :class:`CacheKeyError`; a ``cache_key_fn`` that
    raises is logged and the run goes uncached (like a hook, it must not break the run)."""
    options = task.options
    parameters = dict(context.parameters)
    if options.cache_key_fn is not None:
        try:
            key = options.cache_key_fn(context, parameters)
        except Exception:
            logger.exception("cache_key_fn of %s raised; run %s is not cached", task, context.id)
            return None
        if key is not None and not isinstance(key, str):
            raise CacheKeyError(
                f"cache_key_fn of {shown(task.name)} returned {shown(key)}, not a str."
            )
        return key[:200] if key else None
    if options.cache_policy is None:
        return None
    key = options.cache_policy.compute_key(context, parameters)
    return f"{task.key}:{key}" if key is not None else None


def django_execute(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Execute on Django's connection (the caller's transaction, if any)."""
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall()) if cursor.description else []


@contextlib.contextmanager
def cache_lock(key: str | None, execute: Execute = django_execute) -> Iterator[None]:
    """Hold the key's advisory lock inside the block (no-op without a key)."""
    if key is None:
        yield
        return
    in_transaction = (
        execute is django_execute and connections[task_settings().DATABASE_ALIAS].in_atomic_block
    )
    if in_transaction:
        execute(sql.CACHE_LOCK_XACT, {"key": key})  # released at commit or rollback
        yield
        return
    execute(sql.CACHE_LOCK, {"key": key})
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a lost connection has released it already
            execute(sql.CACHE_UNLOCK, {"key": key})


def lookup(key: str, execute: Execute = django_execute) -> CachedResult | None:
    rows = execute(sql.CACHE_LOOKUP, {"key": key})
    if not rows:
        return None
    payload, preview, run_id, task_key = rows[0]
    # As text: Django's connection leaves JSON undecoded, a worker's connection decodes it.
    shown = json.loads(preview) if preview else None
    return CachedResult(bytes(payload), shown, run_id, task_key)


def store(
    key: str,
    task: Task[Any, Any],
    run_id: uuid.UUID | None,
    payload: bytes,
    preview: Any,
    execute: Execute = django_execute,
) -> None:
    expiration = task.options.cache_expiration
    execute(
        sql.CACHE_STORE,
        {
            "key": key,
            "task_key": task.key,
            "task_name": task.name,
            "run_id": run_id,
            "result": payload,
            "preview": Json(preview),
            "expiration": expiration.total_seconds() if expiration is not None else None,
        },
    )


def cached_message(hit: CachedResult) -> str:
    source = f" of run {hit.run_id}" if hit.run_id else ""
    return f"Cached result{source}."


def check_expiration(value: Any) -> timedelta | None:
    """``cache_expiration``: ``None`` or a positive :class:`~datetime.timedelta`."""
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise TypeError(f"cache_expiration must be a timedelta, got {shown(value)}.")
    if value <= timedelta(0):
        raise ValueError(f"cache_expiration must be positive, got {value}.")
    return value
