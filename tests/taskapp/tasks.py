"""Tasks used by the tests; workers find them through autodiscovery like any app's tasks."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from datetime import timedelta

from django_tasks import (
    State,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
    cron,
    get_run_logger,
    set_progress,
    task,
)
from django_tasks.cache_policies import INPUTS, RUN_ID, TASK_SOURCE
from django_tasks.context import TaskRunContext, get_run_context
from django_tasks.tasks import StateHook
from django_tasks.transactions import TaskTransaction, current_transaction

from .models import Effect


@task
def add(a: int, b: int) -> int:
    return a + b


@task(schedule=cron("0 0 1 1 *", tz="Europe/Paris", args=["new year"]))
def new_year(label: str) -> str:
    """Declared schedule of the tests (yearly: it never ticks during a test run)."""
    return label


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


def _fail_until(label: str, failures: int, error: type[Exception] = ConnectionError) -> int:
    """Leave a mark per attempt; raise ``error`` until ``failures`` attempts have failed."""
    Effect.objects.create(label=label)
    attempts = Effect.objects.filter(label=label).count()
    if attempts <= failures:
        raise error(f"attempt {attempts} of {label} failed")
    return attempts


@task(retries=3, retry_delay_seconds=[0.2, 0.4])
def fails_twice_listed(label: str) -> int:
    """Retried after 0.2 s, then 0.4 s (the list), succeeds on the third attempt."""
    return _fail_until(label, 2)


@task(retries=3, retry_delay_seconds=0.3)
def fails_then_waits(label: str) -> int:
    """Fails once; its retry waits 0.3 s (long enough to restart a worker in between)."""
    return _fail_until(label, 1)


def _only_connection_errors(task: object, task_run: object, state: State) -> bool:
    return isinstance(state.exception, ConnectionError)


@task(retries=3, retry_condition_fn=_only_connection_errors)
def picky(label: str, error: str) -> int:
    """Retried on ConnectionError only: a ValueError ends the run at once."""
    kind = {"connection": ConnectionError, "value": ValueError}[error]
    return _fail_until(label, 1, kind)


def _hook_mark(prefix: str) -> StateHook:
    def hook(task: object, task_run: TaskRunContext, state: State) -> None:
        Effect.objects.create(label=f"{prefix}:{task_run.parameters['label']}:{state.name}")

    return hook


@task(
    retries=1,
    on_completion=[_hook_mark("done")],
    on_failure=[_hook_mark("failed"), _hook_mark("failed-again")],
    task_run_name="hooked-{label}",
)
def hooked(label: str, fail: bool = False) -> str:
    if fail:
        raise ValueError(f"{label} fails")
    return label


@task(task_run_name=lambda: f"ctx-{get_run_context().parameters['n']}")
def context_report(n: int) -> dict[str, object]:
    """Returns what its run context says, as the code inside a run sees it."""
    context = get_run_context()
    return {
        "id": str(context.id),
        "name": context.name,
        "attempt": context.attempt,
        "parameters": context.parameters,
        "origin": context.origin,
        "task": context.task.name,
    }


@task
def slow_echo(value: object, seconds: float = 0.0) -> object:
    time.sleep(seconds)
    return value


@task
def total(values: list[int], offset: int = 0) -> int:
    return sum(values) + offset


@task
def describe(value: object) -> str:
    """Receives an upstream's exception when the upstream is wrapped in allow_failure."""
    return f"{type(value).__name__}: {value}"


@task(cache_policy=INPUTS)
def cached_square(x: object) -> object:
    """Leaves a mark each time it really runs."""
    Effect.objects.create(label=f"square-{x!r}")
    return x * x if isinstance(x, int) else x


@task(cache_policy=INPUTS, cache_expiration=timedelta(seconds=0.5))
def cached_briefly(x: int) -> int:
    Effect.objects.create(label=f"briefly-{x}")
    return x


@task(cache_policy=INPUTS - "noise")
def cached_ignoring_noise(x: int, noise: int) -> int:
    Effect.objects.create(label=f"noise-{x}-{noise}")
    return x


@task(cache_key_fn=lambda context, parameters: f"user-{parameters['user_id']}")
def cached_by_key_fn(user_id: int, attempt: int) -> int:
    Effect.objects.create(label=f"keyfn-{user_id}-{attempt}")
    return attempt


@task(cache_policy=RUN_ID)
def cached_per_run(x: int) -> int:
    Effect.objects.create(label=f"per-run-{x}")
    return x


@task(cache_policy=INPUTS + TASK_SOURCE)
def cached_by_source(x: int) -> int:
    Effect.objects.create(label=f"source-{x}")
    return x


@task(cache_policy=INPUTS)
def slow_cached(x: int, seconds: float) -> int:
    """For the race: two workers take runs with the same key at once."""
    time.sleep(seconds)
    Effect.objects.create(label=f"slow-cached-{x}")
    return x * 10


@task(persist_result=True)
def persisted(x: int) -> dict[str, int]:
    return {"x": x}


#: What transaction hooks and atomic tasks did, in order (tests clear it).
EVENTS: list[str] = []


@task(atomic=True, retries=1)
def atomic_write(label: str, failures: int = 0) -> int:
    """Writes a row, then fails ``failures`` times (counted outside the database)."""
    Effect.objects.create(label=label)
    EVENTS.append(f"attempt:{label}")
    if EVENTS.count(f"attempt:{label}") <= failures:
        raise ValueError(f"{label} fails")
    return Effect.objects.filter(label=label).count()


