"""django_tasks against raw psycopg SKIP LOCKED baselines, measured in the same run.

    .venv/bin/python -m benchmarks.run [--drain-runs 20000] [--history-runs 1000000]

Same database, same table shape (the raw baselines use a copy of the task-run table and its
ready index, with no framework). Prints a Markdown table with the ratios that
docs/performance.md reports. Uses DATABASE_URL when set, else the embedded PostgreSQL; all
data goes to a separate database, ``django_tasks_bench`` (or ``DJANGO_TASKS_BENCH_DB``: two
benchmarks run at once against one server need one each), which is emptied first.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("DJANGO_TASKS_BENCH_DB", "django_tasks_bench")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["DJANGO_TASKS_TEST_DB"] = BENCH_DB
os.environ["DJANGO_DEBUG"] = "0"  # measured as in production: no query logging
sys.path.insert(0, str(ROOT))


def _ensure_database() -> None:
    """Create the benchmark database next to the configured one."""
    import psycopg
    from django.db import connections

    params = connections["default"].get_connection_params()
    for key in ("cursor_factory", "context"):
        params.pop(key, None)
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')


import django  # noqa: E402

django.setup()
_ensure_database()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from django_tasks.topic import open_worker_connection  # noqa: E402
from django_tasks.worker.connection import clock_offset  # noqa: E402
from tests.taskapp.tasks import noop  # noqa: E402

RAW_TABLE = """
DROP TABLE IF EXISTS bench_raw_job;
CREATE TABLE bench_raw_job (LIKE django_tasks_taskrun INCLUDING DEFAULTS);
ALTER TABLE bench_raw_job ADD PRIMARY KEY (id);
CREATE INDEX bench_raw_ready ON bench_raw_job (queue, priority DESC, scheduled_time)
    WHERE state_type = 'SCHEDULED' AND blocked = 0;
