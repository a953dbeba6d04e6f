"""The API documents itself whatever the project's DRF settings, and its schema tells the
truth: plain lists are declared as plain lists, no warnings while drawing it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.contrib.auth.models import User

from django_tasks.api.schema import generate_schema

from .conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_schema_declares_what_the_api_returns(capsys):
    schema = generate_schema("tasks/api/")
    ok = "200"
    for action in ("states", "logs"):
        body = schema["paths"][f"/tasks/api/runs/{{id}}/{action}/"]["get"]["responses"][ok]
        assert body["content"]["application/json"]["schema"]["type"] == "array"
        parameters = schema["paths"][f"/tasks/api/runs/{{id}}/{action}/"]["get"].get(
            "parameters", []
        )
        assert {p["name"] for p in parameters} == {"id"}  # no page_size, no cursor
    listed = schema["paths"]["/tasks/api/runs/"]["get"]["responses"][ok]
    assert listed["content"]["application/json"]["schema"]["$ref"].endswith("PaginatedRunList")
    assert "StateTypeEnum" in schema["components"]["schemas"]
    captured = capsys.readouterr()
    assert "Warning" not in captured.err + captured.out  # drf-spectacular's, e.g. enum names


@pytest.mark.slow
def test_a_project_that_configured_nothing_for_drf_serves_the_api_and_its_schema(worker_env):
    User.objects.create_superuser("bare-root", "root@example.com", "pw")
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.settings_bare"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.bare_project"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["schema_status"] == 200
    assert "/tasks/api/runs/{id}/states/" in seen["paths"]
    # Without 'rest_framework' installed: JSON, not a TemplateDoesNotExist 500.
    assert (seen["runs_status"], seen["runs_type"]) == (200, "application/json")
    # DRF's own schema generator leaves our views out instead of failing on them.
    assert not any(path.startswith("/tasks/api/") for path in seen["drf_own_paths"])
    assert "django_tasks.W002" in seen["checks"]
    assert not [w for w in seen["warnings"] if "django_tasks" in w or "Enum" in w]
    assert "Warning" not in done.stderr
