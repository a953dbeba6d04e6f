"""The Worker class in this process (real PostgreSQL, its own connections)."""

import threading
import time

import pytest

from django_tasks import TaskRunFailed, TaskRunFuture
from django_tasks.models import TaskRun
from django_tasks.serializers import _MAGIC, _signature
from django_tasks.topic import open_worker_connection
from django_tasks.worker import Worker
from django_tasks.worker.claimer import Claimer
from django_tasks.worker.connection import QueueConnection
from tests.taskapp.models import Effect
from tests.taskapp.tasks import add, explode, noop, raise_unpicklable, record, return_unpicklable

from .conftest import drain, wait_until


def history(future):
    return list(TaskRun.objects.get(pk=future.id).states.values_list("type", flat=True))


pytestmark = pytest.mark.django_db(transaction=True)


def test_runs_complete_with_full_history_and_result():
    futures = [add.delay(i, 10) for i in range(5)]
    worker = drain(concurrency=2, batch_size=2)
    assert worker.processed == 5
    assert [f.result(timeout=1) for f in futures] == [10, 11, 12, 13, 14]
    for future in futures:
        run = TaskRun.objects.get(pk=future.id)
        assert history(future) == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
        stamps = list(run.states.values_list("timestamp", flat=True))
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 4
        assert (run.attempts, run.worker, run.result_preview) == (1, worker.name, future.result())
        assert run.started
        assert run.finished
        assert run.finished >= run.started


def test_failure_records_traceback_and_reraises_in_result():
    future = explode.delay("kaput")
    drain()
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.state_message) == ("FAILED", "RuntimeError: kaput")
    assert "raise RuntimeError(message)" in run.traceback
    assert history(future) == ["SCHEDULED", "PENDING", "RUNNING", "FAILED"]
    with pytest.raises(RuntimeError, match="kaput"):
        future.result(timeout=1)
    error = future.result(timeout=1, raise_on_failure=False)
    assert isinstance(error, RuntimeError)


def test_unpicklable_exception_and_result_still_end_the_run():
    bad_exc, bad_result = raise_unpicklable.delay(), return_unpicklable.delay()
    drain()
    with pytest.raises(TaskRunFailed, match="cannot pickle me") as info:
        bad_exc.result(timeout=1)
    assert "Unpicklable" in info.value.traceback
    assert info.value.state.is_failed()
    run = TaskRun.objects.get(pk=bad_result.id)
    assert run.state_type == "FAILED"
    assert "result cannot be pickled" in run.state_message


def _tamper(future, payload):
    TaskRun.objects.filter(pk=future.id).update(parameters=payload)


def test_bad_runs_fail_clearly_and_the_worker_goes_on():
    unknown = add.delay(1, 1)
    TaskRun.objects.filter(pk=unknown.id).update(task_key="0" * 32, task_name="gone.task")
    tampered = add.delay(1, 2)
    raw = bytearray(TaskRun.objects.get(pk=tampered.id).parameters)
    raw[-2] ^= 0x01
    _tamper(tampered, bytes(raw))
    garbage = add.delay(1, 3)
    key = "tests-secret-key"
    signed_garbage = (
        _MAGIC + _signature(b"not a pickle", key, add.key, "parameters") + b"not a pickle"
    )
    _tamper(garbage, signed_garbage)
    good = add.delay(2, 2)
    drain()
    states = {f: TaskRun.objects.get(pk=f.id) for f in (unknown, tampered, garbage, good)}
    assert states[unknown].state_type == "FAILED"
    assert "Unknown task 'gone.task'" in states[unknown].state_message
    assert "not registered in this worker" not in states[unknown].state_message
    assert "no task with this key is registered in this worker" in states[unknown].state_message
    assert states[tampered].state_type == "FAILED"
    assert "signature does not verify" in states[tampered].state_message
    assert "It was not unpickled" in states[tampered].state_message
    assert states[garbage].state_type == "FAILED"
    assert "could not be unpickled" in states[garbage].state_message
    assert history(tampered) == ["SCHEDULED", "PENDING", "FAILED"]
    assert good.result(timeout=1) == 4
    with pytest.raises(TaskRunFailed, match="Unknown task"):
        unknown.result(timeout=1)


