"""Our side of a ``django.tasks`` Task: the task our worker runs for it.

:func:`adapter_for` makes (once per process) one of our tasks named by the Task's module path
whose function runs the Django Task the way Django's contract says (:func:`execute`): the
``task_started`` and ``task_finished`` signals (sender: the backend class), a
``TaskContext`` for ``takes_context`` Tasks, a JSON return value, one ``TaskError`` per failed
attempt - and any exception, ``SystemExit`` included, fails the run. A worker that has not
made the adapter yet finds it with :func:`resolve` from the run's task name and key.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import threading
import uuid
from traceback import format_exception
from typing import Any

from asgiref.sync import ThreadSensitiveContext, markcoroutinefunction, sync_to_async
from django.db import connections
from django.tasks import TaskContext, TaskResultStatus, task_backends
from django.tasks.base import Task as DjangoTask
from django.tasks.base import TaskError
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from ..aio import is_async
from ..conf import task_settings
from ..context import get_run_context
from ..manual_states import Failed
from ..registry import UnknownTask, registry
from ..storable import describe_exception, storable_message
from ..tasks import Task
from .documents import jsonb_text

__all__ = ["adapter_for", "aexecute", "execute", "resolve"]

_adapters: dict[tuple[str, tuple[tuple[str, Any], ...]], Task[Any, Any]] = {}
_lock = threading.Lock()


class _Named:
    """The adapter's function: takes the run's JSON arguments as they are (the Task's own
    signature is Django's to check), and is named like the Task's function so that every
    process computes the same task key."""

    def __init__(self, django_task: DjangoTask[Any, Any]) -> None:
        func = django_task.func
        self.path = django_task.module_path
        self.__module__ = func.__module__
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__doc__ = func.__doc__
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
            ]
        )


class _Call(_Named):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return execute(args, kwargs)


class _AsyncCall(_Named):
    """An ``async def`` Task's: a coroutine function to the worker, which runs it on its
    event loop (the async lane, or the slot's loop) with its timeout and cancel."""

    def __init__(self, django_task: DjangoTask[Any, Any]) -> None:
        super().__init__(django_task)
        markcoroutinefunction(self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await aexecute(args, kwargs)


def adapter_for(django_task: DjangoTask[Any, Any], **options: Any) -> Task[Any, Any]:
    """Our task for ``django_task`` with ``options`` (retries): made once per module path
    and options in a process - making a task costs more than enqueueing a run."""
    path = django_task.module_path
    key = (path, tuple(sorted(options.items())))
    with _lock:
        if key not in _adapters:
            call = _AsyncCall if is_async(django_task.func) else _Call
            base = _adapters.get((path, ())) or Task(call(django_task), name=path[:255])
            _adapters[(path, ())] = base
            _adapters[key] = base.with_options(**options) if options else base
        return _adapters[key]


def resolve(task_key: str, task_name: str) -> Task[Any, Any] | None:
    """The registry's resolver (registered below): in a worker, the adapter of the
    ``django.tasks`` Task a run names, or ``None`` when the name is no module path, or the
    path of something else or of a Task with another key. Raises UnknownTask (its cause says
    why) when the name's module does not exist or lacks the name, and whatever the module
    raises while it is imported - an ImportError or AttributeError of its own code too (the
    worker fails the run with it)."""
    module_path, _, attribute = task_name.rpartition(".")
    if not module_path:
        return None
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name and (module_path == exc.name or module_path.startswith(f"{exc.name}.")):
            raise UnknownTask(task_key) from exc  # no such module
        raise  # its module was found and failed inside: that error is the run's failure
    candidate = getattr(module, attribute, None)
    if candidate is None:
        missing = ImportError(f"Module {module_path!r} has no attribute {attribute!r}")
        raise UnknownTask(task_key) from missing
    if not isinstance(candidate, DjangoTask):
        return None
    adapter = adapter_for(candidate)
    return adapter if adapter.key == task_key else None


registry.add_resolver(resolve)


_APPEND_ERROR = """
UPDATE django_tasks_taskrun
SET django_task = jsonb_set(django_task, '{errors}', django_task->'errors' || %s::jsonb)
WHERE id = %s
"""
_SET_RETURN_VALUE = """
UPDATE django_tasks_taskrun SET django_task = jsonb_set(django_task, '{return_value}', %s::jsonb)
WHERE id = %s
"""


def execute(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the current run's Django Task by Django's rules (see the module docstring)."""
    from ..worker.outcomes import TaskRunCancelled, TaskRunTimeout

    result, sender = _begin(get_run_context())
    task = result.task
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value, value_text = _returned(value)
    except (TaskRunTimeout, TaskRunCancelled):
        raise  # stopped from outside: the worker's rules apply
    # KeyboardInterrupt too fails the run, as Django's contract says: in a worker process it
    # can only come from the Task's own code (the process ignores SIGINT, or handles it).
    except BaseException as exc:
        return _failed(result, sender, exc)
    return _succeeded(result, sender, value, value_text)


async def aexecute(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """:func:`execute` for an ``async def`` Task: its coroutine awaited on the worker's loop,
    the reads, writes and signals around it - and the Task's own ORM calls through
    ``sync_to_async`` - in a sync thread of the run's own (``ThreadSensitiveContext``, as
    Django gives each request of an ASGI server), whose connections are closed when it ends:
    a connection the server dropped never outlives its run, and no run closes another's."""
    async with ThreadSensitiveContext():
        try:
            return await _aexecute(args, kwargs)
        finally:
            await sync_to_async(connections.close_all)()


async def _aexecute(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from ..worker.outcomes import TaskRunCancelled, TaskRunTimeout

    result, sender = await sync_to_async(_begin)(get_run_context())
    task = result.task
    try:
        if task.takes_context:
            value = await task.acall(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = await task.acall(*args, **kwargs)
        value, value_text = _returned(value)
    except (TaskRunTimeout, TaskRunCancelled):
        raise  # timed out or cancelled by the worker: its rules apply
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker cancelled its coroutine (a timeout, a cancel)
        return await sync_to_async(_failed)(result, sender, exc)  # raised by its own code
    except BaseException as exc:
        return await sync_to_async(_failed)(result, sender, exc)
    return await sync_to_async(_succeeded)(result, sender, value, value_text)


def _begin(context: Any) -> tuple[Any, type]:
    """The run's TaskResult, marked RUNNING, and ``task_started`` sent."""
    from ..worker.process import worker_name
    from .results import load_result

    result = load_result(context.id)
    sender = type(task_backends[result.backend])
    now = timezone.now()
    object.__setattr__(result, "status", TaskResultStatus.RUNNING)
    object.__setattr__(result, "started_at", result.started_at or now)
    object.__setattr__(result, "last_attempted_at", now)
    if len(result.worker_ids) < context.attempt:  # not written yet (deferred)
        result.worker_ids.append(worker_name())
    task_started.send(sender, task_result=result)
    return result, sender


def _returned(value: Any) -> tuple[Any, str]:
    value = normalize_json(value)  # TypeError for a value that is not JSON
    return value, jsonb_text(value, "return value")  # ValueError for NaN or NUL


def _failed(result: Any, sender: type, exc: BaseException) -> Any:
    """One TaskError for this attempt, FAILED, ``task_finished``; an Exception is raised again
    (our retries apply), SystemExit or KeyboardInterrupt end the run FAILED (Django's
    contract; ours would say CRASHED)."""
    kind = type(exc)
    error = {
        "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
        # escaped if it holds what PostgreSQL cannot store (NUL), capped
        "traceback": storable_message("".join(format_exception(exc))),
    }
    stored = {**error, "at": timezone.now().isoformat()}  # orders it among crashes
    _write(_APPEND_ERROR, json.dumps([stored]), uuid.UUID(str(result.id)))
    result.errors.append(TaskError(**error))
    _finish(result, TaskResultStatus.FAILED, sender)
    if isinstance(exc, Exception):
        raise exc
    return Failed(message=describe_exception(exc), data=exc)


def _succeeded(result: Any, sender: type, value: Any, value_text: str) -> Any:
    _write(_SET_RETURN_VALUE, value_text, uuid.UUID(str(result.id)))
    object.__setattr__(result, "_return_value", value)
    _finish(result, TaskResultStatus.SUCCESSFUL, sender)
    return value


def _finish(result: Any, status: TaskResultStatus, sender: type) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    task_finished.send(sender, task_result=result)


def _write(query: str, document: str, run_id: uuid.UUID) -> None:
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(query, [document, run_id])
