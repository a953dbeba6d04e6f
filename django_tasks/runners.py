"""Task runners: ``.submit()`` and ``.map()`` run tasks concurrently in this process.

A runner executes submitted runs (see :func:`django_tasks.runs.execute`: dependencies,
retries, hooks) and hands back a :class:`SubmittedFuture` at once. The default runner is a
thread pool, created on first use from ``DJANGO_TASKS["TASK_RUNNER"]`` (a dotted path to a
:class:`TaskRunner` subclass) with ``TASK_RUNNER_MAX_WORKERS`` threads; a runner can also be
used directly as a context manager. Runs are submitted in order and a pool starts them in
order, so a downstream run (which receives its upstream's future) never holds the last thread
while its upstream waits for one.

Database connections that task code opens in a runner thread are closed after each run as at
the end of a request (``CONN_MAX_AGE``), so threads do not keep connections open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import import_string

from .aio import loop_for_calls, running_loop
from .async_runs import needs_thread
from .async_runs import submit as submit_async
from .conf import task_settings
from .dependencies import AnyFuture, allow_failure
from .futures import LocalFuture, State
from .progress import Progress
from .progress import writer as progress_writer
from .recorder import RunRecord, record
from .runs import execute, new_record
from .states import StateName, StateType

if TYPE_CHECKING:
    from .tasks import Task

__all__ = [
    "DoneAndNotDoneFutures",
    "SubmittedFuture",
    "TaskFutureList",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "as_completed",
    "get_task_runner",
    "unmapped",
    "wait",
]

R = TypeVar("R")
T = TypeVar("T")


class unmapped(Generic[T]):  # Prefect's name (lower case)
    """Pass the same value to every run of a ``.map()`` instead of mapping over it."""

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


class SubmittedFuture(LocalFuture, Generic[R]):
    """A run submitted to a task runner in this process: its state, its result."""

    def __init__(self, run: RunRecord) -> None:
        self.id = run.id
        self.task_run_name = run.name
        self._state = State(run.state_type, run.state_name, "", run.updated)
        self._inner: concurrent.futures.Future[State] = concurrent.futures.Future()
        self._progress: Progress | None = None
        #: The event loop driving the run, for an async run driven on one (:mod:`.async_runs`).
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<SubmittedFuture {self.task_run_name} {self.id}>"

    @property
    def task_run_id(self) -> Any:
        """Prefect's name for :attr:`id`."""
        return self.id

    @property
    def state(self) -> State:
        """The run's latest state, as this process knows it (no database read)."""
        if self._inner.done():
            return self._final()
        return self._state

    @property
    def progress(self) -> Progress | None:
        """The run's latest ``set_progress()`` value (this process knows it: no read)."""
        return progress_writer.get(self.id) or self._progress

    def done(self) -> bool:
        return self._inner.done()

    def wait(self, timeout: float | None = None) -> State:
        """Block until the run is final or ``timeout`` seconds pass; return its state."""
        self._check_not_on_its_loop()
        concurrent.futures.wait([self._inner], timeout)
        return self.state

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The return value; a failed run raises its exception (or returns it, with
        ``raise_on_failure=False``). :class:`TimeoutError` if not final in time."""
        self._check_not_on_its_loop()
        try:
            self._inner.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"Task run {self.id} is not final after {timeout}s.") from None
        except BaseException:
            pass  # the runner itself failed: _final() reports it as CRASHED
        state = self._final()
        if state.exception is not None:
            if raise_on_failure:
                raise state.exception
            return state.exception  # type: ignore[return-value]
        value: R = state.data
        return value

    async def aresult(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """:meth:`result` for async code: waits without blocking the event loop."""
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._inner)), timeout)
        except TimeoutError:
            raise TimeoutError(f"Task run {self.id} is not final after {timeout}s.") from None
        except Exception:
            pass  # the runner itself failed: result() reports it as CRASHED
        return self.result(0, raise_on_failure)

    async def await_final(self, timeout: float | None = None) -> State:
        """:meth:`wait` for async code: the state once final (or when ``timeout`` passes)."""
        with contextlib.suppress(Exception):  # out of time, or the runner failed (CRASHED)
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._inner)), timeout)
        return self.state

    def _check_not_on_its_loop(self) -> None:
        """Blocking the thread of the loop that drives the run would stop the run for good:
        say so rather than hang."""
        if self._loop is not None and not self._inner.done() and running_loop() is self._loop:
            raise RuntimeError(
                f"Run {self.id} is driven on this thread's event loop: waiting for it here "
                f"would block that loop, and the run with it. In async code, use "
                f"`await future.aresult()` or `await future.await_final()`."
            )

    def add_done_callback(self, fn: Any) -> None:
        """Call ``fn(future)`` when the run is final (at once if it is already)."""
        self._inner.add_done_callback(lambda _: fn(self))

    def _final(self) -> State:
        error = self._inner.exception()
        if error is not None:
            message = f"The task runner failed: {type(error).__name__}: {error}"
            return State(
                StateType.CRASHED, StateName.CRASHED, message, timezone.now(), exception=error
            )
        return self._inner.result()

    def _publish(self, run: RunRecord, state: State) -> None:
        record(run)
        self._state = state

    def _ended(self, run: RunRecord) -> None:
        self._progress = Progress.from_json(run.progress)


class TaskFutureList(list[SubmittedFuture[R]]):
    """The futures of a ``.map()``: ``.wait()`` for all, ``.result()`` gathers all results."""

    def wait(self, timeout: float | None = None) -> None:
        wait(self, timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for future in self:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            results.append(future.result(left, raise_on_failure))
        return results


class TaskRunner:
    """Runs submitted task runs; subclasses say where (``_start``). Runs of async tasks are
    driven on an event loop instead (:mod:`.async_runs`), except those that hold a thread."""

    @property
    def _async(self) -> set[SubmittedFuture[Any]]:
        """Submitted async runs not final yet (for :meth:`shutdown`); made on first use, so
        that a subclass's ``__init__`` need not call this one's."""
        pending: set[SubmittedFuture[Any]] = self.__dict__.setdefault("_pending_async", set())
        return pending

    def submit(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] = (),
    ) -> SubmittedFuture[R]:
        """One run of ``task``; wrong arguments raise here and nothing is recorded."""
        run = new_record(task, args, kwargs, "submit")
        return self._submit(task, run, args, kwargs, list(wait_for))

    def map(
        self,
        task: Task[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: Iterable[Any] = (),
    ) -> TaskFutureList[R]:
        """One run per element of the iterable arguments (all of equal length);
        :class:`unmapped` arguments and non-iterables are passed to every run."""
        calls = expand_map(args, kwargs)
        runs = [new_record(task, a, k, "submit") for a, k in calls]  # all checked first
        waits = list(wait_for)
        return TaskFutureList(
            self._submit(task, run, a, k, waits) for run, (a, k) in zip(runs, calls, strict=True)
        )

    def _submit(
        self,
        task: Task[Any, R],
        run: RunRecord,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait_for: list[Any],
    ) -> SubmittedFuture[R]:
        record(run)
        future: SubmittedFuture[R] = SubmittedFuture(run)
        if task.is_async and not needs_thread(task):
            # Driven on the submitting code's loop (the background loop from sync code), no
            # thread held while its coroutine runs: not capped by this runner's threads.
            self._async.add(future)
            future._inner.add_done_callback(lambda _: self._async.discard(future))
            submit_async(task, run, args, kwargs, wait_for, future)
            return future
        # The coroutine of an async run that holds a thread goes to the submitting code's
        # loop when there is one.
        loop = running_loop() if task.is_async else None
        self._start(future, lambda: _execute(task, run, args, kwargs, wait_for, future, loop))
        return future

    def _start(self, future: SubmittedFuture[Any], call: Any) -> None:
        raise NotImplementedError

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking runs; with ``wait``, return when the submitted ones are final."""
        if wait:
            concurrent.futures.wait([future._inner for future in list(self._async)])

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


