"""Runs orchestrated in the caller's process: inline calls and ``.submit()``.

:func:`execute` is the one place their lifecycle is decided: wait for upstream runs, call the
function in its run context, retry as the task's options allow (AwaitingRetry -> Pending ->
Retrying), end COMPLETED or FAILED, call the hooks. Its steps (:func:`start_attempt`,
:func:`settle`, :func:`finish`, ...) are also those of async runs driven on an event loop
(:mod:`.async_runs`), which await where this blocks. Each change goes into a
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
from .aio import Ended, call_on_loop
from .cache_policies import CacheKeyError
from .caching import CachedResult, cache_key, cache_lock, cached_message, lookup, store
from .conf import task_settings
from .context import TaskRunContext, run_context
from .dependencies import Upstream, check_upstreams, collect_upstreams, resolve
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

__all__ = ["call_result", "execute", "new_record", "run_inline"]

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
    return call_result(execute(task, run, args, kwargs, wait_for), return_state)


def call_result(state: State, return_state: bool) -> Any:
    """What a task call gives: its value, or its error raised (or, with ``return_state``,
    the final state itself)."""
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
        try:
            args, kwargs, arguments = take_upstreams(task, run, args, kwargs, upstreams)
        except Exception as exc:  # an upstream failed, or its result cannot be read
            return finish(task, run, None, failed_state(exc))
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


def take_upstreams(
    task: Task[Any, Any],
    run: RunRecord,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    upstreams: list[Upstream],
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """Wait for the upstream runs (their edges recorded) and return the arguments with their
    results, and the arguments by name. Raises if one did not complete (or its result
    cannot be read)."""
    run.update(edges=[(u.future.id, u.kind, u.allow_failure) for u in upstreams])
    check_upstreams(upstreams)
    args, kwargs = resolve(args), resolve(kwargs)
    arguments = task.arguments(args, kwargs)
    run.update(parameters_preview=preview(arguments))
    return args, kwargs, arguments


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
        return finish(task, run, None, failed_state(exc))
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
        context = start_attempt(task, run, arguments, publish)
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
            settled = settle_failure(task, run, context, exc, publish)
            if isinstance(settled, State):
                return settled
            time.sleep(settled)
            ready_again(run)
            continue
        return settle_value(task, run, context, value, returned, payload)


def start_attempt(
    task: Task[Any, Any], run: RunRecord, arguments: dict[str, Any], publish: Publish | None
) -> TaskRunContext:
    """Record the next attempt RUNNING (Retrying after the first); its run context."""
    attempt = run.attempts + 1
    context = TaskRunContext(task, run.id, run.name, attempt, arguments, run.origin)
    name = StateName.RUNNING if attempt == 1 else StateName.RETRYING
    run.move(StateType.RUNNING, name, attempts=attempt, started=NOW)
    if publish:
        publish(run, _state(run))
    send(run_started, task, run_id=run.id, attempt=attempt)
    return context


def settle(
    task: Task[Any, Any],
    run: RunRecord,
    context: TaskRunContext,
    ended: Ended,
    publish: Publish | None,
) -> State | float:
    """An attempt whose function ended as ``ended`` (an async run's coroutine): its final
    state (recorded, hooks called, ``on_commit`` hooks of a completed run), or the delay
    before its retry (AwaitingRetry recorded)."""
    if ended.error is not None:
        return settle_failure(task, run, context, ended.error, publish)
    try:
        value, returned = returned_value(ended.value)
        payload = _store(task, run, value, None)
    except BaseException as exc:
        return settle_failure(task, run, context, exc, publish)
    state = settle_value(task, run, context, value, returned, payload)
    commit_alone(task)
    return state


def settle_failure(
    task: Task[Any, Any],
    run: RunRecord,
    context: TaskRunContext,
    exc: BaseException,
    publish: Publish | None,
) -> State | float:
    """An attempt that raised ``exc`` (or returned a final state other than COMPLETED): the
    delay before its retry (AwaitingRetry recorded), or its final state (recorded, hooks
    called)."""
    failed = exc.state if isinstance(exc, _ReturnedState) else failed_state(exc)
    delay = _retry(task, run, context, failed, publish)
    if delay is not None:
        return delay
    if not isinstance(exc, _ReturnedState):
        run.update(traceback=format_traceback(exc))
    return finish(task, run, context, failed)


def settle_value(
    task: Task[Any, Any],
    run: RunRecord,
    context: TaskRunContext,
    value: Any,
    returned: State | None,
    payload: bytes | None,
) -> State:
    """An attempt that returned ``value``: COMPLETED with it, recorded, hooks called."""
    run.update(result=payload, result_preview=preview(value))
    return finish(task, run, context, _done(value, returned))


def ready_again(run: RunRecord) -> None:
    """The retry's delay has passed: PENDING until its attempt starts."""
    run.move(StateType.PENDING, StateName.PENDING)


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
    return returned_value(value)


def returned_value(value: Any) -> tuple[Any, State | None]:
    """What a function returned: the value - the data of a ``Completed(...)`` it returned,
    with that state. Another final state it returned is raised (:class:`_ReturnedState`)."""
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
    return finish(task, run, context, state)


def failed_state(exc: BaseException) -> State:
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
) -> float | None:
    """If this failure is to be retried: AwaitingRetry recorded, and the delay before the
    retry (the caller waits, then :func:`ready_again`); ``None`` otherwise."""
    retries = task.options.retries
    if failed.type != StateType.FAILED or not isinstance(failed.exception, Exception):
        return None  # crashed (KeyboardInterrupt, SystemExit) or cancelled: never retried
    if context.attempt > retries:
        return None
    if not retry_allowed(task, context, failed):
        return None
    delay = delay_for(task.options.retry_delays, context.attempt, task.options.retry_jitter_factor)
    message = f"{failed.message} (attempt {context.attempt} of {retries + 1}; retrying)"
    run.move(StateType.SCHEDULED, StateName.AWAITING_RETRY, message)
    if publish:
        publish(run, _state(run))
    send(run_retried, task, run_id=run.id, attempt=context.attempt, delay=delay)
    return delay


def finish(
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
