"""Many worker processes through PgBouncer (issue 25, goal 4), beside fewer pools connected
directly, in the same run.

    .venv/bin/python -m benchmarks.many_workers [--runs 20000] [--pools 8] [--processes 4]
        [--restart]

Starts PgBouncer (Debian's ``pgbouncer``) in transaction mode with its default settings
(``default_pool_size = 20``, ``max_client_conn = 100``, ``server_login_retry = 15``) in front
of the benchmark database; then drains ``--runs`` no-op runs three times each with

* 2 pools of ``--processes`` worker processes connected to PostgreSQL directly,
* the same 2 pools through PgBouncer (what the pooler itself costs), and
* ``--pools`` pools of ``--processes`` processes through PgBouncer
  (``PREPARE_STATEMENTS = False``: PgBouncer before 1.21 cannot keep prepared statements;
  ``LISTEN_DATABASE_ALIAS``: each process LISTENs on a connection straight to PostgreSQL),

printing the median rate of each (from the enqueue's commit, and from the first start to the
last end), the most connections PostgreSQL had open for the benchmark database meanwhile
(sampled every 50 ms: PgBouncer's pool plus one idle LISTEN connection per process), the
share of a core PgBouncer used, and the error lines the workers logged. ``--restart`` then restarts
PostgreSQL (``pg_ctlcluster``: the machine's own server, as root) in the middle of one more
drain through PgBouncer and checks that every run completes.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.run import BENCH_DB, OURS_LEFT, ROOT, reset, settle, wait_done, wait_for

from django.core.management import call_command
from django.db import connection

from django_tasks.topic import open_worker_connection
from tests.taskapp.tasks import noop

CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
LIVE = "SELECT count(*) FROM django_tasks_worker WHERE stopped IS NULL"


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def pgbouncer() -> Iterator[tuple[str, int]]:
    """PgBouncer with its defaults, transaction mode; yields its DATABASE_URL and pid."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        raise SystemExit("needs pgbouncer (Debian: apt-get install pgbouncer)")
    settings = connection.settings_dict
    host, port = settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    if str(host).startswith("/"):
        raise SystemExit("run it against a TCP server: DATABASE_URL=postgres://...@127.0.0.1")
    folder = Path(tempfile.mkdtemp(prefix="djt-bench-pgbouncer-"))
    folder.chmod(0o777)  # started as root, PgBouncer runs as another user (-u)
    listen = 6499
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = host={host} port={port} user={settings['USER']}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    config.chmod(0o644)
    command = [binary, str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    try:
        yield f"postgres://{settings['USER']}@127.0.0.1:{listen}/{BENCH_DB}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def start_pools(pools: int, processes: int, url: str | None, logs: Path) -> list[Any]:
    env = dict(os.environ)
    if url is not None:  # through PgBouncer: LISTEN straight to PostgreSQL (docs/deployment.md)
        direct = {key: connection.settings_dict[key] for key in ("HOST", "PORT", "USER", "NAME")}
        env["DATABASE_URL"] = url
        env["DJANGO_TASKS_TEST_LISTEN_DB"] = json.dumps(direct)
        env["DJANGO_TASKS_TEST_SETTINGS"] = json.dumps(
            {"PREPARE_STATEMENTS": False, "LISTEN_DATABASE_ALIAS": "listen"}
        )
    started = []
    for index in range(pools):
        log = (logs / f"pool-{index}.log").open("ab")
        command = [sys.executable, str(ROOT / "manage.py"), "runtaskworker", "-v", "1"]
        command += ["--concurrency", str(processes)]
        started.append(
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )
        )
    wait_for(LIVE, pools * processes, timeout=120)
    time.sleep(0.5)
    return started


def stop_pools(started: list[Any]) -> None:
    for proc in started:
        proc.send_signal(signal.SIGTERM)
    for proc in started:
        proc.wait(120)


class ConnectionSampler:
    """The most connections PostgreSQL holds for the benchmark database, sampled."""

    def __init__(self) -> None:
        self.most = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        conn = None
        while not self._done.wait(0.05):
            try:
                conn = conn or open_worker_connection()
                row = conn.execute(CONNECTIONS, [BENCH_DB]).fetchone()
                self.most = max(self.most, int(row[0]) - 1 if row else 0)  # not this one
            except Exception:  # the server restarts (--restart): sample again after
                conn = None
                time.sleep(0.2)


