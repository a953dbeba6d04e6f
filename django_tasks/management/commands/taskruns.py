"""``manage.py taskruns purge``: task-run maintenance from the command line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tasks.retention import parse_age, purge
from django_tasks.states import FINAL_TYPES


class Command(BaseCommand):
    help = "Inspect and maintain task runs."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True)
        purge_parser = verbs.add_parser("purge", help="Delete finished runs older than an age.")
        purge_parser.add_argument(
            "--older-than", required=True, help="Age such as 7d, 12h, 30m (finished before)."
        )
        purge_parser.add_argument(
            "--state",
            action="append",
            choices=sorted(FINAL_TYPES),
            help="Final state to purge (repeatable; default: every final state).",
        )
        purge_parser.add_argument("--batch-size", type=int, default=10_000)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = parse_age(options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        deleted = purge(age, options["state"] or FINAL_TYPES, batch_size=options["batch_size"])
        self.stdout.write(f"Deleted {deleted} runs finished more than {options['older_than']} ago.")
