"""Runs orchestrated in the caller's process: inline calls and ``.submit()``.

:func:`execute` is the one place their lifecycle is decided: wait for upstream runs, call the
function in its run context, retry as the task's options allow (AwaitingRetry -> Pending ->
Retrying), end COMPLETED or FAILED, call the hooks. Each change goes into a
:class:`~django_tasks.recorder.RunRecord`, which the recorder writes in batches (or at once in
``sync`` mode). Recording never changes what the function does: the call returns or raises as
the function did even when the record cannot be written.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.db import transaction as db_transaction
from django.utils import timezone

from . import progress
from .aio import call_on_loop
from .cache_policies import CacheKeyError
from .caching import CachedResult, cache_key, cache_lock, cached_message, lookup, store
from .conf import task_settings
from .context import TaskRunContext, run_context
from .dependencies import check_upstreams, collect_upstreams, resolve
from .futures import State
from .hooks import call_hooks, retry_allowed
from .ids import uuid7
from .manual_states import returned_state
from .recorder import NOW, RunRecord, record
from .retries import delay_for
from .serializers import PayloadError, dumps, preview
from .signals import run_finished, run_retried, run_started, send
from .states import StateName, StateType, failure_state
from .storable import describe_exception, format_traceback
from .transactions import TaskTransaction, commit_alone, current_transaction, transaction

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["execute", "new_record", "run_inline"]

logger = logging.getLogger("django_tasks.runs")

#: Called with the record after each change before the final one (submitted runs record
#: and show every change; inline runs are recorded once, at the end).
Publish = Callable[[RunRecord, State], None]


def new_record(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], origin: str
) -> RunRecord:
    """A PENDING run of ``task``; wrong arguments raise here, before anything is recorded."""
    arguments = task.arguments(args, kwargs)
    run_id = uuid7()
    now = timezone.now()
    return RunRecord(
        id=run_id,
        task_key=task.key,
        task_name=task.name,
        name=task.run_name(arguments, run_id, origin),
        origin=origin,
        queue=task.queue,
        priority=task.priority,
        tags=list(task.tags),
        state_type=StateType.PENDING,
        state_name=StateName.PENDING,
        state_message="",
        attempts=0,
        parameters_preview=preview(arguments),
        created=now,
        updated=now,
        states=[(StateType.PENDING, StateName.PENDING, "", now)],
        arguments=arguments,
    )


def run_inline(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[Any] = (),
    return_state: bool = False,
) -> Any:
    """``task(...)``: run now, in this thread; return the value or raise the final error
    (or, with ``return_state``, return the final state)."""
    run = new_record(task, args, kwargs, "call")
    state = execute(task, run, args, kwargs, wait_for)
    if return_state:
        return state
    if state.exception is not None:
        raise state.exception
    return state.data


def execute(
    task: Task[Any, Any],
    run: RunRecord,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[Any] = (),
    publish: Publish | None = None,
) -> State:
    """Run ``run`` to its final state and return that state (value or exception in it)."""
    upstreams = collect_upstreams(args, kwargs, wait_for)
    arguments = run.arguments
    if upstreams:
        run.update(edges=[(u.future.id, u.kind, u.allow_failure) for u in upstreams])
        try:
            check_upstreams(upstreams)
            args, kwargs = resolve(args), resolve(kwargs)
        except Exception as exc:  # an upstream failed, or its result cannot be read
            return _end(task, run, None, _failed(exc))
        arguments = task.arguments(args, kwargs)
        run.update(parameters_preview=preview(arguments))
    txn = current_transaction()
    if txn is None and task.options.atomic:
        with contextlib.suppress(_Failed), transaction() as txn:
            state = _run(task, run, args, kwargs, arguments, publish, txn)
            if state.exception is not None:
                raise _Failed  # the failed run's own savepoint is gone; nothing to commit
        return state
    state = _run(task, run, args, kwargs, arguments, publish, txn)
    if txn is None and state.is_completed() and state.name != StateName.CACHED:
        commit_alone(task)
    return state


class _Failed(Exception):
    """Leaves an atomic run's own transaction after a failure (its record is written)."""


def _run(
    task: Task[Any, Any],
    run: RunRecord,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    arguments: dict[str, Any],
    publish: Publish | None,
    txn: TaskTransaction | None,
) -> State:
    """With the run's cache key locked (if it has one): a cache hit, or the attempts."""
    call_key = txn.call_key(task) if txn is not None and not task.options.caches else None
    if not task.options.caches and call_key is None:
        return _attempts(task, run, args, kwargs, arguments, publish, None, txn)
    context = TaskRunContext(task, run.id, run.name, run.attempts + 1, arguments, run.origin)
    try:
        key = call_key or cache_key(task, context)
    except CacheKeyError as exc:
        return _end(task, run, None, _failed(exc))
    with cache_lock(key):
        if key is not None and not task.options.refresh_cache:
            hit = lookup(key)
            if hit is not None:
                try:
                    value, payload = hit.load(task)
                except PayloadError:
                    logger.warning("Cached result %s does not load; recomputing", key)
                else:
                    return _cached(task, run, context, hit, value, payload)
        return _attempts(task, run, args, kwargs, arguments, publish, key, txn)


