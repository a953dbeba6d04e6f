"""Red team: async tasks that leave their loop broken for the runs after them."""

from __future__ import annotations

import pytest

from django_tasks.models import TaskRun
from tests.taskapp.redteam import async_shuts_executor, async_to_thread

from .conftest import drain

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_connections_of_sync_to_async"),
]


@pytest.mark.xfail(strict=True, reason="red team: one async run can shut the lane loop's executor")
def test_an_async_run_that_shuts_the_loops_executor_does_not_fail_the_runs_after_it():
    """An async run awaits loop.shutdown_default_executor() and completes; every later async
    run of the process that uses asyncio.to_thread() (or run_in_executor(None, ...)) then
    fails with "RuntimeError: Executor shutdown has been called", for as long as the
    process lives: the lane's loop is kept (LoopThread restarts only a loop that stopped)."""
    async_shuts_executor.delay("first")
    after = [async_to_thread.delay(f"after-{i}") for i in range(3)]
    drain()
    states = [TaskRun.objects.get(pk=f.id) for f in after]
    print([(r.state_type, r.state_message) for r in states])
    assert all(r.state_type == "COMPLETED" for r in states)
