"""Tasks used by the tests; workers find them through autodiscovery like any app's tasks."""

from __future__ import annotations

import contextlib
import time

from django_tasks import task

from .models import Effect


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def noop() -> None:
    return None


@task(name="explode", queue="default", tags={"errors"})
def explode(message: str = "boom") -> None:
    raise RuntimeError(message)


@task
def record(label: str) -> int:
    return Effect.objects.create(label=label).pk


@task
def sleep_then_record(seconds: float, label: str) -> str:
    time.sleep(seconds)
    Effect.objects.create(label=label)
    return label


@task(queue="other")
def on_other_queue() -> str:
    return "other"


class Unpicklable(Exception):
    """An exception carrying a lock: the worker must still record the failure."""

    def __init__(self) -> None:
        import threading

        super().__init__("cannot pickle me")
        self.lock = threading.Lock()


@task
def raise_unpicklable() -> None:
    raise Unpicklable()


@task
def return_unpicklable() -> object:
    import threading

    return threading.Lock()


@task(retries=1)
def sleep_then_record_retry(seconds: float, label: str) -> str:
    time.sleep(seconds)
    Effect.objects.create(label=label)
    return label


@task(timeout_seconds=0.5)
def too_slow(seconds: float) -> None:
    time.sleep(seconds)


@task(timeout_seconds=0.5, retries=1)
def too_slow_retried(seconds: float) -> None:
    time.sleep(seconds)


@task(timeout_seconds=0.3)
def ignores_timeout(seconds: float) -> str:
    """Swallows every interruption: only the supervisor's kill stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):
            time.sleep(0.05)
    return "finished"


@task
def ignores_cancel(seconds: float) -> str:
    return ignores_timeout.fn(seconds)


@task(retries=2)
def fails_first(label: str) -> int:
    """Fails on its first attempt (it leaves a mark), succeeds on the next."""
    if not Effect.objects.filter(label=label).exists():
        Effect.objects.create(label=label)
        raise ConnectionError(f"first attempt of {label}")
    return Effect.objects.filter(label=label).count()


@task(retries=1)
def always_fails(label: str) -> None:
    raise ValueError(f"attempt failed: {label}")


@task(retries=20)
def chaos_record(index: int) -> int:
    time.sleep(0.002)
    return Effect.objects.create(label=f"chaos-{index}").pk
