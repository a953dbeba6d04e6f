"""Tasks used by the tests; workers find them through autodiscovery like any app's tasks."""

from __future__ import annotations

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
