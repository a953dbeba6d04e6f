"""``runtaskworker`` that follows your edits: restart the pool when code or settings change.

With ``DEBUG = True`` (or ``--reload``), ``runtaskworker`` runs as two processes, the way
``runserver`` does:

* the **reloader** (the process you started) holds no connection and runs no task: it starts
  the worker - the same command line, in a new interpreter - and starts it again each time the
  worker exits with :data:`EXIT_RELOAD`. A stop signal (Ctrl-C, SIGTERM) is passed on to the
  worker, which stops as it always does; the reloader then exits 0. When the worker fails (a
  syntax error in a tasks module, the database away while it starts, a ``kill -9``), the
  reloader starts it again at the next change of a watched file, or after a pause that
  doubles from :data:`RETRY_FIRST` to :data:`RETRY_MOST` seconds - whichever comes first;
* the **worker** (the supervisor and its worker processes) runs as without ``--reload``, and a
  thread of its supervisor watches the files (:mod:`.watched_files`: every module it imported
  and the ``*.py`` files of the project's own directories) with Django's own autoreloader
  (Watchman when it runs, else the files' times once a second). At the first change the pool
  stops as for SIGTERM - running runs finish (for up to ``--shutdown-timeout``; a longer run
  is stopped and retried as its ``retries`` allow), claimed runs not started are handed back -
  and the supervisor exits with :data:`EXIT_RELOAD`.

Signals: a stop sent to the process group reaches both processes. The reloader passes on the
*other* signal (SIGINT for SIGTERM, SIGTERM for SIGINT), which the worker counts as the same
request (:mod:`.stopping`), so one Ctrl-C or one ``kill -TERM -<group>`` stops gracefully and a
second one stops at once, as without the reloader. The same request reaching the reloader by
a second signal (the demo's ``rundemo`` or honcho sends SIGTERM after a Ctrl-C to the group)
is not passed on.

Edits saved while the worker starts are not missed: the reloader snapshots the files' times
before it starts the worker and hands the snapshot over; the worker compares with it.

Never in production by accident: reloading is on only when asked (``--reload``) or when
``DEBUG`` is on and the worker is not a ``--burst`` run; the worker says so when it starts.
A worker whose reloader is gone (``kill -9``) stops by itself instead of running unwatched.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.utils import autoreload

from . import watched_files
from .stopping import DUPLICATE, StopRequests
from .watched_files import Snapshot

__all__ = [
    "EXIT_RELOAD",
    "RELOADED_ENV",
    "RETRY_FIRST",
    "RETRY_MOST",
    "CodeWatcher",
    "Reloader",
    "is_reloaded_worker",
    "wants_reload",
]

logger = logging.getLogger("django_tasks.worker")

#: The exit code of a worker that stopped for a code change (Django's autoreloader uses 3).
EXIT_RELOAD = 3
#: Set in the environment of the worker a reloader starts: the reloader's pid.
RELOADED_ENV = "DJANGO_TASKS_RELOADED_WORKER"
#: Where the reloader's snapshot of the files' times is (a file it removes after).
SNAPSHOT_ENV = "DJANGO_TASKS_RELOAD_SNAPSHOT"
#: Seconds before a worker that failed is started again without a change (then doubled).
RETRY_FIRST, RETRY_MOST = 5.0, 60.0
#: A worker that ran this long was healthy: the next failure waits RETRY_FIRST again.
HEALTHY_AFTER = 60.0
#: The signal passed on for each stop signal the reloader gets (see the module docstring).
PASSED_ON = {signal.SIGTERM: signal.SIGINT, signal.SIGINT: signal.SIGTERM}


def wants_reload(option: bool | None, *, burst: bool) -> bool:
    """``--reload`` / ``--noreload`` when given; otherwise on with ``DEBUG``, off for
    ``--burst`` (a script's run that ends by itself has nothing to follow)."""
    if option is not None:
        return option
    return bool(settings.DEBUG) and not burst


def is_reloaded_worker() -> bool:
    """True in the worker process a :class:`Reloader` started."""
    return os.environ.get(RELOADED_ENV, "").isdigit()


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"stopped with exit code {code}: see the error above"


class CodeWatcher:
    """The worker's side: threads that call ``on_change`` once, at the first change of a
    watched file - or ``on_orphaned`` when the reloader that started this worker is gone."""

    #: Seconds after the start at which the files are compared with the snapshots: the
    #: autoreloader's first look takes their times as they are then.
    SWEEPS = (1.0, 3.0)

    def __init__(self) -> None:
        given = os.environ.get(RELOADED_ENV, "")
        self.parent_pid = int(given) if given.isdigit() else os.getppid()
        self.files = watched_files.project_files(watched_files.project_dirs())
        # The reloader's snapshot (before this process started) first, then this process's.
        handed = os.environ.get(SNAPSHOT_ENV)
        self.snapshots: tuple[Snapshot, ...] = (
            watched_files.load_snapshot(handed),
            watched_files.take(self.files),
        )
        if handed:  # read: gone, whatever becomes of the reloader
            watched_files.remove(Path(handed))
        self._on_change: Callable[[str], None] | None = None
        self._reloader: autoreload.BaseReloader | None = None
        self._fired = threading.Event()

    def start(self, on_change: Callable[[str], None], on_orphaned: Callable[[], None]) -> None:
        """Start watching (after the supervisor's fork server started: it must fork while no
        other thread runs)."""
        self._on_change = on_change
        reloader = self._reloader = autoreload.get_reloader()
        reloader.extra_files.update(self.files)  # watched beside the imported modules

        def changed(sender: Any, file_path: Path, **kwargs: Any) -> bool:
            self._changed(str(file_path))
            return True  # handled: Django's own reaction (sys.exit(3) in that thread) is not

        autoreload.file_changed.connect(changed, sender=reloader, weak=False)
        for target, args, name in (
            (reloader.run, (threading.main_thread(),), "django_tasks-code-watcher"),
            (self._sweep_and_watch_parent, (on_orphaned,), "django_tasks-reloader-watcher"),
        ):
            threading.Thread(target=target, args=args, name=name, daemon=True).start()
        logger.info(
            "Reloading on code changes (%s; --noreload to turn off)", type(reloader).__name__
        )

    def stop(self) -> None:
        self._fired.set()
        if self._reloader is not None:
            self._reloader.stop()

    def _changed(self, path: str) -> None:
        if self._fired.is_set() or self._on_change is None:
            return
        self._fired.set()
        self._on_change(path)

    def _sweep_and_watch_parent(self, on_orphaned: Callable[[], None]) -> None:
        started = time.monotonic()
        sweeps = list(self.SWEEPS)
        while not self._fired.wait(0.5):
            if sweeps and time.monotonic() - started >= sweeps[0]:
                sweeps.pop(0)
                path = watched_files.changed_file(self.files, *self.snapshots)
                if path is not None:
                    self._changed(path)
                    return
            if os.getppid() != self.parent_pid:
                self._fired.set()
                on_orphaned()
                return


class Reloader:
    """The reloader's side: start the worker, start it again after a code change."""

    def __init__(self, args: list[str] | None = None, *, burst: bool = False) -> None:
        self.args = autoreload.get_child_arguments() if args is None else args
        self.burst = burst
        self.child: subprocess.Popen[bytes] | None = None
        self.dirs = watched_files.project_dirs()
        self._stopping: int | None = None  # the first stop signal received
        self._requests = StopRequests()

    def run(self) -> int:
        """Run workers until stopped (0), or until a ``--burst`` worker ends (its code)."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in PASSED_ON}
        retry = RETRY_FIRST
        try:
            while self._stopping is None:
                files = watched_files.project_files(self.dirs)  # new files since, too
                snapshot = watched_files.take(files)
                if self._stopping is not None:  # asked to stop meanwhile: start nothing
                    return 0
                began = time.monotonic()
                code = self._run_worker(snapshot)
                if self._stopping is not None:
                    return 0 if code in (0, EXIT_RELOAD) or code < 0 else code
                if code == EXIT_RELOAD:
                    logger.info("Starting the worker again with the changed code")
                    continue
                if code == 0 or self.burst:
                    return code
                if time.monotonic() - began > HEALTHY_AFTER:
                    retry = RETRY_FIRST
                logger.error(
                    "The worker %s: it starts again when a file of the project changes, or "
                    "in %.0f s (Ctrl-C to quit)",
                    _how_it_ended(code),
                    retry,
                )
                self._wait_for_change(files, snapshot, retry)
                retry = min(retry * 2, RETRY_MOST)
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run_worker(self, snapshot: Snapshot) -> int:
        handle, name = tempfile.mkstemp(prefix="django_tasks-reload-", suffix=".json")
        os.close(handle)
        path = Path(name)
        watched_files.save_snapshot(snapshot, path)
        env = {**os.environ, RELOADED_ENV: str(os.getpid()), SNAPSHOT_ENV: str(path)}
        try:
            self.child = subprocess.Popen(self.args, env=env, close_fds=False)
            if self._stopping is not None:  # asked to stop while it was being started
                self.child.send_signal(PASSED_ON[signal.Signals(self._stopping)])
            return self.child.wait()
        finally:
            self.child = None
            watched_files.remove(path)

    def _wait_for_change(self, files: list[Path], snapshot: Snapshot, seconds: float) -> None:
        """Until a watched file differs from ``snapshot``, ``seconds`` pass or a stop."""
        deadline = time.monotonic() + seconds
        while self._stopping is None and time.monotonic() < deadline:
            path = watched_files.changed_file(files, snapshot)
            if path is not None:
                logger.info("%s changed", path)
                return
            time.sleep(0.5)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Pass the stop on to the worker as the other stop signal (see the module
        docstring), or stop waiting for a change. The same request by another signal (a
        process manager's SIGTERM to this process after a Ctrl-C to the group) is not passed
        on: the worker would count it as a second request and stop its runs at once."""
        if self._requests.add(signum) == DUPLICATE:
            return
        if self._stopping is None:
            self._stopping = signum
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(PASSED_ON[signal.Signals(signum)])