"""
RAW_VALUES = """(gen_random_uuid(), 'k', 'noop', 'noop', 'delay', 'default', 0, '[]', 'SCHEDULED',
    'Scheduled', '', clock_timestamp(), 0, '', 0, '[]', NULL, NULL, %s, '{}', '',
    clock_timestamp(), clock_timestamp(), 0, false)"""
RAW_COLUMNS = """(id, task_key, task_name, name, origin, queue, priority, tags, state_type,
    state_name, state_message, scheduled_time, attempts, worker, retries, retry_delays,
    retry_jitter, timeout, parameters, parameters_preview, traceback, created, updated,
    blocked, has_downstream)"""
RAW_INSERT = f"INSERT INTO bench_raw_job {RAW_COLUMNS} VALUES {RAW_VALUES}"
RAW_INSERT_NOTIFY = (
    f"WITH i AS (INSERT INTO bench_raw_job {RAW_COLUMNS} VALUES {RAW_VALUES}) "
    "SELECT pg_notify('bench', 'default')"
)
RAW_CLAIM = """
UPDATE bench_raw_job SET state_type = 'RUNNING', worker = %s, started = clock_timestamp()
WHERE id IN (SELECT id FROM bench_raw_job WHERE state_type = 'SCHEDULED' AND blocked = 0
             AND queue = 'default'
             ORDER BY priority DESC, scheduled_time LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING id, parameters
"""
RAW_DONE = """UPDATE bench_raw_job SET state_type = 'COMPLETED', finished = clock_timestamp()
WHERE id = ANY(%s)"""
PAYLOAD = b"x" * 64


def raw(sql_text: str, params: Any = None) -> list[Any]:
    conn = open_worker_connection()
    try:
        cur = conn.execute(sql_text, params)
        return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def reset() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE django_tasks_taskrun, django_tasks_taskrunstate, django_tasks_worker"
        )


#: Runs not finished yet, counted through the two partial indexes (ready and held runs) so
#: that polling for the end of a drain costs the database nearly nothing, history or not.
OURS_LEFT = """SELECT
    (SELECT count(*) FROM django_tasks_taskrun
     WHERE state_type = 'SCHEDULED' AND blocked = 0 AND queue = 'default')
  + (SELECT count(*) FROM django_tasks_taskrun
     WHERE state_type IN ('PENDING', 'RUNNING', 'CANCELLING') AND worker <> '')"""
RAW_LEFT = """SELECT count(*) FROM bench_raw_job
WHERE state_type = 'SCHEDULED' AND blocked = 0 AND queue = 'default'"""


#: How many of the last runs of a drain :func:`wait_done` watches before it counts them all.
WATCHED = 100
_WATCHED_LEFT = """SELECT count(*) FROM {table} WHERE id = ANY(%s)
AND state_type NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED')"""


def wait_done(
    left_query: str, timeout: float = 600, *, last: tuple[str, list[Any]] | None = None
) -> float:
    """Poll until ``left_query`` counts nothing left; return the time it happened.

    ``last``: a table and the ids of the drain's last runs (claimed last). The counts of
    ``left_query`` read a partial index, whose entries of finished runs stay while a snapshot
    is held (benchmarks/held_snapshot.py): polled every 20 ms, they would slow down the very
    drain they time. The last runs are looked up by id until they are all final; only then
    does the count run, until it finds nothing left."""
    conn = open_worker_connection()
    deadline = time.monotonic() + timeout
    try:
        if last is not None:
            table, ids = last
            watched = _WATCHED_LEFT.format(table=table)
            while time.monotonic() < deadline:
                row = conn.execute(watched, [ids[-WATCHED:]]).fetchone()
                if row is not None and row[0] == 0:
                    break
                time.sleep(0.02)
        while time.monotonic() < deadline:
            row = conn.execute(left_query).fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter()
            time.sleep(0.02)
    finally:
        conn.close()
    raise SystemExit(f"timed out waiting for {left_query}")


def wait_for(query: str, target: int, timeout: float = 600) -> float:
    """Poll ``query`` (a count) until it reaches ``target``; return the time it happened."""
    conn = open_worker_connection()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            row = conn.execute(query).fetchone()
            if row and row[0] >= target:
                return time.perf_counter()
            time.sleep(0.02)
    finally:
        conn.close()
    raise SystemExit(f"timed out waiting for {query}")


# -- (a) enqueue ---------------------------------------------------------------------------


def raw_single(n: int, notify: bool) -> float:
    raw(RAW_TABLE)
    conn = open_worker_connection()
    started = time.perf_counter()
    for _ in range(n):
        conn.execute(RAW_INSERT_NOTIFY if notify else RAW_INSERT, [PAYLOAD])
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


def raw_bulk(n: int) -> float:
    raw(RAW_TABLE)
    conn = open_worker_connection()
    started = time.perf_counter()
    with conn.cursor() as cur, conn.transaction():
        cur.executemany(RAW_INSERT, [[PAYLOAD]] * n)
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


def ours_single(n: int) -> float:
    reset()
    started = time.perf_counter()
    for _ in range(n):
        noop.delay()
    return n / (time.perf_counter() - started)


def ours_bulk(n: int) -> float:
    """One ``delay_many()`` of ``n`` runs (sent in pipelined chunks: ``topic.BULK_CHUNK``)."""
    reset()
    started = time.perf_counter()
    noop.delay_many([()] * n)
    return n / (time.perf_counter() - started)


# -- (b, d) drain ----------------------------------------------------------------------------


def _raw_consumer(worker: str, stop_after: int) -> None:
    conn = open_worker_connection()
    done = 0
    while done < stop_after:
        with conn.transaction():
            rows = conn.execute(RAW_CLAIM, [worker]).fetchall()
            if rows:
                conn.execute(RAW_DONE, [[row[0] for row in rows]])
        done += len(rows)
        if not rows:
            left = conn.execute(
                "SELECT count(*) FROM bench_raw_job WHERE state_type <> 'COMPLETED'"
            ).fetchone()
            if done and left is not None and left[0] == 0:
                break
            time.sleep(0.001)
    conn.close()


def raw_drain(n: int, processes: int, *, fresh: bool = True) -> float:
    """``processes`` raw consumers drain ``n`` rows inserted in one commit. ``fresh``: in a
    new table, after VACUUM and CHECKPOINT (else in the table as earlier drains left it)."""
    if fresh:
        raw(RAW_TABLE)
        settle()
    pool = [
        multiprocessing.Process(target=_raw_consumer, args=(f"raw-{i}", n))
        for i in range(processes)
    ]
    for proc in pool:
        proc.start()
    time.sleep(0.5)
    conn = open_worker_connection()
    with conn.cursor() as cur, conn.transaction():
        cur.executemany(RAW_INSERT + " RETURNING id", [[PAYLOAD]] * n, returning=True)
        ids: list[Any] = []
        while True:
            ids.extend(row[0] for row in cur.fetchall())
            if not cur.nextset():
                break
    started = time.perf_counter()
    conn.close()
    finished = wait_done(RAW_LEFT, last=("bench_raw_job", ids))
    for proc in pool:
        proc.join(30)
    return n / (finished - started)


def start_workers(
    concurrency: int, *extra: str, root: Path = ROOT, wait: bool = True
) -> subprocess.Popen[bytes]:
    """``runtaskworker`` of the code in ``root`` (this checkout, or another one to compare);
    ``wait``: until its worker processes are up."""
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "manage.py"),
            "runtaskworker",
            "-v",
            "0",
            "--concurrency",
            str(concurrency),
            *extra,
        ],
        cwd=root,
        env=env,
        start_new_session=True,
    )
    if wait:
        wait_for(
            "SELECT count(*) FROM django_tasks_worker WHERE stopped IS NULL",
            concurrency,
            timeout=60,
        )
        time.sleep(0.3)
    return proc