def _attempts(
    task: Task[Any, Any],
    run: RunRecord,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    arguments: dict[str, Any],
    publish: Publish | None,
    key: str | None,
    txn: TaskTransaction | None = None,
) -> State:
    """Call the function until it succeeds or retries are spent; store a cached result.

    In a transaction each attempt is a savepoint: a failed attempt's writes are rolled back
    before the retry, and a completed run is recorded when the transaction ends."""
    while True:
        attempt = run.attempts + 1
        context = TaskRunContext(task, run.id, run.name, attempt, arguments, run.origin)
        name = StateName.RUNNING if attempt == 1 else StateName.RETRYING
        run.move(StateType.RUNNING, name, attempts=attempt, started=NOW)
        if publish:
            publish(run, _state(run))
        send(run_started, task, run_id=run.id, attempt=attempt)
        try:
            with run_context(context):
                if txn is not None:
                    with db_transaction.atomic(using=task_settings().DATABASE_ALIAS):
                        value, returned = _call(task, args, kwargs)
                        payload = _store(task, run, value, key)
                    done = _done(value, returned)
                    run.update(result=payload, result_preview=preview(value))
                    txn.stage(task, run, context, done)
                    return done
                value, returned = _call(task, args, kwargs)
                payload = _store(task, run, value, key)
        except BaseException as exc:
            failed = exc.state if isinstance(exc, _ReturnedState) else _failed(exc)
            if _retry(task, run, context, failed, publish):
                continue
            if not isinstance(exc, _ReturnedState):
                run.update(traceback=format_traceback(exc))
            return _end(task, run, context, failed)
        run.update(result=payload, result_preview=preview(value))
        return _end(task, run, context, _done(value, returned))


class _ReturnedState(Exception):
    """The function returned a final state other than COMPLETED: the run ends in it (raised,
    so that an atomic attempt's writes roll back as for an exception)."""

    def __init__(self, state: State) -> None:
        super().__init__(state.message)
        self.state = state


def _call(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, State | None]:
    """The function's value - the data of a ``Completed(...)`` it returned, with that state."""
    if task.is_async:  # its coroutine on the loop of this call (django_tasks.aio)
        value = call_on_loop(task.fn, args, kwargs, timeout=task.options.timeout_seconds)
    else:
        value = task.fn(*args, **kwargs)
    state = returned_state(value)
    if state is None:
        return value, None
    if state.type != StateType.COMPLETED:
        raise _ReturnedState(state)
    return state.data, state


def _store(task: Task[Any, Any], run: RunRecord, value: Any, key: str | None) -> bytes | None:
    """The signed result when the task persists results, stored under ``key`` if it has one.

    A result that cannot be pickled raises :class:`PayloadError`: the run fails."""
    if not task.options.persists and key is None:
        return None
    payload = dumps(value, what="result", task_key=task.key)
    if key is not None:
        try:
            store(key, task, run.id, payload, preview(value))
        except DatabaseError:
            if current_transaction() is not None:
                raise  # the transaction is broken: it must roll back
            logger.warning("Could not store the result of run %s", run.id, exc_info=True)
    return payload


def _done(value: Any, returned: State | None = None) -> State:
    """COMPLETED with ``value``; named and described as a returned ``Completed(...)`` says."""
    name, message = (returned.name, returned.message) if returned else (StateName.COMPLETED, "")
    return State(StateType.COMPLETED, name, message, timezone.now(), data=value)


def _cached(
    task: Task[Any, Any],
    run: RunRecord,
    context: TaskRunContext,
    hit: CachedResult,
    value: Any,
    payload: bytes,
) -> State:
    """A cache hit: COMPLETED (Cached) with the recorded result, the function not called."""
    message = cached_message(hit)
    state = State(StateType.COMPLETED, StateName.CACHED, message, timezone.now(), data=value)
    run.update(result=payload, result_preview=hit.preview)
    return _end(task, run, context, state)


def _failed(exc: BaseException) -> State:
    """FAILED - or CRASHED for an interrupt or exit (:func:`~.states.failure_state`)."""
    state_type, name = failure_state(exc)
    message = describe_exception(exc)
    return State(state_type, name, message, timezone.now(), exception=exc)


def _retry(
    task: Task[Any, Any],
    run: RunRecord,
    context: TaskRunContext,
    failed: State,
    publish: Publish | None,
) -> bool:
    """Wait and record AwaitingRetry -> Pending if this failure is to be retried."""
    retries = task.options.retries
    if failed.type != StateType.FAILED or not isinstance(failed.exception, Exception):
        return False  # crashed (KeyboardInterrupt, SystemExit) or cancelled: never retried
    if context.attempt > retries:
        return False
    if not retry_allowed(task, context, failed):
        return False
    delay = delay_for(task.options.retry_delays, context.attempt, task.options.retry_jitter_factor)
    message = f"{failed.message} (attempt {context.attempt} of {retries + 1}; retrying)"
    run.move(StateType.SCHEDULED, StateName.AWAITING_RETRY, message)
    if publish:
        publish(run, _state(run))
    send(run_retried, task, run_id=run.id, attempt=context.attempt, delay=delay)
    time.sleep(delay)
    run.move(StateType.PENDING, StateName.PENDING)
    return True


def _end(
    task: Task[Any, Any],
    run: RunRecord,
    context: TaskRunContext | None,
    state: State,
) -> State:
    """Record the final state, then call the hooks (a run that never started has none).

    The caller learns the outcome from the returned state, after the hooks ran."""
    last = progress.writer.end(run.id)  # recorded with the run (its row may not exist yet)
    if last is not None:
        run.update(progress=last.as_json())
    run.move(state.type, state.name, state.message, state.timestamp, finished=NOW)
    record(run)
    send(run_finished, task, run_id=run.id, state=state)
    if context is not None:
        call_hooks(task, context, state)
    return state


def _state(run: RunRecord) -> State:
    return State(run.state_type, run.state_name, run.state_message, run.updated)