@task
def write_effect(label: str) -> str:
    Effect.objects.create(label=label)
    current = current_transaction()
    if current is not None:
        current.set(f"wrote:{label}", label)
    return label


@write_effect.on_commit
def _write_effect_committed(transaction: TaskTransaction) -> None:
    EVENTS.append("commit:" + ",".join(sorted(transaction._values)))


@write_effect.on_rollback
def _write_effect_rolled_back(transaction: TaskTransaction) -> None:
    EVENTS.append("rollback:" + ",".join(sorted(transaction._values)))


@task(atomic=True)
def slow_atomic(label: str, seconds: float) -> str:
    Effect.objects.create(label=label)
    time.sleep(seconds)
    return label


@task
def chatty(n: int) -> int:
    logger = get_run_logger()
    logger.info("hello %s", n)
    logger.warning("careful")
    logger.debug("not stored: below RUN_LOG_LEVEL")
    return n


@task(log_prints=True)
def printer(n: int) -> int:
    print("printed", n)
    print("left alone", file=sys.stderr)
    return n


@task
def drop_my_connection() -> None:
    """Ends this process's own Django database connection from the server side."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


import django  # noqa: E402

from . import manual, poison  # noqa: E402, F401  (registered like the rest)

if django.VERSION >= (6, 0):
    from . import standard  # noqa: F401  (django.tasks Tasks, run by our backend)


@task(unique=True)
def unique_by_arguments(n: int) -> int:
    return n


@task(unique=lambda parameters: f"invoice-{parameters['invoice']}", unique_for=30.0)
def send_invoice(invoice: int, copy: int = 0) -> int:
    return invoice


@task(tags={"limited"})
def limited_sleep(seconds: float, label: str) -> str:
    time.sleep(seconds)
    return label


@task(rate_limit="10/s")
def rate_limited(label: str) -> str:
    return label


@task(rate_limit="1/h")
def hourly(label: str) -> str:
    """tests/test_testing_helper.py: a rate that holds back every run after the first."""
    return label


@task(rate_limit="50/s")
def fifty_a_second(label: str) -> str:
    """tests/test_rates.py: a rate that binds, fast enough for a long backlog to show."""
    return label


@task(tags={"bench"}, rate_limit="999999999/s")
def limited_noop() -> None:
    """benchmarks/limits.py: a no-op under a tag limit and a rate limit that never bind."""


# -- async def tasks (django_tasks.aio; a worker runs them in its async lane) ---------------


@task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@task
async def async_record(label: str, seconds: float = 0.0) -> int:
    """Sleeps on the loop, then writes through Django's async ORM."""
    await asyncio.sleep(seconds)
    effect = await Effect.objects.acreate(label=label)
    return effect.pk


@task(retries=2)
async def async_fails_first(label: str) -> int:
    """Fails on its first attempt (it leaves a mark), succeeds on the next."""
    if not await Effect.objects.filter(label=label).aexists():
        await Effect.objects.acreate(label=label)
        raise ConnectionError(f"first attempt of {label}")
    return await Effect.objects.filter(label=label).acount()


@task(timeout_seconds=0.5)
async def async_too_slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@task(retries=3)
async def async_sleep(seconds: float, label: str) -> str:
    await asyncio.sleep(seconds)
    return label


@task
async def async_context() -> dict[str, object]:
    """What an async run sees of its run: the context and the run logger."""
    context = get_run_context()
    get_run_logger().info("async hello from %s", context.name)
    await asyncio.sleep(0)
    return {"id": str(context.id), "attempt": context.attempt, "origin": context.origin}


@task
async def async_sleep_io(seconds: float) -> None:
    """An I/O wait on the loop (benchmarks/async_runs.py)."""
    await asyncio.sleep(seconds)


@task
def sleep_io(seconds: float) -> None:
    """The same wait as a sync task (benchmarks/async_runs.py)."""
    time.sleep(seconds)


@task
def with_progress(steps: int, pause: float, message: str = "step") -> int:
    """Says how far it has got after each step (django_tasks.progress)."""
    for step in range(1, steps + 1):
        time.sleep(pause)
        set_progress(step, steps, f"{message} {step}")
    return steps


@task
def narrated(steps: int, pause: float) -> int:
    """Logs a line and says how far it has got at each step (the run page's live refresh)."""
    logger = get_run_logger()
    for step in range(1, steps + 1):
        time.sleep(pause)
        logger.info("finished step %d of %d at %.3f", step, steps, time.time())
        set_progress(step, steps, f"step {step}")
    return steps


@task
def chatty_progress(calls: int) -> int:
    """set_progress() in a tight loop: the writes are throttled."""
    for done in range(calls):
        set_progress(done, calls)
    set_progress(calls, calls, "done")
    return calls


HOSTILE_MARKDOWN = (
    "# Nightly report\n\n"
    "<script>alert('script')</script>\n\n"
    "<img src=x onerror=alert('img')> <b onclick=alert('b')>raw html</b>\n\n"
    "[click me](javascript:alert('link')) and [the site](https://example.com/)\n"
)


@task
def attach_artifacts(label: str) -> str:
    """Attaches one artifact of each kind, with hostile content (tests/test_artifacts.py)."""
    create_markdown_artifact(HOSTILE_MARKDOWN + label, key="nightly-report", description="<b>d")
    create_table_artifact([{"name": "<i>row</i>", "n": 1}, {"name": "two", "n": 2.5}])
    create_link_artifact("https://example.com/a?b=1&c=2", "<b>the link</b>")
    return label
