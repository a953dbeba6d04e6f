"""The files a reloading worker watches, and how it tells that one changed.

Two sources: every module file the process imported (Django's autoreloader lists them), and
the ``*.py`` files under the project's own directories - the directories of the installed
apps that are not installed packages, and of the settings module, walked once at start
without virtualenvs, hidden or build directories (:func:`project_files`) - so that a module a
worker process imports only when a run needs it (a ``django.tasks`` Task's module, an import
inside a task) is watched too.

A change is a file whose modification time *differs* from the one a snapshot recorded:
never a comparison with this machine's clock, which a file
from a machine whose clock runs ahead (a network filesystem, a container's bind mount, an
archive) would otherwise trip for ever, and a clock stepped back would blind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.utils import autoreload

__all__ = [
    "Snapshot",
    "changed_file",
    "load_snapshot",
    "project_dirs",
    "project_files",
    "remove",
    "save_snapshot",
    "take",
]

logger = logging.getLogger("django_tasks.worker")

#: ``path -> st_mtime_ns`` of every watched file.
Snapshot = dict[str, int]


def _installed_roots() -> list[Path]:
    """Where installed packages and the standard library live: not the project's code."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    return [Path(root).resolve() for root in roots]


def project_dirs() -> list[Path]:
    """The project's own directories: installed apps that are not installed packages, and the
    settings module's directory (nested ones left out: their parent covers them)."""
    installed = _installed_roots()
    found: set[Path] = set()
    candidates = [Path(config.path) for config in apps.get_app_configs()]
    module = sys.modules.get(settings.SETTINGS_MODULE or "")
    if module is not None and getattr(module, "__file__", None):
        candidates.append(Path(str(module.__file__)).parent)
    for path in candidates:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in installed) and resolved.is_dir():
            found.add(resolved)
    return sorted(p for p in found if not any(p != q and p.is_relative_to(q) for q in found))


#: Directories never walked: tools' and builds' trees, which hold code that is not the
#: project's (a virtualenv is also recognised by its pyvenv.cfg, and hidden ones are skipped).
SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "dist-packages", "build", "dist", "htmlcov"}
)
#: The most project files watched beside the imported modules: a tree larger than this is
#: not a project's code (the rest is left out, and a warning says so).
MOST_FILES = 5_000


def project_files(dirs: list[Path]) -> list[Path]:
    """The ``*.py`` files under ``dirs``, without virtualenvs, hidden and build directories or
    anything installed (see :data:`SKIPPED_DIRS`), at most :data:`MOST_FILES`."""
    installed = _installed_roots()
    found: list[Path] = []
    for directory in dirs:
        for root, subdirs, files in os.walk(directory):
            here = Path(root)
            subdirs[:] = [
                d
                for d in subdirs
                if not d.startswith(".")
                and d not in SKIPPED_DIRS
                and not (here / d / "pyvenv.cfg").exists()
                and not any((here / d).resolve().is_relative_to(r) for r in installed)
            ]
            found.extend(here / name for name in files if name.endswith(".py"))
            if len(found) > MOST_FILES:
                logger.warning(
                    "More than %d .py files under %s: only the first are watched for changes",
                    MOST_FILES,
                    ", ".join(map(str, dirs)),
                )
                return found[:MOST_FILES]
    return found


def watched(files: list[Path]) -> Iterator[Path]:
    yield from autoreload.iter_all_python_module_files()
    yield from files


def take(files: list[Path]) -> Snapshot:
    snapshot: Snapshot = {}
    for path in watched(files):
        try:
            snapshot[str(path)] = path.stat().st_mtime_ns
        except OSError:
            continue
    return snapshot


def changed_file(files: list[Path], *snapshots: Snapshot) -> str | None:
    """A watched file whose time differs from the first snapshot that has it. A file no
    snapshot has is not a change: a module imported since (its time was never known), or a
    file just created - the change that matters is the edit that imports it."""
    for path in watched(files):
        name = str(path)
        before = next((s[name] for s in snapshots if name in s), None)
        if before is None:
            continue
        try:
            if path.stat().st_mtime_ns != before:
                return name
        except OSError:
            continue
    return None


def save_snapshot(snapshot: Snapshot, path: Path) -> None:
    path.write_text(json.dumps(snapshot))


def load_snapshot(path: str | None) -> Snapshot:
    """The reloader's snapshot, handed to the worker by file; empty when there is none."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