def stop_workers(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def ours_drain(
    n: int,
    concurrency: int,
    *extra: str,
    root: Path = ROOT,
    task: Any = noop,
    args: tuple[Any, ...] = (),
    settled: bool = True,
) -> float:
    """Workers idle first; then ``n`` runs of ``task(*args)`` appear in one commit; time until
    all are done. ``settled``: after VACUUM and CHECKPOINT (else as earlier drains left it)."""
    if settled:
        settle()
    proc = start_workers(concurrency, *extra, root=root)
    try:
        futures = task.delay_many([args] * n)
        started = time.perf_counter()
        ids = [future.id for future in futures]
        finished = wait_done(OURS_LEFT, last=("django_tasks_taskrun", ids))
    finally:
        stop_workers(proc)
    return n / (finished - started)


# Version 7 ids of runs created over the last days, in order, as real history would have them
# (SQL, because PostgreSQL before 18 has no uuidv7()).
OLD_UUID7 = """(
    lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint - 86400000 * 3 + g), 12, '0')
    || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15)
)::uuid"""


def add_history(n: int) -> None:
    """``n`` finished runs with three history rows each, as months of use would leave."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO django_tasks_taskrun {RAW_COLUMNS}
            SELECT {OLD_UUID7}, 'k', 'old', 'old', 'delay', 'default', 0, '[]',
                   'COMPLETED', 'Completed', '', now() - interval '1 day', 1, 'gone', 0, '[]',
                   NULL, NULL, '\\x00', '{{}}', '', now() - interval '1 day',
                   now() - interval '1 day', 0, false
            FROM generate_series(1, %s) AS g
            """,
            [n],
        )
        cursor.execute(
            """
            INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
            SELECT id, t.type, t.type, '', created, 'gone' FROM django_tasks_taskrun,
                   (VALUES ('PENDING'), ('RUNNING'), ('COMPLETED')) AS t(type)
            WHERE task_name = 'old'
            """
        )
    settle()


