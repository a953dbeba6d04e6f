"""The distribution is releasable: its sdist and wheel build, their metadata renders, and the
wheel installs into a clean virtualenv where a fresh ``startproject`` with the app added
passes ``manage.py check``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from django_tasks import __version__

from .conftest import ROOT


def run(*args: str | Path, cwd: Path) -> str:
    """Run outside the clone and the test settings, as on a user's machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PYTHON"))}
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**env, "VIRTUAL_ENV": ""},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_sdist_and_wheel_build_check_and_install_into_a_fresh_project(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, ROOT, cwd=tmp_path)
    wheel = dist / f"django_taskruns-{__version__}-py3-none-any.whl"
    sdist = dist / f"django_taskruns-{__version__}.tar.gz"
    built = sorted(p.name for p in dist.iterdir())
    assert built == sorted([wheel.name, sdist.name])
    assert "PASSED" in run(
        sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=tmp_path
    )
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "django_tasks/py.typed",
        "django_tasks/migrations/0001_initial.py",
        "django_tasks/templates/admin/django_tasks/taskrun/change_form.html",
        f"django_taskruns-{__version__}.dist-info/licenses/LICENSE",
    ):
        assert expected in names, expected
    assert not [n for n in names if n.startswith(("tests/", "demo_project/"))]

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # As the README's requirements.txt line for a wheel says.
    [line] = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("django-taskruns @ file://")
    ]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"django-taskruns @ {wheel.as_uri()}\n")
    assert line.split(" @ ")[0] == "django-taskruns"
    run(python, "-m", "pip", "install", "-q", "-r", requirements, cwd=tmp_path)
    location = run(python, "-c", "import django_tasks; print(django_tasks.__file__)", cwd=tmp_path)
    assert location.startswith(str(venv)), location  # the installed copy, not the clone

    run(venv / "bin" / "django-admin", "startproject", "mysite", tmp_path, cwd=tmp_path)
    settings = tmp_path / "mysite" / "settings.py"
    with settings.open("a") as appended:  # the app added, on PostgreSQL
        appended.write(
            '\nINSTALLED_APPS += ["django_tasks"]\n'
            'DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}\n'
        )
    output = run(python, "manage.py", "check", "--fail-level", "WARNING", cwd=tmp_path)
    assert "System check identified no issues" in output
