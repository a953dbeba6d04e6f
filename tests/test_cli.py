"""``manage.py taskruns``: ls, inspect, logs, cancel, retry - tables, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from django_tasks import flush
from django_tasks.models import TaskRun
from django_tasks.worker import Worker
from tests.conftest import ROOT
from tests.taskapp.tasks import add, chatty, explode

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command("taskruns", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def finished():
    ok = add.delay(2, 3)
    bad = explode.delay("cli sees this")
    talk = chatty.delay(7)
    waiting = add.apply_async((1, 1), queue="later")
    Worker(burst=True, handle_signals=False).run()
    flush()
    return ok, bad, talk, waiting


def test_ls_table_and_filters(finished):
    ok, bad, _, waiting = finished
    table = run("ls")
    header, *rows = table.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "STATE_NAME",
        "QUEUE",
        "ATTEMPTS",
        "CREATED",
        "FINISHED",
    ]
    assert len(rows) == 4
    assert rows[0].startswith(str(waiting.id))  # newest first
    failed = run("ls", "--state", "FAILED")
    assert str(bad.id) in failed
    assert str(ok.id) not in failed
    assert str(waiting.id) in run("ls", "--queue", "later")
    assert str(ok.id) in run("ls", "--task", "add", "--state", "COMPLETED")
    assert run("ls", "--task", "nothing") == "No runs.\n"
    assert len(run("ls", "--limit", "2").splitlines()) == 3


def test_ls_json(finished):
    rows = json.loads(run("ls", "--json", "--state", "COMPLETED", "--task", "add"))
    assert [(r["task_name"], r["state_name"]) for r in rows] == [("add", "Completed")]
    assert rows[0]["id"] == str(finished[0].id)


def test_inspect(finished):
    ok, bad, _, _ = finished
    text = run("inspect", str(bad.id))
    assert "RuntimeError: cli sees this" in text
    assert "History:" in text
    assert "raise RuntimeError(message)" in text  # the traceback
    data = json.loads(run("inspect", str(ok.id), "--json"))
    assert (data["result_preview"], data["parameters_preview"]) == (5, {"a": 2, "b": 3})
    assert [h["name"] for h in data["history"]] == ["Scheduled", "Pending", "Running", "Completed"]


def test_logs(finished):
    talk = finished[2]
    lines = run("logs", str(talk.id)).splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["INFO hello 7", "WARNING careful"]
    data = [json.loads(line) for line in run("logs", str(talk.id), "--json").splitlines()]
    assert [d["message"] for d in data] == ["hello 7", "careful"]
    assert run("logs", str(talk.id), "--follow").count("hello 7") == 1  # ended: returns


def test_cancel_and_retry(finished):
    ok, bad, _, waiting = finished
    assert run("cancel", str(waiting.id)) == f"Run {waiting.id}: CANCELLED.\n"
    assert run("cancel", str(ok.id)) == f"Run {ok.id} had already finished.\n"
    made = json.loads(run("retry", str(bad.id), "--json"))
    assert made["retry_of"] == str(bad.id)
    assert TaskRun.objects.get(pk=made["id"]).state_type == "SCHEDULED"
    with pytest.raises(CommandError, match="only a finished run can be retried"):
        run("retry", made["id"])
    add(1, 2)
    flush()
    inline = TaskRun.objects.get(origin="call")
    with pytest.raises(CommandError, match="ran inline"):
        run("retry", str(inline.id))


@pytest.mark.parametrize("verb", ["inspect", "logs", "cancel", "retry"])
def test_unknown_or_malformed_ids(verb):
    with pytest.raises(CommandError, match="No task run 01890000-0000-7000-8000-000000000000"):
        run(verb, "01890000-0000-7000-8000-000000000000")
    with pytest.raises(CommandError, match="'nope' is not a run id"):
        run(verb, "nope")


def test_exit_code_and_message_of_the_real_command(worker_env):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "taskruns", "inspect", "nope"],
        cwd=ROOT,
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "'nope' is not a run id" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["purge", "--older-than", "99999999999999w"], "Age must be at most a century"),
        (["purge", "--older-than", "1e400d"], "Age must look like"),
        (["purge", "--older-than", "7d", "--batch-size", str(10**20)], "--batch-size must be"),
        (["purge", "--older-than", "7d", "--batch-size", "0"], "--batch-size must be"),
        (["ls", "--limit", str(10**20)], "--limit must be from 1 to 100,000"),
        (["ls", "--limit", "0"], "--limit must be from 1"),
    ],
)
def test_out_of_range_durations_and_sizes_are_command_errors(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
