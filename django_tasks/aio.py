"""``async def`` tasks: on which event loop their coroutines run, and how a run's coroutine
is kept from hurting that loop.

A task function may be ``async def``. Its coroutine runs on an event loop; what is around it
- states, retries, caching, hooks, the recorder, the worker's statements - is synchronous
Django code, run in threads (Django forbids it on an event loop's thread):

- ``await my_task(x)`` and ``.submit()``/``.map()``: the run is driven on the caller's loop
  (a background loop of the process, a daemon thread, when the caller is sync code), its
  synchronous steps in short calls to a few threads (:mod:`.async_runs`), so one loop runs
  thousands of runs at once and no thread is held while a coroutine awaits;
- a worker: its async lane's loop (:mod:`.worker.async_lane`), each run's steps in a thread
  of the lane that waits for the coroutine (:func:`call_on_loop`).

Why not an async copy of the run machinery: one implementation of every state change cannot
drift from the other; the async driver only awaits where the sync one blocks.

A run's coroutine cannot take its loop down (:func:`run_contained`): ``SystemExit`` and
``KeyboardInterrupt``, which asyncio lets out of a task into the loop, are the run's outcome;
a coroutine that ignores its cancel (timeout, cancel request) is left running on the loop,
detached from its run, after :func:`cancel_grace`; a loop of ours that task code stopped,
or that something else escaped to, is run again, and its default executor, which every run
on it shares, cannot be shut by one of them (:class:`LoopThread`). A process forked on the
thread of a loop of ours never runs that loop on: the child exits as soon as it is back in
our code (:func:`leave_if_forked`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import os
import threading
import types
import weakref
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from .conf import task_settings

__all__ = [
    "Ended",
    "LoopThread",
    "RunTimeout",
    "Steps",
    "background_loop",
    "call_on_loop",
    "cancel_grace",
    "is_async",
    "leave_forked_child",
    "leave_if_forked",
    "loop_for_calls",
    "run_contained",
]

logger = logging.getLogger("django_tasks.aio")

#: The loop that coroutines of runs started from this context go to (``None``: the
#: background loop).
_target: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "django_tasks_loop", default=None
)

#: How often a thread waiting for a coroutine checks that its loop is still there.
LOOP_CHECK = 1.0


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


def leave_forked_child(where: str, extra: dict[str, str] | None = None) -> NoReturn:
    """Task code forked, and its child came back into our code (``where``): it must not go
    on as a second copy of the process - the same connections, journal and event loop (whose
    epoll instance and wake-up pipe it shares with its parent: running it, the child would
    take the parent's wake-ups and run the other runs' coroutines a second time). It exits
    at once, writing nothing; the parent records the run."""
    with contextlib.suppress(Exception):
        logger.warning(
            "%s: a process forked by a run returned into it; it exits (pid %d)",
            where,
            os.getpid(),
            extra=extra,
        )
    os._exit(0)


def leave_if_forked(pid: int, where: str) -> None:
    """:func:`leave_forked_child`, unless this is still process ``pid``."""
    if os.getpid() != pid:
        leave_forked_child(where)


class _SharedLoop(asyncio.SelectorEventLoop):
    """The loop of a :class:`LoopThread`, which every run on it shares: one run cannot shut
    its default executor - every later ``asyncio.to_thread()`` on the loop would fail."""

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        owner = _threads.get(self)
        logger.error(
            "Task code asked to shut the default executor of the event loop %s, which every "
            "run on it shares: it is kept",
            owner.name if owner is not None else "",
        )


class LoopThread:
    """An event loop running in a daemon thread until :meth:`stop` - and only until then.

    Task code may call ``loop.stop()``, and a ``KeyboardInterrupt`` or ``SystemExit`` raised
    outside a run's own coroutine (a task it spawned, a callback) escapes asyncio into
    ``run_forever()``: either way the loop is run again at once, with everything that was
    scheduled on it, and a line is logged. Anything else escaping the loop ends the thread;
    a thread waiting for a coroutine there notices (:func:`call_on_loop`) and the next run
    gets a new loop. ``loop.shutdown_default_executor()`` keeps the executor (a line is
    logged). A process forked on the loop's thread stops the loop after the pass under way
    and exits (:func:`_stop_forked_loop`), never waiting for I/O on its parent's loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop = _SharedLoop()
        self._stopping = False
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self._thread.start()
        started.wait()
        _threads[self.loop] = self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """End the loop's thread (what was running on the loop stops there)."""
        self._stopping = True
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)

    def _run(self, started: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        while True:
            escaped: BaseException | None = None
            try:
                loop.run_forever()
            except BaseException as exc:
                escaped = exc
            leave_if_forked(self.pid, f"The event loop {self.name}")
            if escaped is not None and not isinstance(escaped, KeyboardInterrupt | SystemExit):
                logger.error(
                    "The event loop %s failed: its runs end with an error",
                    self.name,
                    exc_info=escaped,
                )
                return
            if self._stopping:
                return
            if escaped is None:
                logger.error("The event loop %s was stopped by task code: it goes on", self.name)
                continue
            logger.error(
                "%s escaped to the event loop %s (raised outside a run's coroutine, by a "
                "task it started or a callback): the loop goes on",
                type(escaped).__name__,
                self.name,
                exc_info=escaped,
            )


#: The :class:`LoopThread` of each loop made here, to tell whether a loop is still served.
_threads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopThread] = (
    weakref.WeakKeyDictionary()
)