#: From the first start to the last end of a drain's runs: the drain's own pace, without
#: the wait of idle workers for their next poll (LISTEN does not pass through PgBouncer in
#: transaction mode: they wake every POLL_INTERVAL, 1 s, instead of at the NOTIFY).
SPAN = """SELECT extract(epoch FROM max(finished) - min(started))::float8
FROM django_tasks_taskrun WHERE id = ANY(%s)"""


def drain(runs: int) -> tuple[float, float]:
    """Runs per second from the commit of the enqueue to the last end, and in :data:`SPAN`."""
    futures = noop.delay_many([()] * runs)
    started = time.perf_counter()
    ids = [future.id for future in futures]
    finished = wait_done(OURS_LEFT, last=("django_tasks_taskrun", ids))
    with connection.cursor() as cursor:
        cursor.execute(SPAN, [ids])
        span = cursor.fetchone()[0]
    return runs / (finished - started), runs / span


def measure(
    label: str,
    pools: int,
    processes: int,
    url: str | None,
    runs: int,
    logs: Path,
    bouncer: int | None = None,
) -> float:
    """The median drain of ``pools`` x ``processes`` (through PgBouncer with ``url``; its
    ``bouncer`` pid: the share of a core it used while draining is printed too)."""
    started = start_pools(pools, processes, url, logs)
    try:
        with ConnectionSampler() as sampler:
            cpu = cpu_seconds(bouncer) if bouncer else 0.0
            began = time.perf_counter()
            drains = [drain(runs) for _ in range(3)]
            wall = time.perf_counter() - began
            cpu = cpu_seconds(bouncer) - cpu if bouncer else 0.0
    finally:
        stop_pools(started)
    rate = statistics.median(whole for whole, _ in drains)
    pace = statistics.median(steady for _, steady in drains)
    share = f"{cpu / wall:.2f}" if bouncer else "-"
    print(
        f"| {label} | {pools * processes} | {rate:,.0f}/s | {pace:,.0f}/s | {sampler.most} | "
        f"{share} | {error_lines(logs)} |",
        flush=True,
    )
    return pace


def error_lines(logs: Path) -> int:
    lines = 0
    for log in logs.glob("pool-*.log"):
        text = log.read_text(errors="replace")
        lines += sum(1 for line in text.splitlines() if "ERROR" in line or "Traceback" in line)
    return lines


def restart_during_drain(pools: int, processes: int, url: str, runs: int, logs: Path) -> None:
    """Restart PostgreSQL while the pools drain through PgBouncer; every run must complete."""
    started = start_pools(pools, processes, url, logs)
    try:
        futures = noop.delay_many([()] * runs)
        time.sleep(0.3)
        began = time.perf_counter()
        subprocess.run(["pg_ctlcluster", "15", "main", "restart"], check=True)
        connection.close()
        ids = [future.id for future in futures]
        finished = wait_done(OURS_LEFT, timeout=300, last=("django_tasks_taskrun", ids))
    finally:
        stop_pools(started)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state_type, count(*) FROM django_tasks_taskrun WHERE id = ANY(%s) "
            "GROUP BY state_type",
            [ids],
        )
        states = dict(cursor.fetchall())
    print(
        f"restart in a drain of {runs:,} runs through PgBouncer: all final "
        f"{finished - began:.1f} s after the restart began; states {states}; "
        f"error lines logged {error_lines(logs)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--restart", action="store_true")
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    settle()
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        print(f"PostgreSQL max_connections = {cursor.fetchone()[0]}")
    print(
        "| workers | processes | drain (median of 3) | first start to last end | "
        "most server connections | PgBouncer's share of a core | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="djt-bench-logs-"))
    direct_logs, bouncer_logs = folder / "direct", folder / "bouncer"
    direct_logs.mkdir()
    bouncer_logs.mkdir()
    direct = measure(
        f"2 pools x {options.processes}, direct",
        2,
        options.processes,
        None,
        options.runs,
        direct_logs,
    )
    with pgbouncer() as (url, pid):
        measure(  # the pooler's own cost, same processes as the direct row
            f"2 pools x {options.processes}, through PgBouncer",
            2,
            options.processes,
            url,
            options.runs,
            bouncer_logs,
            pid,
        )
        through = measure(
            f"{options.pools} pools x {options.processes}, through PgBouncer",
            options.pools,
            options.processes,
            url,
            options.runs,
            bouncer_logs,
            pid,
        )
        print(
            f"through PgBouncer / direct, first start to last end: {through / direct:.2f} "
            f"(logs in {folder})"
        )
        if options.restart:
            restart_during_drain(options.pools, options.processes, url, options.runs, bouncer_logs)
    reset()


if __name__ == "__main__":
    main()
