"""A short soak (issue 25, goal 3), in CI: a steady producer, the periodic purge, a real pool.

The 30-minute soak is ``benchmarks/soak.py`` (its figures are in docs/performance.md); this
one runs for a minute and a half at a rate any machine that runs the suite keeps up with and
checks what must not drift: every period ends what the producer enqueued, the enqueue-to-start
latency does not grow, the run table holds a bounded number of rows, the pool's memory is flat.
Space reclaimed by autovacuum (whose launcher wakes once a minute) is the long soak's to show.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest
from django.db import connection

from tests.conftest import wait_for_live_workers
from tests.soak_probe import Period, Producer, Purger, measure

pytestmark = pytest.mark.django_db(transaction=True)

RATE = 300  # runs a second
PERIOD = 10  # seconds
PERIODS = 8
PURGE_EVERY = 5  # seconds
KEPT = timedelta(seconds=20)  # the purge deletes runs finished before this: a period is
# measured 2 s after its end, so none of its runs is purged yet


def soak(pool: int) -> list[Period]:
    producer, purger = Producer(RATE), Purger(PURGE_EVERY, KEPT)
    producer.start()
    purger.start()
    periods = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            start = soak_start = cursor.fetchone()[0]
        began = time.monotonic()
        for number in range(1, PERIODS + 1):
            # 2 s past the period's end: its last runs have started and ended.
            time.sleep(max(0.0, began + PERIOD * number + 2 - time.monotonic()))
            end = start + timedelta(seconds=PERIOD)
            periods.append(measure(start, end, soak_start, pool))
            start = end
    finally:
        producer.stopped.set()
        purger.stopped.set()
        producer.join()
        purger.join()
    assert purger.deleted > RATE * PERIOD  # the purge ran, beside the workers
    return periods


def test_a_steady_producer_with_the_purge_beside_it_keeps_every_figure_flat(start_worker):
    proc = start_worker("--concurrency", "2")
    wait_for_live_workers(1)
    periods = soak(proc.pid)
    per_period = RATE * PERIOD
    report = "\n".join(str(period) for period in periods)
    # The workers keep up: each period (the first is the pool's warm-up) ends what came in.
    assert all(abs(p.ended - per_period) <= per_period * 0.1 for p in periods[1:]), report
    # Latency does not grow: the last three periods' p99 against the first three.
    first = statistics.median(p.p99_ms for p in periods[:3])
    last = statistics.median(p.p99_ms for p in periods[-3:])
    assert last <= first * 1.5 + 50, report
    assert all(p.p99_ms < 2000 for p in periods), report
    # History is bounded in rows: what the purge keeps, the runs of its interval, the queue.
    bound = RATE * (KEPT.total_seconds() + PURGE_EVERY + PERIOD)
    assert all(p.rows <= bound for p in periods[2:]), report
    # Memory is flat once warm.
    assert periods[-1].rss_mb <= periods[1].rss_mb * 1.1 + 10, report