def drop_drained() -> None:
    """Delete the runs a drain added, leaving the history set up by :func:`add_history`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_tasks_taskrunstate WHERE run_id IN "
            "(SELECT id FROM django_tasks_taskrun WHERE task_name <> 'old')"
        )
        cursor.execute("DELETE FROM django_tasks_taskrun WHERE task_name <> 'old'")
        cursor.execute("DELETE FROM django_tasks_worker")


def settle() -> None:
    """VACUUM ANALYZE and CHECKPOINT before a timed drain, so that no checkpoint or
    autovacuum triggered by the set-up (a million inserted rows) runs during the measurement."""
    conn = open_worker_connection()
    try:
        for table in ("django_tasks_taskrun", "django_tasks_taskrunstate"):
            conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()


# -- (c) latency -----------------------------------------------------------------------------


def _raw_listener(ready: Any) -> None:
    """Claims and marks done in one transaction: ``started`` is the claim's clock, before its
    commit (a worker that ran its task inside that transaction)."""
    conn = open_worker_connection()
    conn.execute("LISTEN bench")
    ready.set()
    while True:
        with conn.transaction():
            rows = conn.execute(RAW_CLAIM, ["raw"]).fetchall()
            if rows:
                conn.execute(RAW_DONE, [[row[0] for row in rows]])
        if not rows:
            for _ in conn.notifies(timeout=1.0, stop_after=1):
                pass


#: The raw claim in autocommit, ``started`` set by the worker afterwards (RAW_STARTED).
RAW_CLAIM_COMMITTED = RAW_CLAIM.replace("started = clock_timestamp()", "started = NULL")
RAW_STARTED = """UPDATE bench_raw_job SET state_type = 'COMPLETED', finished = clock_timestamp(),
    started = to_timestamp(%s) WHERE id = ANY(%s)"""


def _raw_committed_listener(ready: Any) -> None:
    """A raw worker whose claim is committed before it calls the task (as ours, and any worker
    that holds no transaction open while a task runs): ``started`` is when the claim's result
    came back - this process's clock moved to the database's by an offset measured at start,
    as our worker stamps its runs - written with the run's completion."""
    conn = open_worker_connection()
    conn.autocommit = True
    offset = clock_offset(conn)
    conn.execute("LISTEN bench")
    ready.set()
    while True:
        rows = conn.execute(RAW_CLAIM_COMMITTED, ["raw"]).fetchall()
        if rows:
            started = time.time() + offset  # the task would be called here
            conn.execute(RAW_STARTED, [started, [row[0] for row in rows]])
        else:
            for _ in conn.notifies(timeout=1.0, stop_after=1):
                pass


#: The raw enqueue, returning the new row's id (to match it with when its commit returned).
RAW_INSERT_NOTIFY_ID = (
    f"WITH i AS (INSERT INTO bench_raw_job {RAW_COLUMNS} VALUES {RAW_VALUES} RETURNING id) "
    "SELECT (SELECT id FROM i), pg_notify('bench', 'default')"
)


def _latencies(rows: list[Any], committed: dict[Any, float]) -> dict[str, list[float]]:
    """``rows``: (id, created, started) as epochs on the database's clock. In ms, from the
    enqueue's INSERT (``created``) and from the moment its commit returned to the enqueuer
    (``committed``, this process's clock moved to the database's)."""
    out: dict[str, list[float]] = {"created": [], "committed": []}
    for run_id, created, started in rows:
        if started is None:
            continue
        out["created"].append((float(started) - float(created)) * 1000)
        if run_id in committed:
            out["committed"].append((float(started) - committed[run_id]) * 1000)
    return out


Latency = dict[str, tuple[float, float]]