def _stop_forked_loop() -> None:
    """In a child forked on the thread of a loop of ours (by a callback, or a task that a
    run started - a run's own coroutine is stopped sooner, see :func:`_stepped`): the loop
    stops after the pass under way, before it waits for I/O again - its epoll instance and
    wake-up pipe are its parent's - and its thread exits the child (:meth:`LoopThread._run`).
    Code the child runs before it returns to the loop (``exec``, its own work) is its own."""
    me = threading.current_thread()
    for owner in list(_threads.values()):
        if owner._thread is me:
            owner.loop.stop()


os.register_at_fork(after_in_child=_stop_forked_loop)


def _served(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether coroutines on ``loop`` may still end: its thread lives (a loop of ours), or it
    is not closed (the caller's own loop, which may be run again later)."""
    owner = _threads.get(loop)
    return owner.alive if owner is not None else not loop.is_closed()


_background: LoopThread | None = None
_background_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """This process's background loop, started on first use in a daemon thread (a forked
    child starts its own: a thread does not survive a fork)."""
    global _background
    with _background_lock:
        if _background is None or not _background.alive:
            _background = LoopThread("django_tasks-loop")
        return _background.loop


class RunTimeout(TimeoutError):
    """An async run went on past its ``timeout_seconds``: its coroutine was cancelled."""


@dataclass(frozen=True, slots=True)
class Ended:
    """How a run's coroutine ended: its value, or what it raised (``SystemExit`` included)."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        """The value, or the error raised here."""
        if self.error is not None:
            raise self.error
        return self.value


class _Escaped:
    """A ``KeyboardInterrupt`` or ``SystemExit`` of a run's coroutine, carried out of its
    asyncio task as a value: raised, asyncio would re-raise it into the loop and stop it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Steps(Protocol):
    """Told when a run's coroutine takes a step on its loop and when the step is over: a
    worker's journal (:mod:`.worker.journal`), so that if the process dies in a step, its
    supervisor knows whose code was running."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


@types.coroutine
def _stepped(
    coro: Coroutine[Any, Any, Any], pid: int | None, where: str, steps: Steps | None
) -> Generator[Any, Any, Any]:
    """Await ``coro`` one step at a time - what each step yields goes to the loop, what the
    loop sends or throws (a cancel) goes back into it - telling ``steps``, and, on a loop of
    ours (``pid``: its process), leaving a forked child (:func:`leave_if_forked`) after
    the step that forked - the child's next yield would hand the parent's loop to it - and
    before any step, if another step forked on this thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        if pid is not None:
            leave_if_forked(pid, where)
        if steps is not None:
            steps.begin()
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            return stop.value
        finally:
            if pid is not None:  # before anything is written: the journal is shared memory
                leave_if_forked(pid, where)
            if steps is not None:
                steps.end()
        try:
            value, error = (yield yielded), None
        except GeneratorExit:  # closed while suspended: so is the coroutine
            coro.close()
            raise
        except BaseException as exc:  # thrown in by its asyncio task (a cancel): passed on
            value, error = None, exc


async def _contained(coro: Coroutine[Any, Any, Any], steps: Steps | None) -> Any:
    owner = _threads.get(asyncio.get_running_loop())
    try:
        if owner is None and steps is None:  # the caller's own loop: its forks are its own
            return await coro
        pid = None if owner is None else os.getpid()
        where = f"The event loop {owner.name}" if owner is not None else ""
        return await _stepped(coro, pid, where, steps)
    except (KeyboardInterrupt, SystemExit) as exc:
        return _Escaped(exc)


def cancel_grace() -> float:
    """Seconds a cancelled coroutine has to end before it is left behind: half the shorter of
    ``TIMEOUT_GRACE`` and ``CANCEL_GRACE``, so that a worker process ends such a run itself
    before its supervisor would kill the process - and every other run in it."""
    conf = task_settings()
    return min(conf.TIMEOUT_GRACE, conf.CANCEL_GRACE) / 2


async def run_contained(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    steps: Steps | None = None,
) -> Ended:
    """Run the coroutine of ``fn(*args, **kwargs)`` as an asyncio task of its own on the
    running loop, in a copy of this context, and return how it ended - never raising what it
    raised, so that nothing of it reaches the loop.

    Past ``timeout`` seconds, or when the task awaiting this is cancelled (a cancel request),
    the coroutine is cancelled and has :func:`cancel_grace` seconds to end. How it ends then
    is the run's outcome - a value, or an error raised while being cancelled, as a sync
    task's exception raised while it is interrupted - unless it ended by the cancel itself or
    did not end: then :class:`RunTimeout` (or :class:`asyncio.CancelledError` for a cancel).
    A coroutine that does not end is left running on the loop, detached from its run.

    ``steps`` is told of each step of the coroutine (:class:`Steps`). On a loop of ours, a
    process the coroutine forks exits as soon as it is back in our code (:func:`_stepped`)."""
    try:
        inner = asyncio.ensure_future(_contained(fn(*args, **kwargs), steps))
    except BaseException as exc:  # the call itself failed (not an async function?)
        return Ended(error=exc)
    reason: BaseException
    try:
        await asyncio.wait({inner}, timeout=timeout)
    except asyncio.CancelledError:
        reason = asyncio.CancelledError("The run was cancelled.")
    else:
        if inner.done():
            return _ending(inner)
        reason = RunTimeout(f"Timed out after {timeout} s (timeout_seconds).")
    if await _stopped(inner, fn) and not inner.cancelled():
        return _ending(inner)
    return Ended(error=reason)


async def _stopped(inner: asyncio.Future[Any], fn: Callable[..., Any]) -> bool:
    """Cancel the coroutine's task and give it the grace to end; ``False``: it did not, and
    goes on running, detached (what it returns or raises is discarded)."""
    inner.cancel()
    grace = cancel_grace()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not inner.done() and (left := deadline - loop.time()) > 0:
        with contextlib.suppress(asyncio.CancelledError):  # a repeated cancel: under way
            await asyncio.wait({inner}, timeout=left)
    if inner.done():
        return True
    inner.add_done_callback(_discard)
    logger.warning(
        "The coroutine of %s ignored its cancel for %.1f s: its run ends without it; it is "
        "left running on the event loop, detached from its run",
        getattr(fn, "__qualname__", fn),
        grace,
    )
    return False


def _discard(inner: asyncio.Future[Any]) -> None:
    """A coroutine left behind ended: what it raised is read (asyncio would log it as never
    retrieved) and dropped - its run has ended."""
    if not inner.cancelled():
        inner.exception()


def _ending(inner: asyncio.Future[Any]) -> Ended:
    if inner.cancelled():  # by its own code: it awaited something that was cancelled
        return Ended(error=asyncio.CancelledError("The run's coroutine was cancelled."))
    error = inner.exception()
    if error is not None:
        return Ended(error=error)
    value = inner.result()
    if isinstance(value, _Escaped):
        return Ended(error=value.error)
    return Ended(value=value)


def call_on_loop(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    timeout: float | None = None,
    started: Callable[[asyncio.Task[Ended]], None] | None = None,
    steps: Steps | None = None,
) -> Any:
    """Call the ``async def`` function ``fn`` and wait in this thread for its coroutine, run
    on ``loop`` (default: this context's, see :class:`loop_for_calls`, else the background
    loop) by :func:`run_contained`, in a copy of this thread's context - so the run context,
    the run logger and the caller's transaction marker are the coroutine's too.

    ``timeout`` cancels it after that many seconds (:class:`RunTimeout` here);
    ``started(task)`` gets the asyncio task that runs it (cancel it to cancel the run:
    :class:`asyncio.CancelledError` here); ``steps`` is told of each of its steps. Returns
    the value or raises what the coroutine raised; a loop that goes away meanwhile raises
    :class:`RuntimeError`, never a hang."""
    target = loop or _target.get() or background_loop()
    if running_loop() is target:
        raise RuntimeError(
            "An async task's coroutine cannot be waited for on the thread of its own event "
            "loop: await the task (or its future's aresult()) instead of calling it from "
            "synchronous code running on the loop."
        )
    context = contextvars.copy_context()
    done: concurrent.futures.Future[Ended] = concurrent.futures.Future()

    def start() -> None:
        run = run_contained(fn, args, kwargs, timeout, steps)
        task = target.create_task(run, context=context)
        if started is not None:
            started(task)
        task.add_done_callback(lambda t: done.set_result(_outcome(t)))

    target.call_soon_threadsafe(start)
    return _wait(done, target).get()


def _outcome(task: asyncio.Task[Ended]) -> Ended:
    if task.cancelled():  # cancelled before it began
        return Ended(error=asyncio.CancelledError("The run was cancelled."))
    error = task.exception()
    return Ended(error=error) if error is not None else task.result()


def _wait(done: concurrent.futures.Future[Ended], loop: asyncio.AbstractEventLoop) -> Ended:
    """The coroutine's ending - or an error if its loop is gone (closed, or its thread ended)
    before it ended: nothing would ever end it."""
    while True:
        finished, _ = concurrent.futures.wait([done], timeout=LOOP_CHECK)
        if finished:
            return done.result()
        if not _served(loop):
            message = (
                "The event loop running the run's coroutine is gone (closed, or it failed: "
                "see the log); the coroutine never ended."
            )
            return Ended(error=RuntimeError(message))
