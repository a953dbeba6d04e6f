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
from .storable import describe_exception, format_traceback, storable_message, storable_text

__all__ = [
    "RUN_LOGGER",
    "RunIdFilter",
    "RunLogHandler",
    "configure_worker_logging",
    "for_run",
    "get_run_logger",
    "install_print_capture",
]

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
            writer.put_log(
                {
                    "run_id": run_id,
                    "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
                    "level": record.levelno,
                    "logger": storable_text(record.name, 255),
                    "message": storable_message(_message(record)),
                }
            )
        except Exception:  # a log call must never break the task
            self.handleError(record)


def _message(record: logging.LogRecord) -> str:
    """The record's text; a line whose arguments cannot be formatted is kept with the reason
    (a stored line is never lost to a bad argument)."""
    try:
        message = record.getMessage()
    except Exception as exc:
        message = f"{record.msg} [could not format its arguments: {describe_exception(exc)}]"
    if record.exc_info and record.exc_info[1] is not None:
        message += "\n" + format_traceback(record.exc_info[1]).rstrip("\n")
    return message


class RunIdFilter(logging.Filter):
    """Gives every record a ``task_run_id``: the run this thread is executing (the task's own
    log lines and ours alike), else the run a run-logger record belongs to, else ``-``.

    ``runtaskworker`` puts it on its own handler so that each line of a worker names its run;
    add it to a handler in ``LOGGING`` (``"filters": {"run": {"()":
    "django_tasks.logs.RunIdFilter"}}``) to get ``%(task_run_id)s`` in your own format.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_run_id"):
            context = _current_run.get()
            run_id = context.id if context is not None else getattr(record, "run_id", None)
            record.task_run_id = str(run_id) if run_id is not None else "-"
        return True


def for_run(run_id: Any) -> dict[str, str]:
    """``extra=`` for a log line about a run outside its execution (claims, retries, kills)."""
    return {"task_run_id": str(run_id)}


#: Each worker line names the process and the run it concerns (``-`` for none).
WORKER_LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s [run %(task_run_id)s] %(message)s"


def configure_worker_logging(level: int) -> None:
    """The worker's logging (supervisor and children): ``django_tasks`` at ``level``, to
    stderr with the run id on each line - unless the project's ``LOGGING`` configured it."""
    log = logging.getLogger("django_tasks")
    log.setLevel(level)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(RunIdFilter())
        handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
        log.addHandler(handler)


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
