"""``async def`` tasks: on which event loop their coroutines run.

A task function may be ``async def``. Everything around the function - states, retries,
caching, hooks, the recorder, the worker's statements - is the same synchronous code as for
any task, run in a thread; only the coroutine goes to an event loop, and that thread waits
for it without holding the loop, so one loop runs many runs at once:

- ``await my_task(x)`` (inline): the caller's loop;
- ``.submit()``/``.map()``: the submitting code's loop when it is async, otherwise one
  background loop per process (a daemon thread);
- a worker: its async lane's loop (:mod:`.worker.async_lane`).

Why threads around the coroutine rather than an async copy of the run machinery: the
machinery is synchronous Django code (the ORM, ``transaction.atomic``, signals, user hooks)
that Django forbids on an event loop's thread, and one implementation of every state change
cannot drift from the other. A thread waiting on a future costs memory, not CPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["RunTimeout", "background_loop", "call_on_loop", "is_async", "loop_for_calls"]

#: The loop that coroutines of runs started from this context go to (``None``: the
#: background loop).
_target: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "django_tasks_loop", default=None
)

_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` function (its call returns a coroutine)."""
    return inspect.iscoroutinefunction(fn)


class loop_for_calls:
    """Inside the block, coroutines of runs go to ``loop`` (``None``: the background loop)."""

    __slots__ = ("_loop", "_token")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def __enter__(self) -> None:
        self._token = _target.set(self._loop)

    def __exit__(self, *exc: object) -> None:
        _target.reset(self._token)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def background_loop() -> asyncio.AbstractEventLoop:
    """This process's background loop, started on first use in a daemon thread (a forked
    child starts its own: a thread does not survive a fork)."""
    global _background
    with _background_lock:
        loop = _background
        if loop is None or loop.is_closed() or not getattr(loop, "_django_tasks_alive", False):
            loop = _background = start_loop("django_tasks-loop")
        return loop


def start_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop running forever in a daemon thread named ``name``."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop._django_tasks_alive = True  # type: ignore[attr-defined]
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            loop._django_tasks_alive = False  # type: ignore[attr-defined]

    threading.Thread(target=run, name=name, daemon=True).start()
    started.wait()
    return loop


def stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Stop a loop made by :func:`start_loop` (its thread ends)."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


class RunTimeout(TimeoutError):
    """An async run went on past its ``timeout_seconds``: its asyncio task was cancelled."""


async def _guarded(coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
    if timeout is None:
        return await coro
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            return await coro
    except TimeoutError:
        if limit.expired():  # ours, not a TimeoutError of the task's own code
            raise RunTimeout(f"Timed out after {timeout} s (timeout_seconds).") from None
        raise


def call_on_loop(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    timeout: float | None = None,
    started: Callable[[asyncio.Task[Any]], None] | None = None,
) -> Any:
    """Call the ``async def`` function ``fn`` and wait in this thread for its coroutine, run
    on ``loop`` (default: this context's, see :class:`loop_for_calls`, else the background
    loop) in a copy of this thread's context - so the run context, the run logger and the
    caller's transaction marker are the coroutine's too.

    ``timeout`` cancels it after that many seconds (:class:`TimeoutError` here);
    ``started(task)`` gets its asyncio task (to cancel it: :class:`asyncio.CancelledError`
    here). Returns the value or raises what the coroutine raised."""
    target = loop or _target.get() or background_loop()
    if running_loop() is target:
        raise RuntimeError(
            "An async task's coroutine cannot be waited for on the thread of its own event "
            "loop: await the task (or its future's aresult()) instead of calling it from "
            "synchronous code running on the loop."
        )
    context = contextvars.copy_context()
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def start() -> None:
        try:
            coro = fn(*args, **kwargs)
            task = target.create_task(_guarded(coro, timeout), context=context)
        except BaseException as exc:  # the call itself failed (before any await)
            done.set_exception(exc)
            return
        if started is not None:
            started(task)
        task.add_done_callback(lambda t: _settle(t, done))

    target.call_soon_threadsafe(start)
    return done.result()


def _settle(task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        done.set_exception(asyncio.CancelledError("The run's asyncio task was cancelled."))
        return
    error = task.exception()
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())
