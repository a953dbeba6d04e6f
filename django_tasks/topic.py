"""The PostgreSQL topic: putting runs in (enqueue).

Enqueue uses Django's connection so that it joins the caller's transaction. (Workers use a
connection of their own: :func:`.connect.open_worker_connection`; ``cancel`` lives in
:mod:`.cancelling`. Both are importable from here too.)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import uuid
from base64 import b64encode
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from django.db import connections, transaction
from psycopg.types.json import Json

from . import sql
from .cancelling import cancel
from .conf import task_settings
from .connect import open_worker_connection
from .dependencies import Upstream, collect_upstreams, resolve
from .futures import LocalFuture, TaskRunFuture
from .ids import uuid7
from .migrated import explain_missing_schema
from .poolers import (
    PREPARED_STATEMENT_ERRORS,
    PreparedStatementsUnsupported,
    lost,
    preparing,
    stop_preparing,
)
from .serializers import dumps, preview
from .signals import run_enqueued, send
from .states import StateName, StateType, is_final
from .unique import run_unique_key

if TYPE_CHECKING:
    from .tasks import Task

__all__ = [
    "RunDocument",
    "cancel",
    "check_importable",
    "enqueue",
    "enqueue_many",
    "open_worker_connection",
]


def check_importable(task: Task[Any, Any]) -> None:
    """Refuse a task a worker could never find: defined in ``__main__`` or inside a function."""
    fn = task.fn
    if fn.__module__ == "__main__" or "<locals>" in fn.__qualname__:
        raise ValueError(
            f"Task {task.name!r} ({fn.__module__}.{fn.__qualname__}) cannot run in the "
            f"background: workers find tasks by importing installed apps' tasks.py modules, so "
            f"define it at module level in one of them (or in a module that one imports)."
        )


def _run_columns(
    task: Task[Any, Any], queue: str, priority: int, scheduled_time: datetime | None
) -> dict[str, Any]:
    """The columns every run of ``task`` shares, for ENQUEUE and ENQUEUE_MANY alike."""
    return {
        "task_key": task.key,
        "task_name": task.name,
        "queue": queue,
        "priority": priority,
        "tags": Json(list(task.tags)),
        "scheduled_time": scheduled_time,
        "retries": task.options.retries,
        "retry_delays": Json(list(task.options.retry_delays)),
        "retry_jitter": task.options.retry_jitter_factor,
        "timeout": task.options.timeout_seconds,
    }


def enqueue(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    queue: str,
    priority: int,
    scheduled_time: datetime | None,
    wait_for: Iterable[Any] = (),
    extra: dict[str, Any] | None = None,
    unique_key: str | None = None,
) -> TaskRunFuture[Any]:
    """Insert one SCHEDULED run (and its history row, and a NOTIFY) in one round trip.

    ``extra`` adds members to the run's document: ``django_task`` and ``created`` for the
    ``django.tasks`` backend (migration 0014); not with upstream runs. A unique key - given, or
    made by the task's ``unique`` option (:mod:`.unique`) - held by a live run (or by one that
    finished within ``unique_for``) returns that run's future and writes nothing.

    Serialization happens first, so a value that cannot be pickled or is too large raises
    before anything is sent to the database. Background futures among the arguments or in
    ``wait_for`` make the run wait for those runs (:func:`_enqueue_dependent`); submitted
    (in-process) futures are waited for here and passed as their results.
    """
    check_importable(task)
    upstreams = collect_upstreams(args, kwargs, wait_for)
    if any(isinstance(u.future, LocalFuture) for u in upstreams):
        args, kwargs = resolve(args, LocalFuture), resolve(kwargs, LocalFuture)
        waits = [w for w in wait_for if not isinstance(w, LocalFuture) or w.wait() is None]
        upstreams = collect_upstreams(args, kwargs, waits)
    run = RunDocument.build(task, args, kwargs, queue, priority, scheduled_time)
    key = run_unique_key(task, run.arguments, unique_key)
    if upstreams:
        if extra or key is not None:
            raise ValueError(
                "A run with upstream runs takes no unique key (nor extra document members): "
                "enqueue it without futures among its arguments or in wait_for."
            )
        params = {
            **_run_columns(task, queue, priority, scheduled_time),
            "id": run.id,
            "name": run.name,
            "parameters": run.payload,
            "parameters_preview": Json(run.preview),
        }
        _enqueue_dependent(params, upstreams)
        send(run_enqueued, task, run_id=run.id)
        return TaskRunFuture(run.id)
    if key is not None:
        extra = {**(extra or {}), "unique_key": key, "unique_for": task.options.unique_for}
    run_id = _execute_prepared(sql.ENQUEUE, {"run": run.document(extra), "parameters": run.payload})
    if run_id == run.id:  # else a unique key found its run: nothing was written
        send(run_enqueued, task, run_id=run_id)
    return TaskRunFuture(run_id)


@dataclasses.dataclass(frozen=True)
class RunDocument:
    """A new run of a task, checked and serialized, as ``django_tasks_enqueue()`` takes it: its
    JSON document and its signed parameters. Built before anything is sent, so a bad argument
    raises at the call and writes nothing."""

    task: Task[Any, Any]
    id: uuid.UUID
    name: str
    arguments: dict[str, Any]
    payload: bytes
    preview: dict[str, Any]
    queue: str
    priority: int
    scheduled_time: datetime | None

    @classmethod
    def build(
        cls,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        queue: str,
        priority: int,
        scheduled_time: datetime | None,
    ) -> RunDocument:
        arguments = task.arguments(args, kwargs)
        run_id = uuid7()
        return cls(
            task=task,
            id=run_id,
            name=task.run_name(arguments, run_id, "delay"),
            arguments=arguments,
            payload=dumps((args, kwargs), what="parameters", task_key=task.key),
            preview=preview(arguments),
            queue=queue,
            priority=priority,
            scheduled_time=scheduled_time,
        )

    def document(self, extra: dict[str, Any] | None = None) -> str:
        """The JSON document (the task's own members encoded once per task)."""
        when = self.scheduled_time
        run = {
            "id": str(self.id),
            "name": self.name,
            "queue": self.queue,
            "priority": self.priority,
            "scheduled_time": when.isoformat() if when is not None else None,
            "preview": self.preview,
            **(extra or {}),
        }
        return f"{json.dumps(run)[:-1]}, {_task_members(self.task)}}}"


def _enqueue_dependent(params: dict[str, Any], upstreams: list[Upstream]) -> None:
    """Enqueue a run that waits for background upstream runs (see ``sql.ENQUEUE_DEPENDENT``).

    In a savepoint of the caller's transaction: an unknown upstream id raises
    :class:`ValueError` and leaves nothing behind."""
    alias = task_settings().DATABASE_ALIAS
    ids = [u.future.id for u in upstreams]
    with (
        explain_missing_schema(alias),
        transaction.atomic(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute(sql.LOCK_UPSTREAMS, {"ids": ids})
        found = {row[0]: row[1:] for row in cursor.fetchall()}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise ValueError(f"Unknown upstream run(s) {', '.join(missing)}: nothing enqueued.")
        failure, blocked = None, 0
        for upstream in upstreams:
            state_type, state_name, message, task_name = found[upstream.future.id]
            if state_type == StateType.COMPLETED or (
                is_final(state_type) and upstream.allow_failure
            ):
                continue
            if is_final(state_type):
                failure = (
                    f"Upstream run {upstream.future.id} ({task_name}) ended {state_name}"
                    f"{': ' + message if message else ''}; this run did not start."
                )
                break
            blocked += 1
        cursor.execute(
            sql.ENQUEUE_DEPENDENT,
            {
                **params,
                "failure": failure,
                "blocked": blocked,
                "upstreams": ids,
                "kinds": [u.kind for u in upstreams],
                "allow_failures": [u.allow_failure for u in upstreams],
            },
        )


@functools.cache
def _task_members(task: Task[Any, Any]) -> str:
    """The members of a run's JSON document that come from its task alone, encoded once per
    task: each ``.delay()`` encodes only its own values (measured: a tenth of its Python)."""
    members = {
        "task_key": task.key,
        "task_name": task.name,
        "tags": list(task.tags),
        "retries": task.options.retries,
        "retry_delays": list(task.options.retry_delays),
        "retry_jitter": task.options.retry_jitter_factor,
        "timeout": task.options.timeout_seconds,
    }
    return json.dumps(members)[1:-1]


def _execute_prepared(query: str, params: dict[str, Any]) -> Any:
    """Run ``query`` on Django's connection (so in the caller's transaction) with its
    parameters bound on the server, as a prepared statement when ``PREPARE_STATEMENTS``.

    Django's own cursor quotes every parameter into the SQL text on the client and, by
    default, turns psycopg's statement preparing off for the whole connection (for poolers).
    Measured with benchmarks/run.py (a): binding on the server made an enqueue about a tenth
    faster, preparing another tenth. Only this statement is prepared: the connection's
    ``prepare_threshold`` is lifted for the call and put back, so Django's queries stay as
    Django configures them.
    """
    wrapper = connections[task_settings().DATABASE_ALIAS]
    wrapper.validate_no_broken_transaction()  # as Django's own cursor does
    wrapper.ensure_connection()
    conn = wrapper.connection
    prepare = preparing()
    threshold = conn.prepare_threshold
    if prepare and threshold is None:
        conn.prepare_threshold = 0  # None would make psycopg ignore prepare=True
    try:
        with explain_missing_schema(wrapper.alias), wrapper.wrap_database_errors:
            try:
                with psycopg.Cursor(conn) as cursor:
                    cursor.execute(query, params, prepare=prepare)
                    row = cursor.fetchone()
            except PREPARED_STATEMENT_ERRORS as exc:
                if not prepare or not lost(exc):
                    raise
                advice = stop_preparing(exc)  # a pooler (django_tasks.poolers)
                if wrapper.in_atomic_block:  # the caller's transaction is aborted
                    raise PreparedStatementsUnsupported(advice) from exc
                with psycopg.Cursor(conn) as cursor:  # autocommit: nothing was written
                    cursor.execute(query, params, prepare=False)
                    row = cursor.fetchone()
    finally:
        conn.prepare_threshold = threshold
    return row[0] if row else None


#: Runs per statement of a bulk enqueue. A larger batch is sent as several statements,
#: pipelined in one transaction (a savepoint inside the caller's), so that PostgreSQL inserts
#: one chunk while Python checks and serializes the next instead of waiting for the whole
#: batch: with 20,000 runs the server's part (about 10 us a run) all but disappears from the
#: caller's time (benchmarks/bulk.py: 36,000 -> 80,000 runs/s on a 2-core machine). A batch of
#: one chunk is one statement, as before: no transaction of its own.
BULK_CHUNK = 1000
#: ... and at most about this many bytes of parameters: a chunk travels as one jsonb value,
#: which PostgreSQL caps at 256 MB (1,000 runs of 300 KB each would not fit).
BULK_CHUNK_BYTES = 64 * 1024 * 1024


def enqueue_many(
    task: Task[Any, Any],
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
    *,
    queue: str,
    priority: int,
    scheduled_time: datetime | None,
) -> list[TaskRunFuture[Any]]:
    """Insert many SCHEDULED runs: one statement (and one NOTIFY) per chunk of
    :data:`BULK_CHUNK` runs.

    One bad item writes nothing at all: a batch of one chunk is checked and serialized before
    anything is sent; the chunks of a larger one are written in one transaction (a savepoint
    when the caller has one open), rolled back when a later item fails, so the caller's own
    transaction goes on as if the call had not been made. The chunks of a larger batch are
    sent on psycopg's connection, beside Django's cursor: its ``execute_wrapper()`` hooks
    and query capture see the transaction's BEGIN/SAVEPOINT and COMMIT, not the statements.
    """
    check_importable(task)
    if task.options.unique is not False:
        raise TypeError(
            f"Task {task.name!r} is unique: enqueue its runs with .delay(), which returns the "
            f"live run of a key instead of adding one (delay_many() adds every run)."
        )
    params = {
        **_run_columns(task, queue, priority, scheduled_time),
        "state_name": StateName.SCHEDULED,
    }
    ids: list[uuid.UUID] = []
    chunks = _chunks(task, calls, ids, queue, priority, scheduled_time)
    alias = task_settings().DATABASE_ALIAS
    first = next(chunks, None)
    if first is None:
        return []
    second = next(chunks, None)
    if second is None:  # the whole batch, built before anything is sent: one statement
        with explain_missing_schema(alias), connections[alias].cursor() as cursor:
            cursor.execute(sql.ENQUEUE_MANY, {**params, "items": first})
    else:
        _send_pipelined(alias, params, itertools.chain((first, second), chunks))
    for run_id in ids:
        send(run_enqueued, task, run_id=run_id)
    return [TaskRunFuture(run_id) for run_id in ids]


def _chunks(
    task: Task[Any, Any],
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
    ids: list[uuid.UUID],
    queue: str,
    priority: int,
    scheduled_time: datetime | None,
) -> Iterator[str]:
    """The runs of ``calls`` as ENQUEUE_MANY's JSON arrays of ``[id, name, base64
    parameters, preview]``, :data:`BULK_CHUNK` at a time (fewer when they would pass
    :data:`BULK_CHUNK_BYTES`); their ids are added to ``ids``."""
    items: list[list[Any]] = []
    size = 0
    for args, kwargs in calls:
        if collect_upstreams(args, kwargs):
            raise TypeError("delay_many() does not take futures: use .delay() (or wait_for).")
        run = RunDocument.build(task, args, kwargs, queue, priority, scheduled_time)
        ids.append(run.id)
        payload = b64encode(run.payload).decode()
        items.append([str(run.id), run.name, payload, run.preview])
        size += len(payload)
        if len(items) == BULK_CHUNK or size > BULK_CHUNK_BYTES:
            yield json.dumps(items)
            items, size = [], 0
    if items:
        yield json.dumps(items)


def _send_pipelined(alias: str, params: dict[str, Any], chunks: Iterator[str]) -> None:
    """Send each chunk as it is built, without waiting for the one before (psycopg's
    pipeline mode), in one transaction: all the runs are written, or none."""
    wrapper = connections[alias]
    # Django's cursor refuses to run in a transaction it has marked for rollback; so do we
    # (a savepoint is not taken then, and the runs would vanish with the caller's rollback).
    wrapper.validate_no_broken_transaction()
    with explain_missing_schema(alias), transaction.atomic(using=alias):
        conn = wrapper.connection
        # Pipeline mode needs libpq 14 (psycopg's binary package has it); else one by one.
        pipeline = conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()
        with wrapper.wrap_database_errors, psycopg.Cursor(conn) as cursor, pipeline:
            for items in chunks:
                cursor.execute(sql.ENQUEUE_MANY, {**params, "items": items})
