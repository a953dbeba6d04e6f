"""``runtaskworker`` that follows your edits: restart the pool when code or settings change.

With ``DEBUG = True`` (or ``--reload``), ``runtaskworker`` runs as two processes, the way
``runserver`` does:

* the **reloader** (the process you started) holds no connection and runs no task: it starts
  the worker - the same command line, in a new interpreter - and starts it again each time the
  worker exits with :data:`EXIT_RELOAD`. A stop signal (Ctrl-C, SIGTERM) is passed on to the
  worker, which stops as it always does; the reloader then exits with the worker's code. When
  the worker fails (a syntax error in a tasks module, broken settings), the reloader waits for
  the next change of a file it knows and starts it again, as ``runserver`` does;
* the **worker** (the supervisor and its worker processes) runs as without ``--reload``, and a
  thread of its supervisor watches every module it imported (settings, models, tasks modules,
  URL configurations; templates and translations as Django's autoreloader adds them) with
  Django's own autoreloader (Watchman when it runs, else polling the files each second). At
  the first change the pool stops as for SIGTERM - running runs finish (for up to
  ``--shutdown-timeout``), claimed runs not started are handed back, nothing is lost - and the
  supervisor exits with :data:`EXIT_RELOAD`.

Never in production by accident: reloading is on only when asked (``--reload``) or when
``DEBUG`` is on and the worker is not a ``--burst`` run; the worker says so when it starts.
A worker whose reloader is gone (``kill -9``) stops by itself instead of running unwatched.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.utils import autoreload

__all__ = [
    "EXIT_RELOAD",
    "RELOADED_ENV",
    "CodeWatcher",
    "Reloader",
    "is_reloaded_worker",
    "wants_reload",
]

logger = logging.getLogger("django_tasks.worker")

#: The exit code of a worker that stopped for a code change (Django's autoreloader uses 3).
EXIT_RELOAD = 3
#: Set in the environment of the worker a reloader starts.
RELOADED_ENV = "DJANGO_TASKS_RELOADED_WORKER"


def wants_reload(option: bool | None, *, burst: bool) -> bool:
    """``--reload`` / ``--noreload`` when given; otherwise on with ``DEBUG``, off for
    ``--burst`` (a script's run that ends by itself has nothing to follow)."""
    if option is not None:
        return option
    return bool(settings.DEBUG) and not burst


def is_reloaded_worker() -> bool:
    """True in the worker process a :class:`Reloader` started."""
    return os.environ.get(RELOADED_ENV) == "1"


def changed_since(moment: float) -> Path | None:
    """A module file of this process written after ``moment`` (a ``time.time()``), if any."""
    for path in autoreload.iter_all_python_module_files():
        try:
            if path.stat().st_mtime > moment:
                return path
        except OSError:
            continue
    return None


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"stopped with exit code {code}: fix the error above"


def _file_watcher(on_change: Callable[[Path], None]) -> autoreload.BaseReloader:
    """Django's autoreloader (Watchman or polling), reporting changes to ``on_change``
    instead of exiting the process."""
    reloader = autoreload.get_reloader()

    def changed(sender: Any, file_path: Path, **kwargs: Any) -> bool:
        on_change(Path(file_path))
        return True  # handled: Django's own reaction (sys.exit(3) in this thread) is not wanted

    # Connected for this reloader only (weak=False: the closure has no other reference).
    autoreload.file_changed.connect(changed, sender=reloader, weak=False)
    return reloader


class CodeWatcher:
    """The worker's side: a thread that calls ``on_change`` once, at the first change of a
    watched file - or when the reloader that started this worker is gone."""

    #: Seconds after the start at which files changed since this process imported them are
    #: looked for: the autoreloader's first look takes their times as they are then, so an
    #: edit saved while the worker started would go unnoticed.
    SWEEPS = (1.0, 3.0)

    def __init__(self, parent_pid: int | None = None) -> None:
        self.parent_pid = os.getppid() if parent_pid is None else parent_pid
        self.created = time.time()  # after Django's set-up imported the project's modules
        self._on_change: Callable[[str], None] | None = None
        self._reloader: autoreload.BaseReloader | None = None
        self._fired = threading.Event()

    def start(self, on_change: Callable[[str], None], on_orphaned: Callable[[], None]) -> None:
        """Start watching (after the supervisor's fork server started: it must fork while no
        other thread runs)."""
        self._on_change = on_change
        self._reloader = _file_watcher(self._changed)
        threading.Thread(
            target=self._reloader.run,
            args=(threading.main_thread(),),
            name="django_tasks-code-watcher",
            daemon=True,
        ).start()
        threading.Thread(
            target=self._watch_parent,
            args=(on_orphaned,),
            name="django_tasks-reloader-watcher",
            daemon=True,
        ).start()
        logger.info(
            "Reloading on code changes (%s; --noreload to turn off)",
            type(self._reloader).__name__,
        )

    def stop(self) -> None:
        self._fired.set()
        if self._reloader is not None:
            self._reloader.stop()

    def _changed(self, path: Path) -> None:
        if self._fired.is_set() or self._on_change is None:
            return
        self._fired.set()
        self._on_change(str(path))

    def _watch_parent(self, on_orphaned: Callable[[], None]) -> None:
        started = time.monotonic()
        sweeps = list(self.SWEEPS)
        while not self._fired.wait(0.5):
            if sweeps and time.monotonic() - started >= sweeps[0]:
                sweeps.pop(0)
                if (path := changed_since(self.created)) is not None:
                    self._changed(path)
                    return
            if os.getppid() != self.parent_pid:
                self._fired.set()
                on_orphaned()
                return


class Reloader:
    """The reloader's side: start the worker, start it again after a code change."""

    def __init__(self, args: list[str] | None = None) -> None:
        self.args = autoreload.get_child_arguments() if args is None else args
        self.child: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self.started = 0.0  # when the last worker was started

    def run(self) -> int:
        """Run workers until one stops for another reason than a code change; its exit code."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while not self._stopping:
                code = self._run_worker()
                if self._stopping:
                    return code
                if code == EXIT_RELOAD:
                    logger.info("Starting the worker again with the changed code")
                    continue
                if code == 0:
                    return 0
                logger.error(
                    "The worker %s: it starts again when one of the project's modules "
                    "changes (Ctrl-C to quit)",
                    _how_it_ended(code),
                )
                if not self._wait_for_change(self.started):
                    return code
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run_worker(self) -> int:
        self.started = time.time()
        env = {**os.environ, RELOADED_ENV: "1"}
        self.child = subprocess.Popen(self.args, env=env, close_fds=False)
        try:
            return self.child.wait()
        finally:
            self.child = None

    def _wait_for_change(self, since: float) -> bool:
        """Block until a module this process imported changed after ``since`` (True) or a
        stop signal (False). Polled twice a second, by the files' times: an edit saved
        between the worker's failure and this call counts too."""
        while not self._stopping:
            if (path := changed_since(since)) is not None:
                logger.info("%s changed", path)
                return True
            time.sleep(0.5)
        return False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Pass the stop on to the worker (a terminal's Ctrl-C reaches it too: it counts the
        two as one request), or stop waiting for a change."""
        self._stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
