"""``manage.py taskruns``: list, inspect, follow, cancel, retry and purge task runs; list the
queues with ready runs (and warn about one that no live worker serves).

Readable tables on a terminal, ``--json`` for scripts; an unknown run id is an error
(exit code 1) with a message that says so.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tasks import cli
from django_tasks.actions import RunNotFound, cancel_run, retry_run
from django_tasks.api import queries
from django_tasks.conf import task_settings
from django_tasks.limits.listing import limit_rows, remove_limit, set_limit
from django_tasks.migrated import NotMigrated, check_migrated
from django_tasks.retention import parse_age, purge
from django_tasks.schedules.listing import schedule_rows
from django_tasks.states import FINAL_TYPES, StateType, is_final

#: Bounds of --batch-size (purge) and --limit (ls): beyond them PostgreSQL's LIMIT overflows,
#: and no terminal wants more rows.
MAX_BATCH, MAX_LIMIT = 1_000_000, 100_000


class Command(BaseCommand):
    help = "Inspect and maintain task runs."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True)
        ls = verbs.add_parser("ls", help="List runs, newest first.")
        ls.add_argument("--state", action="append", default=[], choices=list(StateType.values))
        ls.add_argument("--task", help="Task name.")
        ls.add_argument("--queue")
        ls.add_argument("--limit", type=int, default=20)
        ls.add_argument("--json", action="store_true")
        queues = verbs.add_parser(
            "queues", help="Queues with ready runs, and whether a live worker serves each."
        )
        queues.add_argument("--json", action="store_true")
        schedules = verbs.add_parser("schedules", help="Periodic schedules and their next tick.")
        schedules.add_argument("--json", action="store_true")
        limits = verbs.add_parser(
            "limits",
            help="Concurrency and rate limits: list, 'set NAME [N] [--rate 100/m]', 'rm NAME'.",
        )
        limits.add_argument("action", nargs="?", choices=["ls", "set", "rm"], default="ls")
        limits.add_argument("name", nargs="?", help="The tag (or, with --queue, the queue).")
        limits.add_argument("concurrency", nargs="?", type=int, help="Runs at once.")
        limits.add_argument("--rate", default="", help="Runs started per period: 100/m, 5/s.")
        limits.add_argument("--queue", action="store_true", help="NAME is a queue, not a tag.")
        limits.add_argument("--json", action="store_true")
        for verb, text in [
            ("inspect", "A run: its state, history, previews, traceback, dependencies."),
            ("logs", "A run's log lines."),
            ("cancel", "Cancel a run."),
            ("retry", "Run a finished background run again (a new run)."),
        ]:
            sub = verbs.add_parser(verb, help=text)
            sub.add_argument("run_id")
            sub.add_argument("--json", action="store_true")
            if verb == "logs":
                sub.add_argument("--follow", "-f", action="store_true", help="Until it ends.")
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
        purge_parser.add_argument(
            "--max-rate",
            type=float,
            default=None,
            help="At most this many runs deleted a second, on average (beside busy workers).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            check_migrated(task_settings().DATABASE_ALIAS)
        except NotMigrated as exc:
            raise CommandError(str(exc)) from None
        verb = options["verb"]
        if verb == "purge":
            self._purge(options)
            return
        if verb in ("ls", "queues", "schedules", "limits"):
            getattr(self, f"_{verb}")(options)
            return
        try:
            run_id = cli.parse_run_id(options["run_id"])
            getattr(self, f"_{verb}")(run_id, options)
        except (ValueError, RunNotFound) as exc:
            raise CommandError(str(exc)) from None

    def _out(self, data: Any, text: str, options: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(data, indent=2) if options["json"] else text)

    def _ls(self, options: dict[str, Any]) -> None:
        if not 1 <= options["limit"] <= MAX_LIMIT:
            raise CommandError(f"--limit must be from 1 to {MAX_LIMIT:,}.")
        rows = cli.list_runs(
            states=options["state"],
            task=options["task"],
            queue=options["queue"],
            limit=options["limit"],
        )
        columns = ["id", "name", "state_name", "queue", "attempts", "created", "finished"]
        self._out(rows, cli.table(rows, columns) if rows else "No runs.", options)
        if not options["json"]:
            self._warn_unserved(queries.queue_depths())

    def _queues(self, options: dict[str, Any]) -> None:
        rows = queries.queue_depths()
        columns = ["queue", "ready", "oldest_ready", "workers"]
        self._out(
            [cli._plain(row) for row in rows],
            cli.table(rows, columns) if rows else "No ready runs.",
            options,
        )
        if not options["json"]:
            self._warn_unserved(rows)

    def _schedules(self, options: dict[str, Any]) -> None:
        rows = schedule_rows()
        columns = ["name", "task_name", "when", "enabled", "next_tick", "last_tick", "last_error"]
        self._out(
            [cli._plain(row) for row in rows],
            cli.table(rows, columns) if rows else "No schedules.",
            options,
        )

    def _limits(self, options: dict[str, Any]) -> None:
        action, name = options["action"], options["name"]
        scope = "queue" if options["queue"] else "tag"
        if action != "ls" and not name:
            raise CommandError(f"limits {action} needs a NAME (a tag, or a queue with --queue).")
        if action == "set":
            try:
                limit = set_limit(scope, name, options["concurrency"], options["rate"])
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from None
            self.stdout.write(f"Set: {limit}")
        elif action == "rm":
            if not remove_limit(scope, name):
                raise CommandError(f"No limit on {scope} {name!r}.")
            self.stdout.write(f"Removed the limit on {scope} {name!r}.")
        rows = limit_rows()
        columns = ["scope", "name", "concurrency", "rate", "holding", "waiting"]
        if action == "ls":
            self._out(rows, cli.table(rows, columns) if rows else "No limits.", options)

    def _warn_unserved(self, queues: list[dict[str, Any]]) -> None:
        """A queue with ready runs and no live worker: the usual forgotten ``--queues``."""
        for queue in queues:
            if queue["unserved"]:
                self.stderr.write(
                    f"Warning: queue {queue['queue']!r} has {queue['ready']} ready run(s) and "
                    f"no live worker serves it: start one with --queues {queue['queue']} (or "
                    f"add it to a worker's --queues)."
                )

    def _inspect(self, run_id: Any, options: dict[str, Any]) -> None:
        details = cli.run_details(run_id)
        if details is None:
            raise RunNotFound(f"No task run {run_id}.")
        lines = [f"{key:>18}: {cli._cell(details[key])}" for key in cli.LIST_FIELDS]
        lines += [f"{'message':>18}: {details['state_message'] or '-'}"]
        for key in ("parameters_preview", "result_preview"):
            lines.append(f"{key:>18}: {json.dumps(details[key])}")
        for key in ("upstream", "downstream", "retried_by"):
            lines.append(f"{key:>18}: {', '.join(details[key]) or '-'}")
        lines += ["", "History:", cli.table(details["history"], ["timestamp", "name", "message"])]
        if details["traceback"]:
            lines += ["", details["traceback"].rstrip()]
        self._out(details, "\n".join(lines), options)

    def _logs(self, run_id: Any, options: dict[str, Any]) -> None:
        """Print the lines; with ``--follow``, keep printing new ones - and the run's
        progress each time it changes - until the run ends."""
        if cli.run_state(run_id) is None:
            raise RunNotFound(f"No task run {run_id}.")
        last, ended, shown = 0, False, None
        while True:
            for line in cli.run_logs(run_id, after=last):
                last = line["id"]
                self.stdout.write(json.dumps(line) if options["json"] else cli.format_log(line))
            if not options["follow"] or ended:
                return
            row = cli.run_state_and_progress(run_id)
            progress = row[1] if row else None
            if progress is not None and progress != shown:
                shown = progress
                text = cli.format_progress(progress)
                self.stdout.write(json.dumps({"progress": progress}) if options["json"] else text)
            # One more round after the end: the last lines are written in batches.
            ended = row is None or is_final(row[0])
            time.sleep(0.5)

    def _cancel(self, run_id: Any, options: dict[str, Any]) -> None:
        state = cancel_run(run_id)
        result = {"id": str(run_id), "state_type": state.value if state else None}
        text = f"Run {run_id}: {state.value}." if state else f"Run {run_id} had already finished."
        self._out(result, text, options)

    def _retry(self, run_id: Any, options: dict[str, Any]) -> None:
        new_id = retry_run(run_id)
        self._out({"id": str(new_id), "retry_of": str(run_id)}, f"New run {new_id}.", options)

    def _purge(self, options: dict[str, Any]) -> None:
        try:
            age = parse_age(options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not 1 <= options["batch_size"] <= MAX_BATCH:
            raise CommandError(f"--batch-size must be from 1 to {MAX_BATCH:,}.")
        rate = options["max_rate"]
        if rate is not None and not 1 <= rate <= 1e9:  # NaN and inf fail too
            raise CommandError("--max-rate must be from 1 to 1,000,000,000 runs a second.")
        deleted = purge(
            age, options["state"] or FINAL_TYPES, batch_size=options["batch_size"], max_rate=rate
        )
        self.stdout.write(f"Deleted {deleted} runs finished more than {options['older_than']} ago.")