def test_a_known_name_under_another_key_says_the_worker_runs_other_code():
    """A run enqueued by code whose task moved (same name, another key): the message says
    the worker and the enqueuer run different code, instead of only "unknown"."""
    moved = add.delay(1, 1)
    TaskRun.objects.filter(pk=moved.id).update(task_key="1" * 32)
    drain()
    run = TaskRun.objects.get(pk=moved.id)
    assert run.state_type == "FAILED"
    assert f"Unknown task 'add' (key {'1' * 32})" in run.state_message
    assert "A task called 'add' is registered here under another key" in run.state_message
    assert "restart it" in run.state_message


def test_task_database_writes_use_djangos_connection():
    futures = [record.delay(f"effect-{i}") for i in range(3)]
    drain()
    assert sorted(Effect.objects.values_list("label", flat=True)) == [
        "effect-0",
        "effect-1",
        "effect-2",
    ]
    assert all(f.state.is_completed() for f in futures)


def test_queues_are_taken_in_the_given_order():
    from tests.taskapp.tasks import on_other_queue

    other = on_other_queue.delay()
    default = noop.delay()
    worker = Worker(["other", "default"], burst=True, handle_signals=False, batch_size=1)
    worker.run()
    runs = TaskRun.objects.in_bulk([other.id, default.id])
    first, second = runs[other.id].started, runs[default.id].started
    assert first is not None
    assert second is not None
    assert first < second


def test_run_taken_away_is_not_executed_when_checked_first(caplog):
    caplog.set_level("DEBUG", logger="django_tasks")
    future = record.delay("never")
    worker = Worker(burst=True, handle_signals=False)
    worker.durations[record.key] = 1.0  # known to be long: RUNNING is written (and checked) first
    db = QueueConnection(worker.alias, lambda: False)
    [claimed] = worker.claimer().claim(db)
    TaskRun.objects.filter(pk=future.id).update(worker="someone-else")
    worker._process(db, claimed)
    db.close()
    assert not Effect.objects.exists()
    assert "no longer held by this worker" in caplog.text


def test_short_run_taken_away_has_its_outcome_discarded(caplog):
    caplog.set_level("DEBUG", logger="django_tasks")
    future = record.delay("ran")
    worker = Worker(burst=True, handle_signals=False)
    db = QueueConnection(worker.alias, lambda: False)
    [claimed] = worker.claimer().claim(db)
    TaskRun.objects.filter(pk=future.id).update(worker="someone-else")
    worker._process(db, claimed)  # short runs are not checked first: it runs...
    worker.deferred.flush(db)
    db.close()
    assert Effect.objects.count() == 1
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.worker) == ("PENDING", "someone-else")  # ...but changes nothing
    assert f"Run {future.id} was taken from this worker" in caplog.text


def test_stopping_worker_hands_back_claimed_runs():
    futures = [noop.delay() for _ in range(5)]
    worker = Worker(burst=True, handle_signals=False, batch_size=5)
    db = QueueConnection(worker.alias, lambda: False)
    claimed = worker.claimer().claim(db)
    assert len(claimed) == 5
    worker._hand_back(db, claimed)
    db.close()
    for future in futures:
        assert history(future) == ["SCHEDULED", "PENDING", "SCHEDULED"]
        run = TaskRun.objects.get(pk=future.id)
        assert (run.state_type, run.worker) == ("SCHEDULED", "")
    drain()
    assert all(f.state.is_completed() for f in futures)


def test_listening_worker_wakes_on_notify_and_stops():
    worker = Worker(handle_signals=False, poll_interval=30)  # polling alone would take 30 s
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.5)  # the worker is idle, waiting
        started = time.monotonic()
        assert add.delay(20, 22).result(timeout=10) == 42
        assert time.monotonic() - started < 5
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_connection_is_reopened_after_the_server_drops_it(caplog):
    caplog.set_level("DEBUG", logger="django_tasks")
    db = QueueConnection("default", lambda: False)
    assert db.execute("SELECT 1", {}, give_up_on_stop=False) == [(1,)]
    assert db.conn is not None
    pid = db.conn.info.backend_pid
    killer = open_worker_connection()
    killer.execute("SELECT pg_terminate_backend(%s)", [pid])
    killer.close()
    assert db.execute("SELECT pg_backend_pid()", {}, give_up_on_stop=False)[0][0] != pid
    assert "Database unavailable" in caplog.text
    db.close()


