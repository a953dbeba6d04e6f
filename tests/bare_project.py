"""Run by tests/test_schema.py in a subprocess with tests.settings_bare: prints what the API
answers in a project that configured nothing for DRF."""

import json
import sys
import warnings

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.checks import run_checks  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from rest_framework.schemas.openapi import SchemaGenerator  # noqa: E402

setup_test_environment()
client = Client()
client.force_login(User.objects.get(username="bare-root"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    schema = client.get("/tasks/api/schema/?format=json")
    # what a browser asks for: HTML first, anything else after
    runs = client.get("/tasks/api/runs/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    drf_own = SchemaGenerator().get_schema(request=None, public=True)  # the project's schema
json.dump(
    {
        "schema_status": schema.status_code,
        "paths": sorted(json.loads(schema.content)["paths"]),
        "runs_status": runs.status_code,
        "runs_type": runs["Content-Type"],
        "drf_own_paths": sorted((drf_own or {}).get("paths", {})),
        "checks": [message.id for message in run_checks()],
        "warnings": [str(w.message) for w in caught],
    },
    sys.stdout,
)
