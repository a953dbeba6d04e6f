"""``manage.py runtaskworker``: parse options, hand over to the worker supervisor."""

from __future__ import annotations

import logging
import math
import multiprocessing
import sys
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_tasks.checks import NOT_FOR_WORKERS, checks_without
from django_tasks.conf import task_settings
from django_tasks.logs import configure_worker_logging
from django_tasks.migrated import NotMigrated, check_migrated
from django_tasks.tasks import check_queue
from django_tasks.worker import Supervisor
from django_tasks.worker.process import DEFAULT_ASYNC_CONCURRENCY
from django_tasks.worker.reloading import CodeWatcher, Reloader, is_reloaded_worker, wants_reload
from django_tasks.worker.supervisor import WorkerBootError


def _queues(value: str) -> list[str]:
    try:
        return [check_queue(q.strip()) for q in value.split(",") if q.strip()]
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


#: The most worker processes one pool starts (each holds about three connections: beyond
#: this, more hosts, not more processes), async runs per process, and runs per claim.
MAX_PROCESSES, MAX_ASYNC_CONCURRENCY, MAX_BATCH = 256, 10_000, 10_000


def _positive(option: str, value: float | None, most: int | None = None) -> None:
    if value is not None and value < 1:
        raise CommandError(f"{option} must be at least 1.")
    if value is not None and most is not None and value > most:
        raise CommandError(f"{option} must be at most {most}, got {value}.")


def _seconds(option: str, value: float | None, *, zero: bool) -> None:
    """A number of seconds: finite, not negative (and not 0 unless ``zero``)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise CommandError(f"{option} must be a finite number of seconds, {least}; got {value}.")


def _refuse_inside_a_new_worker_process() -> None:
    """Worker processes are new interpreters that import ``__main__`` again (multiprocessing
    *spawn*). A ``manage.py`` that runs its command at import, without the usual
    ``if __name__ == "__main__":`` guard, would start a second supervisor inside each worker
    process: say so, instead of multiprocessing's bootstrapping error."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise CommandError(
            "runtaskworker started again inside one of its own worker processes: the script "
            "that runs manage.py commands (usually manage.py) must call them only under "
            '`if __name__ == "__main__":`, because each worker process imports it again.'
        )


def _check_metrics(port: int | None) -> None:
    if port is None:
        return
    if not 0 < port < 65536:
        raise CommandError("--metrics-port must be between 1 and 65535.")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise CommandError(
            "--metrics-port needs prometheus-client: pip install django-taskruns[metrics]"
        ) from None


def _metrics_server(port: int | None, addr: str) -> Callable[..., Any] | None:
    if port is None:
        return None
    from django_tasks.worker.metrics import metrics_server  # needs prometheus-client

    return metrics_server(port, addr)


class Command(BaseCommand):
    help = "Run background task runs from the PostgreSQL topic until SIGTERM/SIGINT."

    def check(self, *args: Any, **kwargs: Any) -> None:
        """Every system check but those of the URLs and templates a worker never serves."""
        with checks_without(NOT_FOR_WORKERS):
            super().check(*args, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues",
            default=None,
            help="Comma-separated queues, in order of preference (default: DEFAULT_QUEUE).",
        )
        parser.add_argument(
            "--concurrency", type=int, default=None, help="Worker processes (default: CPUs)."
        )
        parser.add_argument(
            "--async-concurrency",
            type=int,
            default=DEFAULT_ASYNC_CONCURRENCY,
            help=(
                "Runs of async def tasks each process runs at once on its event loop "
                f"(default {DEFAULT_ASYNC_CONCURRENCY})."
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Runs a process claims at once (default: adaptive, 1 to 100 by task duration).",
        )
        parser.add_argument(
            "--max-tasks-per-child",
            type=int,
            default=None,
            help="Replace a worker process after it ran this many runs.",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=30.0,
            help="Seconds running runs get to finish after SIGTERM before they are killed.",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="Seconds between polls when no NOTIFY arrives.",
        )
        parser.add_argument(
            "--burst", action="store_true", help="Exit 0 once no run is ready (for scripts)."
        )
        reload = parser.add_mutually_exclusive_group()
        reload.add_argument(
            "--reload",
            action="store_true",
            default=None,
            help="Restart the pool (after its runs finish) when code changes (default: DEBUG).",
        )
        reload.add_argument(
            "--noreload",
            action="store_false",
            dest="reload",
            help="Do not restart on code changes, even with DEBUG on.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="Serve Prometheus metrics of this pool (and of the tables) on this port.",
        )
        parser.add_argument(
            "--metrics-addr",
            default="127.0.0.1",
            help="Address for --metrics-port (default 127.0.0.1; 0.0.0.0 in a container).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        _refuse_inside_a_new_worker_process()
        _positive("--concurrency", options["concurrency"], MAX_PROCESSES)
        _positive("--async-concurrency", options["async_concurrency"], MAX_ASYNC_CONCURRENCY)
        _positive("--batch-size", options["batch_size"], MAX_BATCH)
        _positive("--max-tasks-per-child", options["max_tasks_per_child"])
        _seconds("--shutdown-timeout", options["shutdown_timeout"], zero=True)
        _seconds("--poll-interval", options["poll_interval"], zero=False)
        _check_metrics(options["metrics_port"])
        queues = _queues(options["queues"]) if options["queues"] else None
        try:
            check_migrated(task_settings().DATABASE_ALIAS)
        except NotMigrated as exc:
            raise CommandError(str(exc)) from None
        self._configure_logging(options["verbosity"])
        reload = wants_reload(options["reload"], burst=options["burst"])
        if reload and not is_reloaded_worker():
            # This process only starts the worker again and again: it holds no connection.
            connections.close_all()
            code = Reloader(burst=options["burst"]).run()
            if code:
                sys.exit(code)
            return
        supervisor = Supervisor(
            queues,
            concurrency=options["concurrency"],
            async_concurrency=options["async_concurrency"],
            batch_size=options["batch_size"],
            poll_interval=options["poll_interval"],
            max_tasks_per_child=options["max_tasks_per_child"],
            shutdown_timeout=options["shutdown_timeout"],
            burst=options["burst"],
            serve_metrics=_metrics_server(options["metrics_port"], options["metrics_addr"]),
            watcher=CodeWatcher() if reload else None,
        )
        try:
            code = supervisor.run()
        except WorkerBootError as exc:
            raise CommandError(str(exc)) from None
        if code:
            sys.exit(code)

    def _configure_logging(self, verbosity: int) -> None:
        """0: errors only; 1: start, stop and problems; 2: every run, with its id."""
        configure_worker_logging({0: logging.ERROR, 1: logging.INFO}.get(verbosity, logging.DEBUG))
