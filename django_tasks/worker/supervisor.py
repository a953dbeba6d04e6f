"""The supervisor: runs N worker processes, replaces those that die, enforces hard limits.

``manage.py runtaskworker`` starts one :class:`Supervisor`. Each child runs a
:class:`~django_tasks.worker.process.Worker` with one slot on its main thread, so timeouts and
cancels can interrupt the task. Children are forked by a fork server (:mod:`.forking`: Django
set up once, no connection or thread inherited) or, with ``WORKER_START_METHOD = "spawn"``
or threads running in the supervisor, spawned (multiprocessing *spawn*: new interpreters).
The supervisor itself holds one connection, for:

* marking a dead child's worker row stopped and rescuing its runs at once (instead of waiting
  for the heartbeat timeout);
* killing a child whose run overran ``timeout_seconds + TIMEOUT_GRACE`` (task code that ignores
  the timeout) or a cancel that did not stop within ``CANCEL_GRACE``, then recording TIMED_OUT
  (retried if allowed) or CANCELLED.

Each child runs in a process group of its own: a terminal's Ctrl-C reaches the supervisor
alone (the children also ignore SIGINT), and a kill for a timeout or a cancel reaches the
processes the run started too. When a child dies, what it left in its journal is settled
(:mod:`.salvage`): nothing it computed is lost, the run that took it down ends CRASHED, the
runs it had not started go back into the topic. Children that die before they could take a
run (:data:`BOOT_FAILURES` in a row: spawned, a ``manage.py`` without its ``__main__`` guard or
a tasks module that fails to import; forked, a library that cannot run in a forked process)
stop the supervisor with their error, instead of a restart loop.

Signals (:mod:`.stopping`): the first SIGTERM/SIGINT is passed to the children as SIGTERM
(they finish their run and hand back the rest); children still running after
``shutdown_timeout`` are killed and their runs rescued; exit 0. A second request kills the
children at once. If the supervisor itself is killed, its children notice (their parent pid
changes) and stop gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from .. import sql
from ..conf import task_settings
from ..logs import configure_worker_logging, for_run
from ..states import StateName, StateType
from ..storable import describe_exception
from .connection import QueueConnection
from .descendants import become_subreaper, kill_tree
from .forking import ForkedChild, ForkServer, ForkServerGone, WorkerProcess, can_fork_here
from .idle_queues import IdleQueueWarning
from .journal import ProcessJournal
from .maintenance import rescue
from .outcomes import Outcome, finish_run, retry_run
from .process import DEFAULT_ASYNC_CONCURRENCY, EXIT_GAVE_UP, EXIT_RECYCLE, worker_name
from .reloading import EXIT_RELOAD, CodeWatcher
from .salvage import how_it_died, salvage
from .stopping import AT_ONCE, DUPLICATE, StopRequests

__all__ = ["BOOT_FAILURES", "Supervisor", "WorkerBootError", "kill_process_group"]

logger = logging.getLogger("django_tasks.worker")


#: Children in a row that die before taking a run make the supervisor give up.
BOOT_FAILURES = 3
#: Seconds before a child that failed to boot is replaced: doubled each time, up to the cap.
BOOT_BACKOFF, BOOT_BACKOFF_MAX = 0.5, 10.0


SPAWNED_HINT = (
    ". Each worker process is a new interpreter that imports the project again: check that "
    'manage.py runs its command only under `if __name__ == "__main__":`, that every installed '
    "app's tasks.py imports without error, and that the settings work in a fresh process."
)
FORKED_HINT = (
    ". Worker processes are forked from the supervisor once Django is set up: if a library "
    "the project imports cannot run in a forked process, set "
    'DJANGO_TASKS["WORKER_START_METHOD"] = "spawn" (each worker process then starts a new '
    "interpreter)."
)


class WorkerBootError(RuntimeError):
    """Worker processes keep dying before they can take a run: restarting them is no use."""


def _child_main(options: dict[str, Any], log_level: int, journal: ProcessJournal) -> None:
    """Entry point of a spawned child process: a new interpreter, Django is set up again."""
    try:
        import django

        django.setup()
    except BaseException as exc:
        journal.set_error(describe_exception(exc))
        raise
    configure_worker_logging(log_level)
    raise SystemExit(_run_worker(options, journal))


def _run_worker(options: dict[str, Any], journal: ProcessJournal) -> int:
    """Run a worker in a child process (spawned, or forked by the fork server)."""
    # A process group of its own: the terminal's Ctrl-C goes to the supervisor only (which
    # asks the children to stop), and killing the group kills what a run started.
    os.setpgid(0, 0)
    # ... and what leaves the group (a daemon's setsid()) stays in its tree, to die with it.
    become_subreaper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .process import Worker

    try:
        worker = Worker(**options, journal=journal)
    except BaseException as exc:
        journal.set_error(describe_exception(exc))
        raise
    return worker.run()


def kill_process_group(process: WorkerProcess) -> None:
    """SIGKILL a child and every process its runs started: its process group, and the
    daemons that left the group but not the child's tree (:mod:`.descendants`)."""
    if process.pid is None:
        return
    kill_tree(process.pid)
    with contextlib.suppress(ProcessLookupError):  # not (yet) a group of its own
        process.kill()


