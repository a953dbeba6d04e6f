"""What a reloading worker watches (django_tasks.worker.watched_files), without a worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from django_tasks.worker import watched_files
from django_tasks.worker.watched_files import (
    MOST_FILES,
    changed_file,
    load_snapshot,
    project_files,
    save_snapshot,
    take,
)


def tree(root: Path) -> Path:
    """A project with an app, a virtualenv, hidden, tool and build directories inside it."""
    for name in (
        "app/tasks.py",
        "app/sub/models.py",
        ".venv/lib/python3/site-packages/big.py",
        "tools_env/lib/x.py",
        ".tox/py311/y.py",
        "node_modules/z.py",
        "build/lib/app/tasks.py",
        "app/__pycache__/tasks.cpython-311.py",
        "app/notes.txt",
    ):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "tools_env" / "pyvenv.cfg").write_text("home = /usr\n")  # a venv by another name
    return root


def test_project_files_leave_out_virtualenvs_hidden_tool_and_build_directories(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path)
    found = sorted(str(p.relative_to(root)) for p in project_files([root]))
    assert found == ["app/sub/models.py", "app/tasks.py"]


def test_project_files_stop_at_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(The warning is read from the logger itself: a worker's logging set up by an earlier
    test stops django_tasks.worker's records from reaching pytest's capture.)"""
    said: list[str] = []
    monkeypatch.setattr(
        watched_files.logger, "warning", lambda message, *args: said.append(message % args)
    )
    for i in range(MOST_FILES + 5):
        (tmp_path / f"m{i}.py").write_text("")
    assert len(project_files([tmp_path])) == MOST_FILES
    assert [m for m in said if m.startswith(f"More than {MOST_FILES} .py files under")]


def test_a_change_is_a_time_that_differs_from_the_snapshot(tmp_path: Path) -> None:
    files = project_files([tree(tmp_path)])
    snapshot = take(files)
    assert changed_file(files, snapshot) is None
    ahead = time.time() + 3600  # another machine's clock: dated in the future, unchanged
    tasks = tmp_path / "app" / "tasks.py"
    os.utime(tasks, (ahead, ahead))
    later = take(files)
    assert changed_file(files, later) is None  # no change against its own snapshot
    assert changed_file(files, snapshot) == str(tasks)  # a change against the older one
    behind = time.time() - 3600  # a clock stepped back: still a change
    os.utime(tasks, (behind, behind))
    assert changed_file(files, later) == str(tasks)


def test_a_file_no_snapshot_has_is_not_a_change(tmp_path: Path) -> None:
    files = project_files([tree(tmp_path)])
    snapshot = take(files)
    new = tmp_path / "app" / "new.py"
    new.write_text("")
    assert changed_file([*files, new], snapshot) is None
    # The first snapshot that has a file decides: the reloader's, then the worker's own.
    own = take([*files, new])
    new.write_text("y = 2\n")
    os.utime(new, (time.time() + 5, time.time() + 5))
    assert changed_file([*files, new], snapshot, own) == str(new)


def test_a_snapshot_is_handed_over_through_a_file(tmp_path: Path) -> None:
    snapshot = {"/a.py": 1, "/b.py": 2}
    save_snapshot(snapshot, tmp_path / "s.json")
    assert load_snapshot(str(tmp_path / "s.json")) == snapshot
    assert load_snapshot(str(tmp_path / "missing.json")) == {}
    (tmp_path / "bad.json").write_text("[not json")
    assert load_snapshot(str(tmp_path / "bad.json")) == {}
    assert load_snapshot(None) == {}
