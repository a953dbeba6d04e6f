"""``manage.py runtaskworker``: parse options, hand over to :class:`django_tasks.worker.Worker`."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tasks.tasks import check_queue
from django_tasks.worker import Worker


def _queues(value: str) -> list[str]:
    try:
        return [check_queue(q.strip()) for q in value.split(",") if q.strip()]
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = "Run background task runs from the PostgreSQL topic until SIGTERM/SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues",
            default=None,
            help="Comma-separated queues to take runs from (default: DJANGO_TASKS DEFAULT_QUEUE).",
        )
        parser.add_argument(
            "--concurrency", type=int, default=1, help="Runs executed at once (threads)."
        )
        parser.add_argument(
            "--batch-size", type=int, default=None, help="Runs claimed per transaction."
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

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1.")
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        self._configure_logging(options["verbosity"])
        worker = Worker(
            _queues(options["queues"]) if options["queues"] else None,
            concurrency=options["concurrency"],
            batch_size=options["batch_size"],
            poll_interval=options["poll_interval"],
            burst=options["burst"],
        )
        worker.run()

    def _configure_logging(self, verbosity: int) -> None:
        """0: errors only; 1: start, stop and problems; 2: every run, with its id."""
        log = logging.getLogger("django_tasks")
        log.setLevel({0: logging.ERROR, 1: logging.INFO}.get(verbosity, logging.DEBUG))
        if not log.handlers:  # the project's LOGGING did not configure us: print to stderr
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
