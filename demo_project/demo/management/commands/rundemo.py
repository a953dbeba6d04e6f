"""``manage.py rundemo``: migrate, create a demo admin user, start a worker and the web server."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from demo_project.database import describe_database


class Command(BaseCommand):
    help = "Run the demo: web site and task worker (development only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--concurrency", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        # Ctrl-C stops the demo (the server, then the worker), even when this process was
        # started with SIGINT ignored - as a background job of a non-interactive shell is,
        # and as any process it starts would then be.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        call_command("migrate", interactive=False, verbosity=0)
        users = get_user_model()
        if not users.objects.filter(username="admin").exists():
            users.objects.create_superuser("admin", "admin@example.com", "admin")
        self.stdout.write(describe_database())
        self.stdout.write("Demo admin login: admin / admin (development only)")
        worker = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runtaskworker",
                "--concurrency",
                str(options["concurrency"]),
                "--verbosity",
                "2",
            ]
        )
        try:
            call_command("runserver", options["addrport"], use_reloader=False)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
