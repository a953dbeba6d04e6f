import pytest
from django.test import override_settings

from django_tasks import flush
from django_tasks.models import TaskRun
from tests.taskapp.tasks import add, explode

#: Both ways of recording inline runs: batched (the default; the writer has its own
#: connection, so the test must commit: transaction=True) and sync (in the test's transaction).
both_modes = pytest.mark.parametrize(
    "mode",
    [
        pytest.param("batched", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("sync", marks=pytest.mark.django_db),
    ],
    indirect=True,
)


@pytest.fixture
def mode(request):
    with override_settings(DJANGO_TASKS={"RECORD_MODE": request.param}):
        yield request.param


@both_modes
def test_call_runs_inline_and_records_completed(mode):
    assert add(2, 3) == 5
    if mode == "batched":
        assert not TaskRun.objects.exists()  # not yet: the writer waits for more
    assert flush()
    run = TaskRun.objects.get()
    assert (run.origin, run.task_name, run.state_type, run.state_name) == (
        "call",
        "add",
        "COMPLETED",
        "Completed",
    )
    assert run.parameters_preview == {"a": 2, "b": 3}
    assert run.result_preview == 5
    assert run.attempts == 1
    history = list(run.states.values_list("type", flat=True))
    assert history == ["PENDING", "RUNNING", "COMPLETED"]
    stamps = list(run.states.values_list("timestamp", flat=True))
    assert stamps == sorted(stamps)
    assert run.duration is not None
    assert run.duration >= 0


@both_modes
def test_call_failure_is_recorded_and_reraised(mode):
    with pytest.raises(RuntimeError, match="kaput"):
        explode("kaput")
    assert flush()
    run = TaskRun.objects.get()
    assert run.state_type == "FAILED"
    assert run.state_message == "RuntimeError: kaput"
    assert "raise RuntimeError(message)" in run.traceback
    assert list(run.states.values_list("type", flat=True)) == ["PENDING", "RUNNING", "FAILED"]


@pytest.mark.django_db
def test_wrong_arguments_raise_before_running():
    with pytest.raises(TypeError, match="Wrong arguments for task 'add'"):
        add(1)  # type: ignore[call-arg]
    assert flush()
    assert not TaskRun.objects.exists()


@pytest.mark.django_db(transaction=True)
@override_settings(DJANGO_TASKS={"RECORD_MODE": "sync"})
def test_recording_failure_does_not_change_the_call(caplog):
    caplog.set_level("DEBUG", logger="django_tasks")
    from django.db import connection, transaction

    with transaction.atomic():
        with pytest.raises(Exception), connection.cursor() as cursor:  # noqa: B017, PT011
            cursor.execute("SELECT 1/0")  # break the transaction on purpose
        assert add(1, 1) == 2  # the record cannot be written in a broken transaction
        transaction.set_rollback(True)
    assert "Could not record inline run" in caplog.text
    assert not TaskRun.objects.exists()
