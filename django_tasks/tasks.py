"""The ``@task`` decorator and :class:`Task`: options validated at decoration time.

A task is a plain function plus options. Calling it runs it inline and records a run;
``.delay()``/``.apply_async()`` put a run into the PostgreSQL topic for a worker.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

from django.utils import timezone

from .aio import is_async
from .cache_policies import NO_CACHE, CacheKeyFn, CachePolicy
from .caching import check_expiration
from .conf import task_settings
from .futures import TaskRunFuture
from .limits.rates import parse_rate
from .registry import registry, task_key
from .retries import RetryDelay, check_jitter, resolve_delays
from .schedules.arguments import check_arguments
from .schedules.timing import Periodic
from .storable import cut, shown, storable_text
from .times import check_time
from .unique import UniqueOption, check_unique_options
from .validation import check_seconds

if TYPE_CHECKING:
    from .context import TaskRunContext
    from .futures import State
    from .runners import SubmittedFuture, TaskFutureList
    from .transactions import TaskTransaction

__all__ = ["RetryCondition", "StateHook", "Task", "TaskOptionKwargs", "TaskOptions", "task"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("django_tasks.tasks")

_QUEUE_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")
PRIORITY_MIN, PRIORITY_MAX = -100, 100

#: ``retry_condition_fn(task, task_run, state)``: retry this failure?
RetryCondition = Callable[["Task[Any, Any]", "TaskRunContext", "State"], bool]
#: ``on_completion`` / ``on_failure`` hooks: ``hook(task, task_run, state)``.
StateHook = Callable[["Task[Any, Any]", "TaskRunContext", "State"], None]
#: ``on_commit`` / ``on_rollback`` hooks: ``hook(transaction)``.
TransactionHook = Callable[["TaskTransaction"], None]


class TaskOptionKwargs(TypedDict, total=False):
    """The keyword arguments of :func:`task`, :class:`Task` and :meth:`Task.with_options`."""

    name: str | None
    queue: str | None
    priority: int
    tags: Iterable[str] | None
    description: str | None
    version: str | None
    retries: int
    retry_delay_seconds: RetryDelay
    retry_jitter_factor: float | None
    retry_condition_fn: RetryCondition | None
    timeout_seconds: float | None
    task_run_name: str | Callable[[], str] | None
    on_completion: Sequence[StateHook] | None
    on_failure: Sequence[StateHook] | None
    cache_policy: CachePolicy | None
    cache_key_fn: CacheKeyFn | None
    cache_expiration: timedelta | None
    refresh_cache: bool
    persist_result: bool | None
    atomic: bool
    log_prints: bool
    on_commit: Sequence[TransactionHook] | None
    on_rollback: Sequence[TransactionHook] | None
    unique: UniqueOption
    unique_for: timedelta | float | None
    schedule: Periodic | None
    rate_limit: str | None


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """A task's options, checked when the decorator runs so mistakes surface at import."""

    name: str
    queue: str | None = None
    priority: int = 0
    tags: tuple[str, ...] = ()
    description: str | None = None
    version: str | None = None
    retries: int = 0
    retry_delay_seconds: RetryDelay = 0
    retry_jitter_factor: float | None = None
    retry_condition_fn: RetryCondition | None = None
    timeout_seconds: float | None = None
    task_run_name: str | Callable[[], str] | None = None
    on_completion: tuple[StateHook, ...] = ()
    on_failure: tuple[StateHook, ...] = ()
    cache_policy: CachePolicy | None = None
    cache_key_fn: CacheKeyFn | None = None
    cache_expiration: timedelta | None = None
    refresh_cache: bool = False
    persist_result: bool | None = None
    atomic: bool = False
    log_prints: bool = False
    on_commit: tuple[TransactionHook, ...] = ()
    on_rollback: tuple[TransactionHook, ...] = ()
    unique: UniqueOption = False
    unique_for: float | None = None
    schedule: Periodic | None = None
    rate_limit: str | None = None
    #: ``rate_limit`` as seconds between two starts of the task's runs (:mod:`.limits`).
    rate_interval: float | None = dataclasses.field(init=False, default=None)
    #: ``retry_delay_seconds`` resolved to one delay per retry (see :mod:`.retries`).
    retry_delays: tuple[float, ...] = dataclasses.field(init=False, default=())

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.queue is not None:
            check_queue(self.queue)
        check_priority(self.priority)
        for option in ("description", "version"):
            value = getattr(self, option)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{option} must be a str, got {type(value).__name__}.")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise TypeError(f"retries must be an int, got {shown(self.retries)}.")
        if self.retries < 0:
            raise ValueError(f"retries must not be negative, got {self.retries}.")
        delays = resolve_delays(self.retry_delay_seconds, self.retries)
        object.__setattr__(self, "retry_delays", delays)
        check_jitter(self.retry_jitter_factor)
        _check_callable("retry_condition_fn", self.retry_condition_fn)
        if self.timeout_seconds is not None:
            check_seconds("timeout_seconds", self.timeout_seconds, allow_zero=False)
        if self.task_run_name is not None and not isinstance(self.task_run_name, str):
            _check_callable("task_run_name", self.task_run_name)
        for option in ("on_completion", "on_failure", "on_commit", "on_rollback"):
            for hook in getattr(self, option):
                _check_callable(f"each {option} hook", hook)
        for flag in ("atomic", "log_prints"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {shown(getattr(self, flag))}.")
        self._check_caching()
        if self.rate_limit is not None:
            object.__setattr__(self, "rate_interval", parse_rate(self.rate_limit))
        unique_for = check_unique_options(self.unique, self.unique_for)
        object.__setattr__(self, "unique_for", unique_for)
        if self.schedule is not None and not isinstance(self.schedule, Periodic):
            raise TypeError(
                f"schedule must be cron(...) or every(...) from django_tasks, got "
                f"{shown(self.schedule)}."
            )

    def _check_caching(self) -> None:
        if self.cache_policy is not None and not isinstance(self.cache_policy, CachePolicy):
            raise TypeError(
                "cache_policy must be a cache policy such as INPUTS, got "
                f"{shown(self.cache_policy)}."
            )
        _check_callable("cache_key_fn", self.cache_key_fn)
        check_expiration(self.cache_expiration)
        for option in ("refresh_cache", "persist_result"):
            value = getattr(self, option)
            if not isinstance(value, bool) and not (option == "persist_result" and value is None):
                raise TypeError(f"{option} must be True or False, got {shown(value)}.")
        if self.caches and self.persist_result is False:
            raise ValueError(
                "persist_result=False cannot go with caching: a cache hit returns the stored "
                "result."
            )

    @property
    def caches(self) -> bool:
        """Whether runs look up and store results by cache key."""
        policy = self.cache_policy is not None and self.cache_policy is not NO_CACHE
        return policy or self.cache_key_fn is not None

    @property
    def persists(self) -> bool:
        """Whether inline/submitted runs store their pickled result (background runs always
        do: that is how ``result()`` reads it from another process)."""
        return bool(self.persist_result) or self.caches


def _check_callable(option: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{option} must be callable, got {shown(value)}.")


H = TypeVar("H")


def _hooks(option: str, hooks: Sequence[H] | None) -> tuple[H, ...]:
    if hooks is None:
        return ()
    if callable(hooks):
        raise TypeError(f"{option} takes a list of functions, got one function: [{shown(hooks)}].")
    return tuple(hooks)


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"Task name must be a str, got {type(name).__name__}.")
    if not name.strip() or len(name) > 255:
        raise ValueError(f"Task name must be 1 to 255 characters, got {shown(name)}.")
    if storable_text(name) != name:
        raise ValueError(f"Task name must not hold NUL or lone surrogates, got {shown(name)}.")


def check_queue(queue: object) -> str:
    """Validate a queue name: it is stored, indexed and sent as a NOTIFY payload."""
    if not isinstance(queue, str):
        raise TypeError(f"queue must be a str, got {type(queue).__name__}.")
    if not _QUEUE_RE.match(queue):
        raise ValueError(f"queue must be 1 to 100 letters, digits or '_.:-', got {shown(queue)}.")
    return queue


def check_priority(priority: object) -> int:
    """Validate a priority: an int from -100 to 100, higher runs first (as in ``django.tasks``)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}.")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(
            f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}, got {priority}."
        )
    return priority


def _normalize_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise TypeError(f"tags must be an iterable of str (a set or list), got {shown(tags)}.")
    out = set()
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"each tag must be a non-empty str, got {shown(tag)}.")
        if storable_text(tag) != tag:
            raise ValueError(f"tags must not hold NUL or lone surrogates, got {shown(tag)}.")
        out.add(tag)
    return tuple(sorted(out))


class Task(Generic[P, R]):
    """A function with task options. Use the :func:`task` decorator to make one."""

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptionKwargs]) -> None:
        if not callable(fn):
            raise TypeError(f"@task decorates a function, got {shown(fn)}.")
        self.fn = fn
        self.options = _make_options(fn, options)
        #: An ``async def`` task (see :mod:`.aio`): calling it returns a coroutine.
        self.is_async = is_async(fn)
        if self.is_async and self.options.atomic:
            raise TypeError(
                f"{fn.__qualname__} is async: atomic=True is for sync tasks. Django's "
                f"transactions belong to one thread and cannot span an await; open one "
                f"inside the task around sync code (sync_to_async) instead."
            )
        if self.options.log_prints:
            from .logs import install_print_capture

            install_print_capture()
        self.key = task_key(self.options.name, fn)
        self.signature = inspect.signature(fn)
        self._plain_parameters = _plain_parameters(self.signature)
        for reserved in (*_CALL_KEYWORDS, _DELAY_KEYWORD):
            if reserved in self.signature.parameters:
                raise ValueError(
                    f"{fn.__qualname__} has a parameter named {reserved!r}: that name is taken "
                    f"by task calls (task(..., {reserved}=...)). Rename it."
                )
        if self.options.schedule is not None:
            schedule = self.options.schedule
            check_arguments(self, schedule.args, schedule.kwargs)  # wrong ones: said here
        functools.update_wrapper(self, fn)
        registry.register(self)

    # Options read by the rest of the package.
    @property
    def name(self) -> str:
        return self.options.name

    @property
    def queue(self) -> str:
        return self.options.queue or task_settings().DEFAULT_QUEUE

    @property
    def priority(self) -> int:
        return self.options.priority

    @property
    def tags(self) -> tuple[str, ...]:
        return self.options.tags

    @property
    def description(self) -> str | None:
        return self.options.description

    def __repr__(self) -> str:
        return f"<Task {self.name} ({self.fn.__module__}.{self.fn.__qualname__})>"

    def with_options(self, **changes: Unpack[TaskOptionKwargs]) -> Task[P, R]:
        """A copy of this task with some options changed (a new name gives a new task key).

        Takes the keyword arguments of :func:`task`; an unknown one is a ``TypeError``.
        """
        _check_known(changes)
        current = {
            f.name: getattr(self.options, f.name) for f in dataclasses.fields(TaskOptions) if f.init
        }
        options: Any = {**current, **changes}
        return Task(self.fn, **options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function now, in this process, recorded as a task run.

        Two keywords the function itself cannot have, as in Prefect: ``wait_for=[...]`` waits
        for those futures first, as ``.submit()`` does (a run that did not complete stops this
        one); ``return_state=True`` returns the run's final :class:`~.futures.State` instead
        of its value, and raises nothing (``state.result()`` gives the value or raises)."""
        from .runs import run_inline

        extra: dict[str, Any] = kwargs
        wait_for = extra.pop("wait_for", None) or ()
        return_state = extra.pop("return_state", False)
        if not isinstance(return_state, bool):
            raise TypeError(f"return_state must be True or False, got {shown(return_state)}.")
        if self.is_async:
            self.bind(args, kwargs)  # wrong arguments: said at the call, as for any function
            coro: Any = _run_inline_async(self, args, kwargs, wait_for, return_state)
            return cast(R, coro)
        value: R = run_inline(self, args, kwargs, wait_for, return_state=return_state)
        return value

    def on_completion(self, fn: StateHook) -> StateHook:
        """Decorator form of the ``on_completion`` option: ``@my_task.on_completion``."""
        _check_callable("on_completion", fn)
        hooks = (*self.options.on_completion, fn)
        self.options = dataclasses.replace(self.options, on_completion=hooks)
        return fn

    def on_failure(self, fn: StateHook) -> StateHook:
        """Decorator form of the ``on_failure`` option: ``@my_task.on_failure``."""
        _check_callable("on_failure", fn)
        self.options = dataclasses.replace(self.options, on_failure=(*self.options.on_failure, fn))
        return fn

    def on_commit(self, fn: TransactionHook) -> TransactionHook:
        """Decorator form of the ``on_commit`` option: ``@my_task.on_commit``."""
        _check_callable("on_commit", fn)
        self.options = dataclasses.replace(self.options, on_commit=(*self.options.on_commit, fn))
        return fn

    def on_rollback(self, fn: TransactionHook) -> TransactionHook:
        """Decorator form of the ``on_rollback`` option: ``@my_task.on_rollback``."""
        _check_callable("on_rollback", fn)
        hooks = (*self.options.on_rollback, fn)
        self.options = dataclasses.replace(self.options, on_rollback=hooks)
        return fn

    def submit(
        self, *args: Any, wait_for: Iterable[Any] | None = None, **kwargs: Any
    ) -> SubmittedFuture[R]:
        """Run in this process, concurrently, on the task runner; returns a future at once.

        Futures among the arguments (also inside lists, tuples, dicts) and in ``wait_for``
        are upstream runs: this run starts after they complete, with their results as
        arguments, and ends FAILED without running if one of them does not complete
        (unless wrapped in ``allow_failure``)."""
        from .runners import get_task_runner

        return get_task_runner().submit(self, args, kwargs, wait_for or ())

    def map(
        self, *args: Any, wait_for: Iterable[Any] | None = None, **kwargs: Any
    ) -> TaskFutureList[R]:
        """``.submit()`` once per element of the iterable arguments (of equal length); wrap
        an iterable that every run should receive whole in ``unmapped(...)``."""
        from .runners import get_task_runner

        return get_task_runner().map(self, args, kwargs, wait_for or ())

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[R]:
        """Put a run into the background topic, in the caller's current transaction.

        ``unique_key="..."`` (a keyword of the call, not of the function) makes the run
        unique: while a run with that key is not final, this returns that run's future."""
        unique_key: Any = kwargs.pop(_DELAY_KEYWORD, None)  # checked in django_tasks.unique
        return self.apply_async(args=args, kwargs=kwargs, unique_key=unique_key)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[R]:
        """``.delay()`` for async code: the enqueue runs on the thread that holds the
        request's database connection (``sync_to_async``, thread-sensitive), and this
        coroutine waits without blocking the loop.

        Async code cannot hold a transaction across an await, so ``adelay()`` commits on its
        own unless it is awaited inside a function that ``sync_to_async`` runs in an atomic
        block; to enqueue as part of a transaction, call ``.delay()`` inside that block
        (see docs/async.md)."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.delay, thread_sensitive=True)(*args, **kwargs)

    def apply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_time: datetime | None = None,
        countdown: float | None = None,
        wait_for: Iterable[Any] | None = None,
        unique_key: str | None = None,
    ) -> TaskRunFuture[R]:
        """``.delay()`` with per-run options: queue, priority, when to start at the earliest,
        ``unique_key`` (see :mod:`.unique`) and ``wait_for``: background runs (their futures)
        to wait for without taking their results. Futures among the arguments are upstream
        runs too, and are passed as their results. The run is not taken by a worker before
        every upstream is COMPLETED; if one ends otherwise (and is not wrapped in
        ``allow_failure``), the run ends FAILED without running, with a message naming it.

        Every argument is checked before anything is written: wrong arguments for the function,
        an unknown option value, a value that cannot be pickled or a payload that is too large
        raise here and leave the database untouched.
        """
        from .topic import enqueue

        return enqueue(
            self,
            tuple(args),
            dict(kwargs or {}),
            queue=self.queue if queue is None else check_queue(queue),
            priority=self.priority if priority is None else check_priority(priority),
            scheduled_time=_when(scheduled_time, countdown),
            wait_for=wait_for or (),
            unique_key=unique_key,
        )

    def delay_many(
        self,
        calls: Iterable[tuple[Any, ...] | dict[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_time: datetime | None = None,
        countdown: float | None = None,
    ) -> list[TaskRunFuture[R]]:
        """Enqueue one run per item in one round trip (backfills): a tuple item gives the
        positional arguments, a dict the keyword arguments. One bad item writes nothing."""
        from .topic import enqueue_many

        items: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for item in calls:
            if isinstance(item, dict):
                items.append(((), dict(item)))
            elif isinstance(item, tuple):
                items.append((item, {}))
            else:
                raise TypeError(
                    f"delay_many takes tuples (positional arguments) or dicts (keyword "
                    f"arguments), got {type(item).__name__}."
                )
        return enqueue_many(
            self,
            items,
            queue=self.queue if queue is None else check_queue(queue),
            priority=self.priority if priority is None else check_priority(priority),
            scheduled_time=_when(scheduled_time, countdown),
        )

    def run_name(self, parameters: Mapping[str, Any], run_id: uuid.UUID, origin: str) -> str:
        """A run's display name: ``task_run_name`` formatted with the run's parameters (or
        called), else the task name. A template naming a missing parameter is an error here,
        at the call; a callable that fails falls back to the task name (it must not stop
        the run)."""
        template = self.options.task_run_name
        if template is None:
            return self.name
        if isinstance(template, str):
            try:
                return storable_text(template.format(**parameters), 255)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ValueError(
                    f"task_run_name {shown(template)} of task {shown(self.name)} cannot be "
                    f"formatted with the parameters {shown(sorted(parameters))}: {shown(exc)}"
                ) from None
        from .context import TaskRunContext, run_context

        context = TaskRunContext(self, run_id, self.name, 1, dict(parameters), origin)
        try:
            with run_context(context):
                name = template()
        except Exception:
            logger.warning("task_run_name of %s raised; using the task name", self, exc_info=True)
            return self.name
        if not isinstance(name, str):  # as in Prefect: a mistake in the code, said at the call
            raise TypeError(
                f"task_run_name of task {shown(self.name)} must return a str, got {shown(name)}."
            )
        return storable_text(name, 255)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults included, in the signature's order
        (what :meth:`bind` gives). For the usual signature - plain parameters, no ``*args``,
        ``**kwargs``, keyword-only or positional-only ones - without :mod:`inspect`: binding
        was a fifth of a bulk enqueue's Python. Anything unusual, or wrong, goes through
        :meth:`bind`, which raises the error a wrong call deserves."""
        plain = self._plain_parameters
        if plain is None or len(args) > len(plain[0]):
            return dict(self.bind(args, kwargs).arguments)
        names, defaults = plain
        given = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in given or name not in defaults:
                return dict(self.bind(args, kwargs).arguments)  # duplicate or unknown: raises
            given[name] = value
        missing = _MISSING
        out = {name: given.get(name, defaults[name]) for name in names}
        if len(given) < len(names) and any(value is missing for value in out.values()):
            return dict(self.bind(args, kwargs).arguments)  # a required one missing: raises
        return out

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        """Bind arguments to the function's signature: a mismatch is a ``TypeError`` here."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"Wrong arguments for task {shown(self.name)}: {cut(str(exc))}"
            ) from None
        bound.apply_defaults()
        return bound


#: A required parameter, in :func:`_plain_parameters`' defaults.
_MISSING: Any = object()


def _plain_parameters(
    signature: inspect.Signature,
) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """The names of a signature of plain parameters and their defaults (``_MISSING`` for
    required ones); ``None`` for any other kind of signature."""
    kinds = {p.kind for p in signature.parameters.values()}
    if kinds - {inspect.Parameter.POSITIONAL_OR_KEYWORD}:
        return None
    params = signature.parameters.values()
    defaults = {p.name: _MISSING if p.default is p.empty else p.default for p in params}
    return tuple(signature.parameters), defaults


#: Keywords of a task call (``task(..., wait_for=..., return_state=...)``), not of the function.
_CALL_KEYWORDS = ("wait_for", "return_state")
#: The keyword of ``.delay()`` that is not the function's.
_DELAY_KEYWORD = "unique_key"


async def _run_inline_async(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[Any],
    return_state: bool,
) -> Any:
    """``await my_async_task(...)``: driven on this loop (:mod:`.async_runs`)."""
    from .async_runs import run_inline

    return await run_inline(task, args, kwargs, wait_for, return_state)


def _when(scheduled_time: datetime | None, countdown: float | None) -> datetime | None:
    if scheduled_time is not None and countdown is not None:
        raise TypeError("Pass scheduled_time or countdown, not both.")
    if countdown is not None:
        return timezone.now() + timedelta(seconds=check_seconds("countdown", countdown))
    if scheduled_time is not None:
        if not isinstance(scheduled_time, datetime):
            raise TypeError(f"scheduled_time must be a datetime, got {shown(scheduled_time)}.")
        if timezone.is_naive(scheduled_time):
            raise ValueError("scheduled_time must be timezone-aware (use django.utils.timezone).")
        check_time("scheduled_time", scheduled_time)  # else the row's CHECK refuses it later
    return scheduled_time


def _check_known(options: Mapping[str, Any]) -> None:
    unknown = set(options) - set(TaskOptionKwargs.__annotations__)
    if unknown:
        raise TypeError(f"Unknown task option(s): {', '.join(sorted(unknown))}.")


def _make_options(fn: Callable[..., Any], options: Mapping[str, Any]) -> TaskOptions:
    _check_known(options)
    given = dict(options)
    name = given.pop("name", None)
    description = given.pop("description", None)
    return TaskOptions(
        name=fn.__name__ if name is None else name,
        description=inspect.getdoc(fn) if description is None else description,
        tags=_normalize_tags(given.pop("tags", None)),
        on_completion=_hooks("on_completion", given.pop("on_completion", None)),
        on_failure=_hooks("on_failure", given.pop("on_failure", None)),
        on_commit=_hooks("on_commit", given.pop("on_commit", None)),
        on_rollback=_hooks("on_rollback", given.pop("on_rollback", None)),
        **given,
    )


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    **options: Unpack[TaskOptionKwargs],
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None, /, **options: Unpack[TaskOptionKwargs]
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Make a function a task, bare (``@task``) or with options (``@task(queue="emails")``).

    Options (all keyword-only, checked here so a mistake fails at the decorator line):
    ``name``, ``queue``, ``priority``, ``tags``, ``description``, ``version``, ``retries``,
    ``retry_delay_seconds`` (seconds, a list per retry, or a callable such as
    :func:`~django_tasks.retries.exponential_backoff`), ``retry_jitter_factor``,
    ``retry_condition_fn(task, task_run, state) -> bool``, ``timeout_seconds``,
    ``task_run_name`` (a template such as ``"add-{x}"`` or a callable), ``on_completion`` and
    ``on_failure`` (lists of ``hook(task, task_run, state)``), ``cache_policy``,
    ``cache_key_fn(context, parameters)``, ``cache_expiration``, ``refresh_cache``,
    ``persist_result``, ``atomic``, ``on_commit`` and ``on_rollback`` (lists of
    ``hook(transaction)``), ``log_prints``.
    """
    if fn is not None:
        return Task(fn, **options)
    _make_options(_placeholder, options)  # validate before a function is given

    def decorator(f: Callable[P, R]) -> Task[P, R]:
        return Task(f, **options)

    return decorator


def _placeholder() -> None:
    """Stands in for the function while ``@task(...)`` options are checked."""