def raw_latency(n: int, rate: float, *, committed: bool = False) -> Latency:
    """A raw LISTEN worker's enqueue -> start, p50 and p99 in ms, from the enqueue's INSERT
    ("created") and from its commit ("committed"); ``committed``: the worker's claim is
    committed before it would call the task."""
    raw(RAW_TABLE)
    ready = multiprocessing.Event()
    listener = _raw_committed_listener if committed else _raw_listener
    proc = multiprocessing.Process(target=listener, args=(ready,))
    proc.start()
    ready.wait(10)
    time.sleep(0.3)
    conn = open_worker_connection()

    def enqueue() -> Any:
        row = conn.execute(RAW_INSERT_NOTIFY_ID, [PAYLOAD]).fetchone()
        assert row is not None
        return row[0]

    returned = _paced(n, rate, conn, enqueue)
    rows = conn.execute(
        "SELECT id, extract(epoch FROM created), extract(epoch FROM started) FROM bench_raw_job"
    ).fetchall()
    conn.close()
    proc.kill()
    return {k: _percentiles(v) for k, v in _latencies(rows, returned).items()}


def _paced(n: int, rate: float, conn: Any, enqueue: Callable[[], Any]) -> dict[Any, float]:
    """``enqueue()`` ``n`` times at ``rate`` a second, then half a second for the last to
    start: each returned id with when its commit returned (this process's clock moved to the
    database's, by ``conn``)."""
    offset = clock_offset(conn)
    returned: dict[Any, float] = {}
    for _ in range(n):
        run_id = enqueue()
        returned[run_id] = time.time() + offset
        time.sleep(1 / rate)
    time.sleep(0.5)
    return returned


def ours_latency(n: int, rate: float, root: Path = ROOT) -> Latency:
    """An idle worker's enqueue -> start as :func:`raw_latency` measures it: to the run's
    RUNNING time (the worker's clock when it called the task, on the database's); the worker
    runs the code of ``root`` (this checkout, or another one to compare)."""
    reset()
    proc = start_workers(1, root=root)
    conn = open_worker_connection()
    try:
        returned = _paced(n, rate, conn, lambda: noop.delay().id)
    finally:
        stop_workers(proc)
    rows = conn.execute(
        """SELECT r.id, extract(epoch FROM r.created), extract(epoch FROM s.timestamp)
           FROM django_tasks_taskrun r JOIN django_tasks_taskrunstate s ON s.run_id = r.id
           WHERE s.type = 'RUNNING'"""
    ).fetchall()
    conn.close()
    return {k: _percentiles(v) for k, v in _latencies(rows, returned).items()}


def _percentiles(values: list[float]) -> tuple[float, float]:
    values.sort()
    return statistics.median(values), values[max(0, int(len(values) * 0.99) - 1)]


# -- (e) memory ------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no RSS for {pid}")