def test_claim_gives_up_when_stopping_and_the_database_is_gone(monkeypatch):
    from django.db import connections

    monkeypatch.setitem(connections["default"].settings_dict, "PORT", "1")  # nothing listens
    db = QueueConnection("default", lambda: True)
    assert db.execute("SELECT 1", {}, give_up_on_stop=True) == []
    assert db.conn is None


def test_future_for_missing_run():
    import uuid

    with pytest.raises(TaskRun.DoesNotExist, match="never committed"):
        _ = TaskRunFuture(uuid.uuid4()).state


def test_result_times_out_while_scheduled():
    future = noop.delay()
    with pytest.raises(TimeoutError, match="still Scheduled"):
        future.result(timeout=0.05)
    assert not future.wait(timeout=0.01).is_final()


def test_bad_concurrency():
    with pytest.raises(ValueError, match="at least 1"):
        Worker(concurrency=0)


def test_claims_grow_for_short_runs_unless_the_size_is_given():
    adaptive = Worker(burst=True, handle_signals=False)
    assert adaptive._batch_limit() == 1  # nothing known yet: do not hoard
    adaptive.durations["fast"] = 0.0001
    assert adaptive._batch_limit() == 100  # capped
    adaptive.durations["medium"] = 0.001
    assert adaptive._batch_limit() == 20  # about 20 ms of the slowest known task
    adaptive.durations["slow"] = 1.0
    assert adaptive._batch_limit() == 1  # slow tasks: one at a time, others may start them
    fixed = Worker(burst=True, handle_signals=False, batch_size=3)
    fixed.durations["fast"] = 0.0001
    assert fixed._batch_limit() == 3


def test_adaptive_worker_claims_big_batches_of_short_runs():
    futures = add.delay_many([(i, 1) for i in range(150)])
    worker = Worker(burst=True, handle_signals=False)
    worker.run()
    assert all(f.state.is_completed() for f in futures)
    assert worker.processed == 150
    assert worker.claims < 10  # a handful of claims, not 15 claims of 10


def test_connections_are_closed_after_runs_once_django_opened_one(monkeypatch):
    """Like the end of a request - but a process whose tasks never opened a Django
    connection has nothing to close, and skips asking."""
    from django.db import connection

    from django_tasks.worker import running

    closed = []
    monkeypatch.setattr(running, "close_old_connections", lambda: closed.append(1))
    noop.delay()
    noop.delay()
    connection.close()  # delay() used it: a worker process would not have
    monkeypatch.setattr(running, "_django_connected", False)
    drain(batch_size=1)
    assert closed == []
    record.delay("opens a connection")
    connection.close()
    monkeypatch.setattr(running, "_django_connected", False)
    drain(batch_size=1)
    assert closed == [1]
    assert running._django_connected
    monkeypatch.setattr(running, "_django_connected", False)
    noop.delay()  # Django's connection is open when the worker starts: closed after runs
    drain(batch_size=1)
    assert closed == [1, 1]


# -- unexpected errors: logged and waited out, never the end of a thread that claims ---------


def _fails_once(original):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the worker")
        return original(*args, **kwargs)

    wrapper.calls = calls  # type: ignore[attr-defined]
    return wrapper


def test_a_failed_admission_hands_the_batch_back_and_the_worker_goes_on(monkeypatch, caplog):
    from django_tasks.limits.gate import LimitGate
    from django_tasks.models import Limit
    from tests.taskapp.tasks import limited_sleep

    monkeypatch.setattr("django_tasks.worker.claimer.ERROR_BACKOFF", 0.01)
    Limit.objects.create(scope="tag", name="limited", concurrency=5)
    admit = _fails_once(LimitGate.admit)
    monkeypatch.setattr(LimitGate, "admit", admit)
    future = limited_sleep.delay(0, "admitted at last")
    drain()
    assert future.result(timeout=5) == "admitted at last"
    assert len(admit.calls) == 2
    assert "Could not claim runs; trying again" in caplog.text
    run = TaskRun.objects.get(pk=future.id)
    assert run.attempts == 1  # the handed-back claim cost no attempt
    assert run.crashes == 1  # ... but counts towards MAX_CRASHES: it cannot go round for ever
    messages = list(run.states.values_list("message", flat=True))
    assert "Handed back: the worker could not admit it (RuntimeError: a bug in the worker)." in (
        messages
    )


