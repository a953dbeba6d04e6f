"""Run logs: ``get_run_logger()`` inside a task, stored per run, in batches.

Records of the run logger are ordinary :mod:`logging` records - they reach the project's
handlers like any other - and a handler of ours also queues them, with the run's id, for the
batched writer of :mod:`django_tasks.recorder` (one statement per batch, whatever the origin
of the run). The admin, API and CLI read them from ``TaskRunLog``.

``@task(log_prints=True)`` sends the task's ``print()`` calls to its run logger instead of
standard output (``print`` to another file is left alone). ``print`` is replaced once, the
first time a task with that option is defined; the replacement checks the current run's
option on every call, so other code and other threads print as before.
"""

from __future__ import annotations

import builtins
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from .conf import task_settings
from .context import _current as _current_run
from .context import get_run_context

__all__ = ["RUN_LOGGER", "RunLogHandler", "get_run_logger", "install_print_capture"]

#: The run logger's name; ``get_run_logger("x")`` gives ``django_tasks.run.x``.
RUN_LOGGER = "django_tasks.run"


class RunLogHandler(logging.Handler):
    """Queues records that carry a ``run_id`` for the batched writer."""

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "run_id", None)
        if run_id is None:
            return
        from .recorder import writer

        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            writer.put_log(
                {
                    "run_id": run_id,
                    "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
                    "level": record.levelno,
                    "logger": record.name,
                    "message": message,
                }
            )
        except Exception:  # a log call must never break the task
            self.handleError(record)


_installed = threading.Lock()
_handler: RunLogHandler | None = None


def _run_logger(name: str | None) -> logging.Logger:
    global _handler
    base = logging.getLogger(RUN_LOGGER)
    with _installed:
        if _handler is None:
            _handler = RunLogHandler()
            base.addHandler(_handler)
            if base.level == logging.NOTSET:
                base.setLevel(task_settings().RUN_LOG_LEVEL)
    return base if name is None else base.getChild(name)


def get_run_logger(name: str | None = None) -> logging.LoggerAdapter[logging.Logger]:
    """The logger of the run whose code is executing: its records are stored with the run.

    Raises :class:`~django_tasks.context.MissingContextError` outside a run."""
    context = get_run_context()
    extra = {"run_id": str(context.id), "task_name": context.task.name}
    return logging.LoggerAdapter(_run_logger(name), extra)


_original_print = builtins.print
_print_lock = threading.Lock()


def _print(*args: Any, **kwargs: Any) -> None:
    context = _current_run.get()
    target = kwargs.get("file")
    if (
        context is not None
        and context.task.options.log_prints
        and (target is None or target is sys.stdout)
    ):
        sep = kwargs.get("sep")
        get_run_logger().info((" " if sep is None else sep).join(str(a) for a in args))
        return
    _original_print(*args, **kwargs)


def install_print_capture() -> None:
    """Replace ``print`` (once) so that tasks with ``log_prints=True`` log what they print."""
    with _print_lock:
        if builtins.print is not _print:
            builtins.print = _print
