"""Standard ``django.tasks`` Tasks (Django 6), run by our backend and worker, and receivers
that record the signals a worker process sends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.tasks import TaskContext, task
from django.tasks.signals import task_finished, task_started

from .models import Effect


@task
def add_json(a: int, b: int) -> int:
    return a + b


@task(priority=10, queue_name="other")
def tuned(values: list[Any], flag: bool = False) -> dict[str, Any]:
    return {"values": values, "flag": flag}


@task(takes_context=True)
def with_context(context: TaskContext[Any, Any], label: str) -> int:
    Effect.objects.create(label=f"{label}:{context.attempt}:{context.task_result.id}")
    return context.attempt


@task
def fails(message: str) -> None:
    raise ValueError(message)


@task
def exits() -> None:
    raise SystemExit(2)


@task
def returns_a_set() -> object:
    return {1, 2}


@task
def mark(label: str) -> str:
    Effect.objects.create(label=label)
    return label


@task(retries=2)  # type: ignore[call-overload, untyped-decorator]
def flaky(label: str) -> int:
    """Fails twice (one mark per attempt), then succeeds: our retries through Django's @task."""
    Effect.objects.create(label=label)
    attempts = Effect.objects.filter(label=label).count()
    if attempts <= 2:
        raise ConnectionError(f"attempt {attempts} of {label} failed")
    return attempts


@task(retries=1)  # type: ignore[call-overload, untyped-decorator]
def sleeps(seconds: float, label: str) -> str:
    time.sleep(seconds)
    Effect.objects.create(label=label)
    return label


@task(takes_context=True)
def own_id(context: TaskContext[Any, Any]) -> str:
    return context.task_result.id


@task
def chained() -> None:
    try:
        raise ValueError("This task failed")
    except ValueError as exc:
        raise ValueError(exc) from exc


@task
def interrupted() -> None:
    raise KeyboardInterrupt


@task
def odd_value(kind: str) -> object:
    """Returns what Python's JSON allows and PostgreSQL's jsonb refuses, or raises with it."""
    if kind == "nan":
        return {"x": float("nan")}
    if kind == "nul":
        return "a\x00b"
    if kind == "surrogate":
        return ["lone \ud800"]
    raise ValueError("message with a NUL: \x00")


def _record(signal_name: str, sender: type, task_result: Any, **kwargs: Any) -> None:
    name = task_result.task.func.__name__
    if name in ("mark", "async_marks"):  # async_marks: from Django's sync thread, not the loop
        prefix = "signal" if name == "mark" else "async-signal"
        label = f"{prefix}:{signal_name}:{task_result.status}:{sender.__name__}"
        Effect.objects.create(label=label)


task_started.connect(lambda sender, **kw: _record("started", sender, **kw), weak=False)
task_finished.connect(lambda sender, **kw: _record("finished", sender, **kw), weak=False)


@task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@task(takes_context=True)
async def async_with_context(context: TaskContext[Any, Any], label: str) -> str:
    await asyncio.sleep(0)
    return f"{label}:{context.attempt}:{context.task_result.id}"


@task
async def async_fails(message: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(message)


@task
async def async_exits() -> None:
    raise SystemExit(3)


@task
async def async_marks(label: str) -> str:
    """The ORM from a coroutine: Django's async methods."""
    await Effect.objects.acreate(label=label)
    return label


@task
async def async_cancels_itself() -> None:
    """Its own code raises CancelledError (an inner task it awaited was cancelled): not the
    worker's cancel, so the run fails as any exception fails it."""
    raise asyncio.CancelledError("cancelled inside the task")
