"""The supervisor: runs N worker processes, replaces those that die, enforces hard limits.

``manage.py runtaskworker`` starts one :class:`Supervisor`. Each child is a fresh interpreter
(multiprocessing *spawn*: no state, connection or thread is inherited) running a
:class:`~django_tasks.worker.process.Worker` with one slot on its main thread, so timeouts and
cancels can interrupt the task. The supervisor itself holds one connection, for:

* marking a dead child's worker row stopped and rescuing its runs at once (instead of waiting
  for the heartbeat timeout);
* killing a child whose run overran ``timeout_seconds + TIMEOUT_GRACE`` (task code that ignores
  the timeout) or a cancel that did not stop within ``CANCEL_GRACE``, then recording TIMED_OUT
  (retried if allowed) or CANCELLED.

Signals: the first SIGTERM/SIGINT is passed to the children (they finish their run and hand
back the rest); children still running after ``shutdown_timeout`` are killed and their runs
rescued; exit 0. A second signal kills the children at once. If the supervisor itself is
killed, its children notice (their parent pid changes) and stop gracefully.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from .. import sql
from ..conf import task_settings
from ..logs import configure_worker_logging, for_run
from ..states import StateName, StateType
from .connection import QueueConnection
from .maintenance import rescue
from .outcomes import Outcome, finish_run, retry_run
from .process import EXIT_RECYCLE, worker_name

__all__ = ["Supervisor"]

logger = logging.getLogger("django_tasks.worker")


def _child_main(
    options: dict[str, Any], log_level: int, processed: ctypes.c_longlong | None = None
) -> None:
    """Entry point of a child process (spawned: Django must be set up again)."""
    import django

    django.setup()
    configure_worker_logging(log_level)
    from .process import Worker

    raise SystemExit(Worker(**options, processed_counter=processed).run())


class Supervisor:
    """Keeps ``concurrency`` worker processes running until stopped."""

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        max_tasks_per_child: int | None = None,
        shutdown_timeout: float = 30.0,
        burst: bool = False,
        alias: str | None = None,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
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
        self.child_options: dict[str, Any] = {
            "queues": list(queues) if queues else None,
            "batch_size": batch_size,
            "poll_interval": poll_interval,
            "max_tasks": max_tasks_per_child,
            "burst": burst,
            "alias": alias,
            "parent_pid": os.getpid(),
            "orphan_timeout": shutdown_timeout,
        }
        self.children: list[BaseProcess] = []
        self.replaced = 0
        self.metrics_port, self.metrics_addr = metrics_port, metrics_addr
        # Runs finished per child, in shared memory (read by the metrics endpoint).
        self._processed: dict[BaseProcess, ctypes.c_longlong] = {}
        self._processed_by_gone = 0
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._signals = 0
        self._deadline: float | None = None

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        db = QueueConnection(self.alias, lambda: False)
        server = self._serve_metrics()
        try:
            logger.info("Supervisor %s: starting %d workers", self.name, self.concurrency)
            self.children = [self._spawn() for _ in range(self.concurrency)]
            next_check = 0.0
            while self.children:
                self._reap(db)
                if self._signals > 1:
                    self._kill_all(db)
                    return 1
                if self._deadline is not None and time.monotonic() > self._deadline:
                    logger.warning("Shutdown timeout: killing %d workers", len(self.children))
                    self._kill_all(db)
                    break
                if time.monotonic() >= next_check and not self._stopping.is_set():
                    self._enforce_limits(db)
                    next_check = time.monotonic() + 1.0
                time.sleep(0.05)
            logger.info("Supervisor %s stopped", self.name)
            return 0
        finally:
            db.close()
            if server is not None:
                server.shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("Second signal: killing the workers at once.")
            return
        logger.info("Signal %d: workers finish their runs, then stop.", signum)
        self._stopping.set()
        self._deadline = time.monotonic() + self.shutdown_timeout
        for child in self.children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    def _serve_metrics(self) -> Any:
        if self.metrics_port is None:
            return None
        from .metrics import PoolCollector, serve_metrics  # needs Django set up (models)

        pool = PoolCollector(
            processes=lambda: sum(1 for c in list(self.children) if c.is_alive()),
            replaced=lambda: self.replaced,
            processed=self.processed,
        )
        server = serve_metrics(pool, self.metrics_port, self.metrics_addr)
        logger.info("Metrics on http://%s:%d/metrics", self.metrics_addr, self.metrics_port)
        return server

    def processed(self) -> int:
        """Runs this pool's children finished, the gone ones included."""
        return self._processed_by_gone + sum(c.value for c in list(self._processed.values()))

    def _spawn(self) -> BaseProcess:
        counter: ctypes.c_longlong = self._context.RawValue(ctypes.c_longlong, 0)
        child = self._context.Process(
            target=_child_main,
            args=(self.child_options, logger.getEffectiveLevel(), counter),
            name="django_tasks-worker",
        )
        self._processed[child] = counter
        child.start()
        logger.info("Started worker process %s", child.pid)
        return child

    def _reap(self, db: QueueConnection) -> None:
        """Replace children that exited; free what a child that died held."""
        alive: list[BaseProcess] = []
        for child in self.children:
            if child.is_alive():
                alive.append(child)
                continue
            child.join()
            self._forget(db, child)
            self._processed_by_gone += self._processed.pop(child).value
            if child.exitcode == EXIT_RECYCLE:
                logger.info("Worker process %s recycled (--max-tasks-per-child)", child.pid)
            elif child.exitcode != 0:
                logger.warning("Worker process %s died (exit code %s)", child.pid, child.exitcode)
            if not (self._stopping.is_set() or (self.burst and child.exitcode == 0)):
                alive.append(self._spawn())
                self.replaced += 1
        self.children = alive

    def _forget(self, db: QueueConnection, child: BaseProcess) -> None:
        """Mark a dead child's worker row stopped and rescue its runs now."""
        assert child.pid is not None
        db.execute(sql.WORKER_STOPPED, {"name": worker_name(child.pid)}, give_up_on_stop=False)
        rescue(db, rescuer=self.name, heartbeat_timeout=self.heartbeat_timeout)

    def _kill_all(self, db: QueueConnection) -> None:
        for child in self.children:
            if child.is_alive():
                child.kill()
        for child in self.children:
            child.join()
            self._forget(db, child)
        self.children = []

    def _enforce_limits(self, db: QueueConnection) -> None:
        by_name = {worker_name(c.pid): c for c in self.children if c.pid is not None}
        rows = db.execute(
            sql.OVERDUE,
            {
                "workers": list(by_name),
                "timeout_grace": self.timeout_grace,
                "cancel_grace": self.cancel_grace,
            },
            give_up_on_stop=False,
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
            child.kill()
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