class ThreadPoolTaskRunner(TaskRunner):
    """Runs submitted runs on a pool of threads (I/O-bound work: requests, queries, files)."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="django_tasks-runner"
        )

    def _start(self, future: SubmittedFuture[Any], call: Any) -> None:
        inner = self._pool.submit(call)
        inner.add_done_callback(lambda done: _chain(done, future))

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
        super().shutdown(wait)


def _chain(done: concurrent.futures.Future[State], future: SubmittedFuture[Any]) -> None:
    error = done.exception()
    if error is not None:
        future._inner.set_exception(error)
    else:
        future._inner.set_result(done.result())


def _execute(
    task: Task[Any, Any],
    run: RunRecord,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: list[Any],
    future: SubmittedFuture[Any],
    loop: asyncio.AbstractEventLoop | None = None,
) -> State:
    try:
        with loop_for_calls(loop):
            state = execute(task, run, args, kwargs, wait_for, publish=future._publish)
        future._ended(run)
        return state
    finally:
        close_old_connections()


def expand_map(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The calls of a ``.map()``: iterables are mapped in step, everything else repeated.

    As in Prefect, a future among the arguments is waited for and its result mapped over when
    it is iterable (``add_one.map(numbers_future)``), and ``allow_failure(...)`` around an
    iterable maps over what it wraps, each element keeping the wrapper (a failed future gives
    that run its exception)."""
    mapped: dict[int | str, list[Any]] = {}
    items: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    for key, value in items:
        elements = _mapped_elements(value)
        if elements is not None:
            mapped[key] = elements
    if not mapped:
        raise TypeError(
            ".map() needs at least one iterable argument (wrap constants in unmapped(...))."
        )
    lengths = {len(items) for items in mapped.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{_label(key)}={len(items)}" for key, items in mapped.items())
        raise ValueError(f".map() got iterables of different lengths: {sizes}.")
    calls = []
    for index in range(lengths.pop()):
        call_args = tuple(
            mapped[i][index] if i in mapped else _constant(v) for i, v in enumerate(args)
        )
        call_kwargs = {
            k: mapped[k][index] if k in mapped else _constant(v) for k, v in kwargs.items()
        }
        calls.append((call_args, call_kwargs))
    return calls


def _mapped_elements(value: Any) -> list[Any] | None:
    """The elements a ``.map()`` argument is mapped over, or ``None`` for a constant (a
    future that failed, or whose result is not iterable, stays a future for the runs)."""
    allowed = isinstance(value, allow_failure)
    inner = value.value if allowed else value
    if isinstance(inner, AnyFuture):
        if not inner.wait().is_completed() and not allowed:
            return None  # each run fails naming this upstream, as for any failed upstream
        inner = inner.result(raise_on_failure=False)
    if isinstance(inner, unmapped | str | bytes | Mapping) or not isinstance(inner, Iterable):
        return None
    return [allow_failure(item) for item in inner] if allowed else list(inner)


def _constant(value: Any) -> Any:
    return value.value if isinstance(value, unmapped) else value


def _label(key: int | str) -> str:
    return f"argument {key}" if isinstance(key, int) else key


_default: TaskRunner | None = None
_default_lock = threading.Lock()


def get_task_runner() -> TaskRunner:
    """The process's default runner, created on first use from the settings."""
    global _default
    with _default_lock:
        if _default is None:
            conf = task_settings()
            runner_class = import_string(conf.TASK_RUNNER)
            if runner_class is ThreadPoolTaskRunner:
                _default = ThreadPoolTaskRunner(conf.TASK_RUNNER_MAX_WORKERS)
            else:
                _default = runner_class()
        return _default


class DoneAndNotDoneFutures(NamedTuple):
    done: set[Any]
    not_done: set[Any]


def _check_timeout(timeout: float | None) -> None:
    """A negative timeout is a mistake, as in Prefect (and concurrent.futures): say so."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout}.")


def wait(futures: Iterable[Any], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Wait for ``futures`` (submitted or background) until all are final or time is up."""
    _check_timeout(timeout)
    pending = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    for future in pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        future.wait(left)
    done = {f for f in pending if _is_done(f)}
    return DoneAndNotDoneFutures(done, set(pending) - done)


def as_completed(futures: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
    """Yield ``futures`` as they finish; :class:`TimeoutError` if some are not final in time.

    Submitted futures wake this at once; background ones are polled (5 ms, backing off to
    200 ms), as :meth:`TaskRunFuture.wait` does."""
    _check_timeout(timeout)
    pending = list(dict.fromkeys(futures))
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = threading.Event()
    for future in pending:
        if isinstance(future, SubmittedFuture):
            future.add_done_callback(lambda _: finished.set())
    delay = 0.005
    while pending:
        ready = [f for f in pending if _is_done(f)]
        for future in ready:
            pending.remove(future)
            yield future
        if not pending:
            return
        if ready:
            continue
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"{len(pending)} of the futures are not final after {timeout}s.")
        finished.clear()
        finished.wait(delay if left is None else min(delay, left))
        delay = min(delay * 2, 0.2)


def _is_done(future: Any) -> bool:
    if isinstance(future, SubmittedFuture):
        return future.done()
    return bool(future.state.is_final())
