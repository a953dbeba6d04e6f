"""A signed payload is bound to its task and field: moved elsewhere it does not verify; payloads
signed before the binding still read; a retry and a result shared through the cache work."""

from __future__ import annotations

import hmac
import pickle

import pytest
from django.conf import settings

from django_tasks import flush, task
from django_tasks.actions import retry_run
from django_tasks.futures import TaskRunFuture
from django_tasks.models import TaskRun
from django_tasks.serializers import (
    _DIGEST_SIZE,
    _MAGIC_UNBOUND,
    PayloadSignatureError,
    _key,
    dumps,
    loads,
    rebind,
)
from tests.taskapp.tasks import add, describe

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_parameters_moved_to_another_tasks_run_are_refused():
    mine = add.delay(20, 22)
    theirs = describe.delay("harmless")
    stolen = TaskRun.objects.get(pk=mine.id).parameters
    TaskRun.objects.filter(pk=theirs.id).update(parameters=stolen)
    drain()
    assert mine.result(timeout=1) == 42
    run = TaskRun.objects.get(pk=theirs.id)
    assert run.state_type == "FAILED"
    assert run.state_message.startswith("Refused to unpickle the parameters: ")
    assert f"as the parameters of task {describe.key!r}" in run.state_message
    assert "moved from another task's run or another field" in run.state_message


def test_parameters_moved_into_a_result_are_refused():
    future = add.delay(1, 2)
    drain()
    parameters = TaskRun.objects.get(pk=future.id).parameters
    TaskRun.objects.filter(pk=future.id).update(result=parameters)
    with pytest.raises(PayloadSignatureError, match="as the result of task"):
        future.result(timeout=1)


def test_the_binding_is_in_the_signature():
    payload = dumps({"x": 1}, what="parameters", task_key="a")
    assert loads(payload, task_key="a", field="parameters") == {"x": 1}
    for task_key, field in (("b", "parameters"), ("a", "result"), ("a", "value")):
        with pytest.raises(PayloadSignatureError):
            loads(payload, task_key=task_key, field=field)
    moved = rebind(payload, field="parameters", from_task="a", to_task="b")
    assert loads(moved, task_key="b", field="parameters") == {"x": 1}
    with pytest.raises(PayloadSignatureError):
        rebind(payload, field="parameters", from_task="b", to_task="c")  # verified first


def unbound(value: object) -> bytes:
    """A payload as versions before the binding signed it."""
    data = pickle.dumps(value)
    return _MAGIC_UNBOUND + hmac.digest(_key(settings.SECRET_KEY), data, "sha256") + data


def test_payloads_signed_before_the_binding_still_run_and_read():
    """Runs enqueued by an older version during a rolling deploy, results stored before."""
    future = add.delay(0, 0)
    TaskRun.objects.filter(pk=future.id).update(parameters=unbound(((40, 2), {})))
    drain()
    assert future.result(timeout=1) == 42
    TaskRun.objects.filter(pk=future.id).update(result=unbound("old result"))
    assert TaskRunFuture(future.id).result(timeout=1) == "old result"
    tampered = bytearray(unbound("x"))
    tampered[len(_MAGIC_UNBOUND) + _DIGEST_SIZE + 3] ^= 1
    with pytest.raises(PayloadSignatureError):
        loads(bytes(tampered))


def test_a_retried_run_runs_with_its_bound_parameters():
    future = add.delay(2, 3)
    drain()
    again: TaskRunFuture[int] = TaskRunFuture(retry_run(future.id))
    drain()
    assert again.result(timeout=1) == 5


def _shared_key(context: object, parameters: dict[str, object]) -> str:
    return f"shared-{parameters['x']}"


@task(cache_key_fn=_shared_key)
def computes(x: int) -> int:
    return x * 10


@task(cache_key_fn=_shared_key)
def reuses(x: int) -> int:
    raise AssertionError("the cached result of computes() is used instead")


def test_a_result_cached_by_one_task_is_read_by_another_tasks_run():
    assert computes(4) == 40
    assert reuses(4) == 40  # inline: rebound for reuses
    background = reuses.delay(4)
    drain()
    assert background.result(timeout=1) == 40  # in the worker too, and readable after
    flush()
    run = TaskRun.objects.get(pk=background.id)
    assert run.state_name == "Cached"