def _kill_leftovers(child: WorkerProcess) -> None:
    """A worker process died on its own (the OOM killer, a segfault, ``kill -9``): the
    processes its run started, still in its process group, die with it - a retry would start
    them again beside the old ones. (Daemons that left the group are beyond reach once their
    worker process is gone: adopted by init.)"""
    if child.pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)


class Supervisor:
    """Keeps ``concurrency`` worker processes running until stopped."""

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        max_tasks_per_child: int | None = None,
        shutdown_timeout: float = 30.0,
        burst: bool = False,
        alias: str | None = None,
        serve_metrics: Callable[..., Any] | None = None,
        watcher: CodeWatcher | None = None,
    ) -> None:
        conf = task_settings()
        self.concurrency = concurrency or os.cpu_count() or 1
        self.shutdown_timeout = shutdown_timeout
        self.burst = burst
        self.alias = alias or conf.DATABASE_ALIAS
        self.timeout_grace = conf.TIMEOUT_GRACE
        self.cancel_grace = conf.CANCEL_GRACE
        self.heartbeat_timeout = conf.HEARTBEAT_TIMEOUT
        self.name = worker_name()
        #: The queues the workers serve, said at start: a forgotten one is a common mistake.
        self.queues = list(queues) if queues else [conf.DEFAULT_QUEUE]
        self.child_options: dict[str, Any] = {
            "queues": list(queues) if queues else None,
            "async_concurrency": async_concurrency,
            "batch_size": batch_size,
            "poll_interval": poll_interval,
            "max_tasks": max_tasks_per_child,
            "burst": burst,
            "alias": alias,
            "parent_pid": os.getpid(),
            "orphan_timeout": shutdown_timeout,
        }
        self.children: list[WorkerProcess] = []
        self.replaced = 0
        #: Burst workers that gave up (their claims kept failing): the pool exits with 1.
        self.gave_up = 0
        #: ``--metrics-port``: serves the pool's figures (:mod:`.metrics`, given by the command:
        #: a surface the worker layer does not import - docs/architecture.md).
        self.serve_metrics = serve_metrics
        # Each child's journal, in shared memory: what it runs and has not written yet, and
        # its count of runs (read by the metrics endpoint).
        self._journals: dict[WorkerProcess, ProcessJournal] = {}
        self._processed_by_gone = 0
        self._context = multiprocessing.get_context("spawn")
        self.start_method = conf.WORKER_START_METHOD
        self._fork_server: ForkServer | None = None  # see _start_fork_server()
        self._free: list[int] = []  # indexes of the fork server's journals not in use
        self._stopping = threading.Event()
        self._requests = StopRequests()
        self._deadline: float | None = None
        self._boot_failures = 0
        self._spawn_at: list[float] = []  # replacements waiting for their boot backoff
        self._killed: dict[WorkerProcess, str] = {}  # children this supervisor killed, and why
        self._told: set[int] = set()  # children sent SIGTERM for a stop
        #: ``--reload``: what watches the code, and why the pool is stopping if it changed.
        self.watcher = watcher
        self._idle_queues = IdleQueueWarning(self.queues, self.heartbeat_timeout)
        self._stop_asked: str | None = None  # set by the watcher's thread
        self.reloading = False

    def run(self) -> int:
        """Run until stopped; returns the exit code. Raises :class:`WorkerBootError` when the
        worker processes cannot start."""
        self._start_fork_server()  # first: before a connection or a thread exists
        if self.watcher is not None:
            self.watcher.start(self._code_changed, self._reloader_gone)
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        # Stopping, its periodic statements give up on a lost database (the loop must go on
        # to the shutdown timeout and a second signal); what settles a dead child waits for it
        # - unless the pool is leaving at once: then the rescue will settle it.
        db = QueueConnection(self.alias, self._stopping.is_set, abandon=self._leaving_at_once)
        server = self._serve_metrics()
        try:
            logger.info(
                "Supervisor %s: starting %d workers on queues %s (in this order)",
                self.name,
                self.concurrency,
                ", ".join(self.queues),
            )
            self.children = [self._spawn() for _ in range(self.concurrency)]
            next_check = 0.0
            while self.children or self._spawn_at:
                self._reap(db)
                if self._stop_asked is not None and not self._stopping.is_set():
                    self._stop_gracefully(self._stop_asked)
                if self._stopping.is_set():
                    self._pass_on_stop()
                if self._requests.count > 1:
                    self._kill_all(db, "a second request to stop")
                    return 1
                if self._deadline is not None and time.monotonic() > self._deadline:
                    logger.warning("Shutdown timeout: killing %d workers", len(self.children))
                    self._kill_all(db, "the shutdown timeout")
                    break
                if time.monotonic() >= next_check and not self._stopping.is_set():
                    self._enforce_limits(db)
                    self._warn_of_unserved_queues(db)
                    next_check = time.monotonic() + 1.0
                time.sleep(0.05)
            logger.info("Supervisor %s stopped", self.name)
            if self.reloading and self._requests.count == 0:
                return EXIT_RELOAD
            return 1 if self.gave_up else 0
        except WorkerBootError:
            self._kill_all(db, "its pool could not start")
            raise
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            db.close()
            if self._fork_server is not None:
                self._fork_server.close()
            if server is not None:
                server.shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _leaving_at_once(self) -> bool:
        """A second request to stop, or the shutdown timeout passed."""
        past_deadline = self._deadline is not None and time.monotonic() > self._deadline
        return self._requests.count > 1 or past_deadline

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        request = self._requests.add(signum)
        name = StopRequests.name(signum)
        if request == DUPLICATE:
            logger.info("%s: the same request to stop (already stopping).", name)
            return
        if request == AT_ONCE:
            logger.warning("%s again: killing the workers at once.", name)
            return
        if self._stopping.is_set():  # already stopping for a code change: no restart now
            logger.info("%s: stopping without starting again.", name)
            return
        self._stop_gracefully(f"{name}: workers finish their runs, then stop.")

    def _stop_gracefully(self, message: str) -> None:
        logger.info("%s", message)
        self._stopping.set()
        self._spawn_at.clear()
        self._deadline = time.monotonic() + self.shutdown_timeout
        self._pass_on_stop()

    def _code_changed(self, path: str) -> None:
        """The watcher's thread: a file changed. The main loop stops the pool (signals and
        the children's list are the main thread's)."""
        self.reloading = True
        self._stop_asked = (
            f"{path} changed: workers finish their runs, then the worker starts again."
        )

    def _reloader_gone(self) -> None:
        self._stop_asked = "The reloader that started this worker is gone: stopping."

    def _pass_on_stop(self) -> None:
        """SIGTERM each child not told yet. Called by the signal handler and again by the
        loop: the handler may run while ``_reap`` is replacing a child, and the new child,
        not yet in ``self.children``, would otherwise never hear of the stop (the pool then
        waited for the shutdown timeout)."""
        for child in self.children:
            if child.pid is not None and child.pid not in self._told and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
                self._told.add(child.pid)

    def _serve_metrics(self) -> Any:
        if self.serve_metrics is None:
            return None
        return self.serve_metrics(
            processes=lambda: sum(1 for c in list(self.children) if c.is_alive()),
            replaced=lambda: self.replaced,
            processed=self.processed,
        )

    def processed(self) -> int:
        """Runs this pool's children finished, the gone ones included."""
        return self._processed_by_gone + sum(j.processed for j in list(self._journals.values()))

    def _start_fork_server(self) -> None:
        """Fork the fork server (:mod:`.forking`) while this process holds no connection and
        runs no other thread. Without one (``WORKER_START_METHOD = "spawn"``, or threads
        running here), worker processes are spawned: new interpreters."""
        if self.start_method != "fork":
            return
        why_not = can_fork_here()
        if why_not is not None:
            logger.info("Worker processes are spawned, not forked: %s.", why_not)
            return
        from django.db import connections

        connections.close_all()  # opened by the command's checks; reopened when used
        journals = [ProcessJournal.shared(self._context) for _ in range(self.concurrency)]
        self._fork_server = ForkServer(journals, self._forked_main)
        self._fork_server.start()
        self._free = list(range(self.concurrency))

    def _forked_main(self, journal: ProcessJournal, parent_pid: int) -> int:
        """A forked worker process's entry point: Django is set up already."""
        return _run_worker({**self.child_options, "parent_pid": parent_pid}, journal)

    def _spawn(self) -> WorkerProcess:
        child = self._fork() or self._spawn_interpreter()
        logger.info("Started worker process %s", child.pid)
        return child

    def _fork(self) -> ForkedChild | None:
        """A worker process forked by the fork server; ``None`` to spawn one instead."""
        server = self._fork_server
        if server is None:
            return None
        if server.alive and self._free:
            index = self._free.pop()
            journal = server.journals[index]
            journal.reset()
            try:
                child = server.start_child(index)
            except ForkServerGone:
                self._free.append(index)
            else:
                self._journals[child] = journal
                return child
        if not server.alive:
            logger.warning("The fork server died: worker processes are spawned from now on.")
            server.close()
            self._fork_server = None
        return None

    def _spawn_interpreter(self) -> WorkerProcess:
        journal = ProcessJournal.shared(self._context)
        child = self._context.Process(
            target=_child_main,
            args=(self.child_options, logger.getEffectiveLevel(), journal),
            name="django_tasks-worker",
        )
        self._journals[child] = journal
        child.start()
        return child

    def _reap(self, db: QueueConnection) -> None:
        """Replace children that exited; settle what a child that died held."""
        alive: list[WorkerProcess] = []
        gave_up: WorkerBootError | None = None
        for child in self.children:
            if child.is_alive():
                alive.append(child)
                continue
            child.join()
            journal = self._forget(db, child)
            burst_ended = self.burst and child.exitcode in (0, EXIT_GAVE_UP)
            if child.exitcode == EXIT_RECYCLE:
                logger.info("Worker process %s recycled (--max-tasks-per-child)", child.pid)
            elif child.exitcode == EXIT_GAVE_UP and self.burst:
                logger.error("Worker process %s gave up: its claims kept failing", child.pid)
                self.gave_up += 1
            elif child.exitcode != 0:
                logger.warning(
                    "Worker process %s died (%s)", child.pid, how_it_died(child.exitcode)
                )
                _kill_leftovers(child)
            if self._stopping.is_set() or burst_ended:
                continue
            if journal.ready:
                self._boot_failures = 0
                alive.append(self._spawn())
                self.replaced += 1
            else:
                gave_up = gave_up or self._boot_failed(child, journal)
        now = time.monotonic()
        due = [at for at in self._spawn_at if at <= now]
        if due and gave_up is None:
            self._spawn_at = [at for at in self._spawn_at if at > now]
            alive.extend(self._spawn() for _ in due)
            self.replaced += len(due)
        self.children = alive
        if gave_up is not None:
            raise gave_up

    def _boot_failed(self, child: WorkerProcess, journal: ProcessJournal) -> WorkerBootError | None:
        """A child died before it could take a run: replace it after a backoff, or give up
        after :data:`BOOT_FAILURES` in a row (restarting a process that cannot start is a
        loop, not a recovery). Returns the error to give up with."""
        self._boot_failures += 1
        how = how_it_died(child.exitcode)
        if self._boot_failures >= BOOT_FAILURES:
            error = journal.error
            return WorkerBootError(
                f"{self._boot_failures} worker processes in a row exited before they could "
                f"take a run (the last one: {how})"
                + (f", with this error: {error}" if error else "; their output above says why")
                + (FORKED_HINT if isinstance(child, ForkedChild) else SPAWNED_HINT)
            )
        delay = min(BOOT_BACKOFF * 2 ** (self._boot_failures - 1), BOOT_BACKOFF_MAX)
        logger.warning(
            "Worker process %s exited before taking a run (%s); starting another in %.1f s",
            child.pid,
            how,
            delay,
        )
        self._spawn_at.append(time.monotonic() + delay)
        return None

    def _forget(self, db: QueueConnection, child: WorkerProcess) -> ProcessJournal:
        """Settle what a child that exited held (:mod:`.salvage`), mark its worker row
        stopped and rescue the runs of any other lost worker. Returns its journal."""
        assert child.pid is not None
        journal = self._journals.pop(child)
        self._processed_by_gone += journal.processed
        name = worker_name(child.pid)
        killed_because = self._killed.pop(child, None)
        try:
            salvage(
                db,
                journal,
                worker=name,
                rescuer=self.name,
                exitcode=child.exitcode,
                killed_because=killed_because,
            )
        except Exception:  # never the supervisor's end: the rescue below frees the runs
            logger.exception("Could not settle the runs of worker process %s", child.pid)
        if isinstance(child, ForkedChild):
            self._free.append(child.index)  # its journal is settled: the next one may use it
        db.execute(sql.WORKER_STOPPED, {"name": name}, give_up_on_stop=False)
        rescue(db, rescuer=self.name, heartbeat_timeout=self.heartbeat_timeout)
        return journal

    def _kill_all(self, db: QueueConnection, because: str) -> None:
        for child in self.children:
            if child.is_alive():
                self._killed[child] = because
                kill_process_group(child)
        for child in self.children:
            child.join()
            self._forget(db, child)
        self.children = []
        self._spawn_at.clear()

    def _enforce_limits(self, db: QueueConnection) -> None:
        """Kill the children whose run overran (:meth:`_kill_overdue`). An unexpected error
        is logged, never the supervisor's end (the pool would stop with it)."""
        try:
            self._kill_overdue(db)
        except Exception:
            logger.exception("Could not enforce the runs' time limits; trying again")

    def _warn_of_unserved_queues(self, db: QueueConnection) -> None:
        """Name the queues with ready runs that no live worker serves (:mod:`.idle_queues`)."""
        try:
            self._idle_queues.check(db)
        except Exception:
            logger.exception("Could not look for queues no worker serves; trying again later")

    def _kill_overdue(self, db: QueueConnection) -> None:
        by_name = {worker_name(c.pid): c for c in self.children if c.pid is not None}
        rows = db.execute(
            sql.OVERDUE,
            {
                "workers": list(by_name),
                "timeout_grace": self.timeout_grace,
                "cancel_grace": self.cancel_grace,
            },
            give_up_on_stop=True,
        )
        for run_id, holder, state_type, attempts, retries, retry_delay, timeout in rows:
            child = by_name[holder]
            logger.warning(
                "Run %s overran (%s): killing worker %s",
                run_id,
                state_type,
                holder,
                extra=for_run(run_id),
            )
            self._killed[child] = "its run overran"
            kill_process_group(child)
            child.join()
            if state_type == StateType.CANCELLING:
                outcome = Outcome(
                    StateType.CANCELLED,
                    StateName.CANCELLED,
                    "Cancelled: the worker was killed after the cancel grace period.",
                    None,
                    None,
                    "",
                )
                finish_run(db, run_id, holder, outcome)
                continue
            message = f"Timed out after {timeout} s; the worker ignored it and was killed."
            if attempts <= retries:
                retry_run(db, run_id, holder, message, "", retry_delay)
            else:
                outcome = Outcome(StateType.FAILED, StateName.TIMED_OUT, message, None, None, "")
                finish_run(db, run_id, holder, outcome)