def test_the_async_lane_outlives_an_error_in_its_claim(monkeypatch, caplog):
    from tests.taskapp.tasks import async_add

    monkeypatch.setattr("django_tasks.worker.claimer.ERROR_BACKOFF", 0.01)
    original = Claimer.claim
    failed: list[object] = []

    def claim(self, db, limit=None):
        if self.lane is not None and not failed:
            failed.append(self.lane)
            raise RuntimeError("a bug in the lane")
        return original(self, db, limit)

    monkeypatch.setattr(Claimer, "claim", claim)
    future: TaskRunFuture[int] = TaskRunFuture(async_add.delay(2, 3).id)
    drain()
    assert failed
    assert future.result(timeout=5) == 5
    assert "a bug in the lane" in caplog.text


def _claims_always_fail(monkeypatch) -> list[object]:
    monkeypatch.setattr("django_tasks.worker.claimer.ERROR_BACKOFF", 0.01)
    calls: list[object] = []

    def claim(self, db, limit=None):
        calls.append(self.lane)
        raise RuntimeError("a claim that always fails")

    monkeypatch.setattr(Claimer, "claim", claim)
    return calls


def test_a_burst_worker_gives_up_after_claims_fail_in_a_row(monkeypatch, caplog):
    from django_tasks.worker.claimer import BURST_ERRORS
    from django_tasks.worker.process import EXIT_GAVE_UP

    calls = _claims_always_fail(monkeypatch)
    worker = Worker(burst=True, handle_signals=False)
    assert worker.run() == EXIT_GAVE_UP
    # Counted per claiming thread (the slot's calls have no lane): the first to fail
    # BURST_ERRORS times in a row stops the process; the other stops with it.
    slot, lane = calls.count(None), len(calls) - calls.count(None)
    assert max(slot, lane) == BURST_ERRORS
    assert len(calls) <= 2 * BURST_ERRORS
    assert f"Could not claim runs {BURST_ERRORS} times in a row; this burst gives up" in (
        caplog.text
    )


def test_a_worker_that_is_not_a_burst_goes_on_trying(monkeypatch):
    from django_tasks.worker.claimer import BURST_ERRORS

    calls = _claims_always_fail(monkeypatch)
    worker = Worker(handle_signals=False, poll_interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: len(calls) > 3 * BURST_ERRORS, timeout=10)
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert not worker.gave_up


def test_a_claim_that_succeeds_starts_the_count_of_failures_again(monkeypatch):
    from django_tasks.worker.claimer import BURST_ERRORS

    monkeypatch.setattr("django_tasks.worker.claimer.ERROR_BACKOFF", 0.01)
    original = Claimer.claim
    calls: dict[bool, int] = {True: 0, False: 0}  # by thread: the slot's, the lane's

    def claim(self, db, limit=None):
        # Each thread's first claims fail, except every BURST_ERRORS-th: never BURST_ERRORS
        # in a row, but more than that in all.
        calls[self.lane is None] += 1
        n = calls[self.lane is None]
        if n % BURST_ERRORS and n < 3 * BURST_ERRORS:
            raise RuntimeError("fails now and then")
        return original(self, db, limit)

    monkeypatch.setattr(Claimer, "claim", claim)
    future = add.delay(1, 2)
    drain()  # exits 0
    assert future.result(timeout=5) == 3
    assert calls[True] >= 3 * BURST_ERRORS


def test_the_heartbeat_outlives_an_unexpected_error(monkeypatch, caplog):
    from django_tasks.models import Worker as WorkerRow

    monkeypatch.setattr("django_tasks.worker.claimer.ERROR_BACKOFF", 0.01)
    beat = _fails_once(Worker._beat)
    monkeypatch.setattr(Worker, "_beat", beat)
    worker = Worker(handle_signals=False)
    worker.heartbeat_interval = 0.05
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(beat.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(beat.calls) >= 3  # it went on beating after the error
        row = WorkerRow.objects.get(name=worker.name)
        assert row.stopped is None
    finally:
        worker.stop()
        thread.join(10)
    assert "Control thread: unexpected error" in caplog.text
