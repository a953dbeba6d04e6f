"""Runs of ``async def`` tasks driven on an event loop: ``await my_task(x)``, and
``.submit()``/``.map()`` from async code (on the caller's loop) or sync code (on the
process's background loop, :func:`~.aio.background_loop`).

An :class:`AsyncRun` takes a run through the steps of :func:`.runs.execute` - the same
functions, so both ways record the same states - but it holds no thread while it waits: the
waits for upstream runs, the coroutine itself (:func:`~.aio.run_contained`) and the delays
between retries are awaited on the loop, and only the synchronous steps (recording, signals,
hooks, retry conditions, reading upstream results) go to a few threads, each as one short
call (:func:`offload`: Django forbids its synchronous code on an event loop's thread). So
a thousand runs that await I/O on one loop take about the time of one.

Two kinds of run need a thread for their whole length and go the thread way
(:func:`needs_thread`): a caching task's (its key's advisory lock is held on a thread's
database connection while the function runs) and a run inside the caller's
``django_tasks.transaction()`` (which lives on the caller thread's connection).

Cancelling the asyncio task that awaits a run (the caller's ``await`` cancelled, its loop
shutting down) cancels the coroutine, as a cancel request does in a worker: the run ends
CANCELLED, and the cancel goes on to the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import close_old_connections
from django.utils import timezone

from .aio import Ended, background_loop, loop_for_calls, run_contained, running_loop
from .context import TaskRunContext, run_context
from .dependencies import Upstream, collect_upstreams
from .futures import State
from .recorder import RunRecord
from .runs import (
    Publish,
    call_result,
    failed_state,
    finish,
    new_record,
    ready_again,
    settle,
    start_attempt,
    take_upstreams,
)
from .runs import run_inline as run_in_thread
from .states import StateName, StateType
from .transactions import current_transaction

if TYPE_CHECKING:
    from .runners import SubmittedFuture
    from .tasks import Task

__all__ = ["AsyncRun", "needs_thread", "offload", "run_inline", "submit"]

T = TypeVar("T")


def needs_thread(task: Task[Any, Any]) -> bool:
    """Whether a run of the async ``task`` called here must hold a thread while its coroutine
    runs (see the module docstring): the thread way of :mod:`.runs` then."""
    return task.options.caches or current_transaction() is not None


class AsyncRun:
    """One run of an async task on its way to a final state, driven on the running loop."""

    def __init__(
        self,
        task: Task[Any, Any],
        run: RunRecord,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] = (),
        publish: Publish | None = None,
    ) -> None:
        self.task, self.run, self.publish = task, run, publish
        self.args, self.kwargs, self.wait_for = args, kwargs, wait_for
        self.arguments = run.arguments
        #: Set by the steps (in their threads), so that a cancel between two of them knows
        #: how far the run got: the attempt's context, then the recorded final state.
        self.context: TaskRunContext | None = None
        self.state: State | None = None

    async def execute(self) -> State:
        """Run it to its final state and return that state (value or exception in it). If the
        awaiting task is cancelled meanwhile, the run ends CANCELLED (unless its coroutine
        ended otherwise while being cancelled) and the cancel is raised here."""
        me = asyncio.current_task()
        cancels = me.cancelling() if me is not None else 0
        try:
            await self._attempts()
        except asyncio.CancelledError:
            if self.state is None:
                await offload(self._finish, _cancelled())
            raise
        assert self.state is not None
        if me is not None and me.cancelling() > cancels:  # the coroutine ended all the same
            raise asyncio.CancelledError
        return self.state

    async def _attempts(self) -> None:
        task, run = self.task, self.run
        upstreams = collect_upstreams(self.args, self.kwargs, self.wait_for)
        if upstreams and not await self._take_upstreams(upstreams):
            return
        me = asyncio.current_task()
        cancels = me.cancelling() if me is not None else 0
        while True:
            await offload(self._start_attempt)
            assert self.context is not None
            with run_context(self.context):
                ended = await run_contained(
                    task.fn, self.args, self.kwargs, task.options.timeout_seconds
                )
            if me is not None and me.cancelling() > cancels and _by_the_cancel(ended):
                await offload(self._finish, _cancelled())
                return
            delay = await offload(self._settle, ended)
            if delay is None:
                return
            await asyncio.sleep(delay)
            ready_again(run)

    async def _take_upstreams(self, upstreams: list[Upstream]) -> bool:
        """Wait on the loop for the upstream runs to be final, then take their results (a
        thread: reading a background run's result is a query). ``False``: one of them did
        not complete, and this run has ended FAILED without starting."""
        for upstream in upstreams:
            await upstream.future.await_final()
        try:
            taken = await offload(
                take_upstreams, self.task, self.run, self.args, self.kwargs, upstreams
            )
        except Exception as exc:  # an upstream failed, or its result cannot be read
            await offload(self._finish, failed_state(exc))
            return False
        self.args, self.kwargs, self.arguments = taken
        return True

    # -- the steps, in a thread each --------------------------------------------------------

    def _start_attempt(self) -> None:
        self.context = start_attempt(self.task, self.run, self.arguments, self.publish)

    def _settle(self, ended: Ended) -> float | None:
        """The attempt's end recorded: ``None`` when the run is final, else the delay before
        its retry."""
        assert self.context is not None
        settled = settle(self.task, self.run, self.context, ended, self.publish)
        if isinstance(settled, State):
            self.state = settled
            return None
        return settled

    def _finish(self, state: State) -> None:
        self.state = finish(self.task, self.run, self.context, state)


def _by_the_cancel(ended: Ended) -> bool:
    """The coroutine ended by the cancel of the task awaiting it (or was left behind)."""
    return isinstance(ended.error, asyncio.CancelledError)


def _cancelled() -> State:
    message = "Cancelled while running: the asyncio task awaiting the run was cancelled."
    error = asyncio.CancelledError(message)
    return State(StateType.CANCELLED, StateName.CANCELLED, message, timezone.now(), exception=error)


# -- await my_task(...) and .submit() -------------------------------------------------------


async def run_inline(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[Any],
    return_state: bool,
) -> Any:
    """``await my_async_task(...)``: the run driven in the caller's own asyncio task."""
    if needs_thread(task):
        with loop_for_calls(asyncio.get_running_loop()):  # asyncio.to_thread copies the context
            return await asyncio.to_thread(
                run_in_thread, task, args, kwargs, wait_for, return_state=return_state
            )
    run = new_record(task, args, kwargs, "call")
    state = await AsyncRun(task, run, args, kwargs, wait_for).execute()
    return call_result(state, return_state)


def submit(
    task: Task[Any, Any],
    run: RunRecord,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[Any],
    future: SubmittedFuture[Any],
) -> None:
    """Start a submitted run as an asyncio task of the caller's loop (of the background loop
    from sync code); ``future`` gets its final state."""
    driver = AsyncRun(task, run, args, kwargs, wait_for, publish=future._publish)
    loop = running_loop()
    if loop is not None:
        future._loop = loop
        loop.create_task(_submitted(driver, future))
    else:
        future._loop = background_loop()
        asyncio.run_coroutine_threadsafe(_submitted(driver, future), future._loop)


#: The asyncio tasks of submitted runs (a loop keeps only weak references to its tasks).
_driving: set[asyncio.Task[None]] = set()


async def _submitted(driver: AsyncRun, future: SubmittedFuture[Any]) -> None:
    me = asyncio.current_task()
    if me is not None:
        _driving.add(me)
        me.add_done_callback(_driving.discard)
    try:
        state = await driver.execute()
    except asyncio.CancelledError:  # the loop is shutting down: the run ended CANCELLED
        if driver.state is None:
            future._inner.set_exception(asyncio.CancelledError("The run's loop went away."))
            return
        state = driver.state
    except BaseException as exc:  # the machinery itself failed: the future says CRASHED
        future._inner.set_exception(exc)
        return
    future._ended(driver.run)
    future._inner.set_result(state)


# -- the steps' threads ---------------------------------------------------------------------

_steps: ThreadPoolExecutor | None = None
_steps_lock = threading.Lock()


def _step_threads() -> ThreadPoolExecutor:
    global _steps
    with _steps_lock:
        if _steps is None:
            _steps = ThreadPoolExecutor(thread_name_prefix="django_tasks-steps")
        return _steps


def _forget_step_threads() -> None:
    """A forked child has none of its parent's threads: it starts its own."""
    global _steps
    _steps = None


os.register_at_fork(after_in_child=_forget_step_threads)


def _step(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    finally:
        # Connections a hook (or the recorder's sync mode) opened here: closed as at the end
        # of a request (CONN_MAX_AGE), as a runner thread does after each run.
        close_old_connections()


async def offload(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a step thread, in a copy of this context. A cancel of the awaiting
    task waits for the step to end - a step is never left half done - and is raised then."""
    context = contextvars.copy_context()
    future = asyncio.wrap_future(_step_threads().submit(context.run, _step, fn, *args))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
