"""``manage.py embeddedpg stop``: stop the development-only embedded PostgreSQL server.

The server starts by itself whenever the settings load without ``DATABASE_URL`` and then keeps
running for the other processes of the demo and the tests; this stops it.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from demo_project.database import EMBEDDED_DATA_DIR, stop_embedded


class Command(BaseCommand):
    help = "Stop the embedded PostgreSQL server used when DATABASE_URL is unset."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["stop"])

    def handle(self, *args: Any, **options: Any) -> None:
        if stop_embedded():
            self.stdout.write(
                f"Stopped the embedded PostgreSQL server (data in {EMBEDDED_DATA_DIR})."
            )
        else:
            self.stdout.write(
                f"No embedded PostgreSQL server was running (data directory {EMBEDDED_DATA_DIR})."
            )