def worker_memory(first: int, total: int) -> tuple[int, int]:
    reset()
    proc = start_workers(1)
    try:
        child = int(raw("SELECT pid FROM django_tasks_worker WHERE stopped IS NULL")[0][0])
        noop.delay_many([()] * first)
        wait_done(OURS_LEFT)
        time.sleep(0.5)
        early = _rss_kib(child)
        for offset in range(first, total, 10_000):
            noop.delay_many([()] * min(10_000, total - offset))
        wait_done(OURS_LEFT)
        time.sleep(0.5)
        late = _rss_kib(child)
    finally:
        stop_workers(proc)
    return early, late


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single-runs", type=int, default=8000)
    parser.add_argument("--bulk-runs", type=int, default=100_000)
    parser.add_argument("--drain-runs", type=int, default=20_000)
    parser.add_argument("--history-runs", type=int, default=1_000_000)
    parser.add_argument("--latency-runs", type=int, default=500)
    parser.add_argument("--memory-runs", type=int, default=100_000)
    options = parser.parse_args(argv)
    call_command("migrate", verbosity=0)
    reset()
    rows: list[tuple[str, str, str, str, str]] = []

    def ratio_row(label: str, ours: float, base: float, target: str, unit: str = "/s") -> None:
        rows.append(
            (label, f"{ours:,.0f}{unit}", f"{base:,.0f}{unit}", f"{ours / base:.2f}", target)
        )
        print(rows[-1], flush=True)

    # Single enqueues are short and the machine is noisy: alternate the two, eight rounds each,
    # so that neither gets the warmer or the quieter moments.
    n = options.single_runs // 8
    ours_rates, raw_rates = [], []
    for _ in range(8):
        raw_rates.append(raw_single(n, notify=True))
        ours_rates.append(ours_single(n))
    ratio_row(
        "(a) single enqueue vs INSERT+NOTIFY per commit",
        statistics.median(ours_rates),
        statistics.median(raw_rates),
        ">= 0.9",
    )
    base = raw_single(n, notify=False)
    rows.append(("    raw INSERT per commit, no NOTIFY", "", f"{base:,.0f}/s", "", ""))
    ratio_row(
        "(a) bulk delay_many vs executemany",
        ours_bulk(options.bulk_runs),
        raw_bulk(options.bulk_runs),
        ">= 1.0",
    )
    drains: dict[int, float] = {}
    raw_drains: dict[int, float] = {}
    for concurrency in (2, 4):
        reset()
        raw_drains[concurrency] = raw_drain(options.drain_runs, concurrency)
        reset()
        drains[concurrency] = ours_drain(options.drain_runs, concurrency)
        ratio_row(
            f"(b) drain {options.drain_runs:,} no-op runs, {concurrency} processes "
            "vs raw 10-per-claim",
            drains[concurrency],
            raw_drains[concurrency],
            ">= 0.8",
        )
    reset()
    fixed = ours_drain(options.drain_runs, 2, "--batch-size", "10")
    ratio_row(
        "(b) same, 2 processes, --batch-size 10 (the baseline's claim size)",
        fixed,
        raw_drains[2],
        "",
    )
    p50, p99 = ours_latency(options.latency_runs, 50)["created"]
    raw_p50, raw_p99 = raw_latency(options.latency_runs, 50)["created"]
    rows.append(
        (
            "(c) enqueue->start p50, idle worker, 50 runs/s",
            f"{p50:.1f} ms",
            f"{raw_p50:.1f} ms",
            "",
            "<= 3 ms",
        )
    )
    rows.append(("(c) enqueue->start p99", f"{p99:.1f} ms", f"{raw_p99:.1f} ms", "", "<= 10 ms"))
    print(rows[-2:], flush=True)
    # (d) compares medians of three drains each, the empty ones measured just before the
    # history is added: one drain of each is at the mercy of this machine's noise.
    empty = []
    for _ in range(3):
        reset()
        empty.append(ours_drain(options.drain_runs, 2))
    reset()
    add_history(options.history_runs)
    with_history = []
    for _ in range(3):
        with_history.append(ours_drain(options.drain_runs, 2))
        drop_drained()
    reset()
    rows.append(
        (
            f"(d) drain, 2 processes, {options.history_runs:,} finished runs in history",
            f"{statistics.median(with_history):,.0f}/s",
            f"{statistics.median(empty):,.0f}/s (empty)",
            f"{statistics.median(with_history) / statistics.median(empty):.2f}",
            ">= 0.9",
        )
    )
    print(rows[-1], flush=True)
    early, late = worker_memory(1000, options.memory_runs)
    rows.append(
        (
            f"(e) worker RSS after {options.memory_runs:,} runs vs after 1,000",
            f"{late / 1024:.1f} MiB",
            f"{early / 1024:.1f} MiB",
            f"{late / early:.2f}",
            "< 1.10",
        )
    )
    reset()
    raw("DROP TABLE IF EXISTS bench_raw_job")
    version = raw("SHOW server_version")[0][0]
    print(f"\nPostgreSQL {version}, {os.cpu_count()} CPUs\n")
    print("| measure | django_tasks | raw psycopg baseline | ratio | target |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
