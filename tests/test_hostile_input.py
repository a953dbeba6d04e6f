"""Every admin page and API endpoint of the app against what an attacker or a careless user
sends: NUL characters, huge numbers, lookups the list cannot apply, ids that are not ids,
bodies nested 100,000 levels deep, NaN, lone surrogates, wrong types, other media types.
Each is answered with a 400, a 404, a redirect or a page - never a 500 - for every kind of
user, CSRF checks on (the session's CSRF check reads the body of a signed-in user's POST
before any permission is checked)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from django_tasks.models import Artifact, Limit, Schedule, TaskRun
from tests.taskapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

API = "/tasks/api/"
TOKEN = "k" * 32  # a CSRF secret: the cookie and the header agree, the check reads the body

#: Values for every query parameter, form field and id.
HOSTILE = [
    "a\x00b",
    "\x00",
    "9" * 30,
    "-1",
    "",
    "x" * 3000,
    "%",
    "1e999",
    "NaN",
    "'",
    "(",
    "[",
    "1,a",
    "2026-13-45",
    "\ufffd",
]
#: Values for the lookups a query string may name on any field (``?created__year=-1``).
LOOKUP_VALUES = ["9" * 30, "-1", "(", "1e999"]
LOOKUPS = ["", "__in", "__year", "__regex", "__contains"]
#: What the change list itself reads: search, ordering, page, show all, facets, popups.
LIST_PARAMS = ["q", "o", "p", "e", "all", "_facets", "_to_field", "_popup", "_changelist_filters"]

MODELS = [TaskRun, Schedule, Artifact, Limit]


def client(who: str) -> Client:
    browser = Client(enforce_csrf_checks=True, HTTP_X_CSRFTOKEN=TOKEN)
    browser.cookies["csrftoken"] = TOKEN
    if who == "superuser":
        browser.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    elif who == "not_staff":
        browser.force_login(User.objects.create_user("someone", password="pw"))
    return browser


@pytest.fixture
def rows() -> dict[str, Any]:
    """One row of each model, so that every list has something to show."""
    run = add.delay(1, 2)
    schedule = Schedule.objects.create(name="s", task_name="add", interval_seconds=60, args=[1, 2])
    limit = Limit.objects.create(name="t", concurrency=1)
    artifact = Artifact.objects.create(key="k", type="markdown", data="# hi", run_id=run.id)
    return {"run": run.id, "schedule": schedule.pk, "limit": limit.pk, "artifact": artifact.pk}


def changelist(model: type[Any]) -> str:
    return f"/admin/django_tasks/{model._meta.model_name}/"


def filter_params(model: type[Any]) -> list[str]:
    """The parameters of the admin's own filters, and any lookup on any field of the model."""
    model_admin = admin.site._registry[model]
    names = set()
    for item in model_admin.list_filter:
        if isinstance(item, str):
            names |= {item, f"{item}__exact", f"{item}__isnull"}
        else:
            names.add(getattr(item, "parameter_name", ""))
    return sorted(names)


def lookup_params(model: type[Any]) -> list[str]:
    return [f"{f.name}{lookup}" for f in model._meta.concrete_fields for lookup in LOOKUPS]


def no_server_error(response: Any, *context: object) -> int:
    assert response.status_code < 500, (context, response.status_code)
    return int(response.status_code)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_no_query_string_makes_an_admin_list_fail(rows, model):
    """A NUL anywhere is a bad filter (``?e=1``) before any query; a lookup the database
    refuses (a year of -1, a bad regular expression, a number out of range) too."""
    browser = client("superuser")
    url = changelist(model)
    for param in [*LIST_PARAMS, *filter_params(model)]:
        for value in HOSTILE:
            no_server_error(browser.get(url, {param: value}), param, value)
    for param in lookup_params(model):
        for value in LOOKUP_VALUES:
            no_server_error(browser.get(url, {param: value}), param, value)
    for value in ("a\x00b", "\x00"):
        response = browser.get(url, {"q": value})
        assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
    response = browser.get(url, {"created__year": "-1"})  # refused when the SQL is compiled
    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
    response = browser.get(url, {"id__regex": "("})  # refused by PostgreSQL
    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_no_id_makes_an_admin_page_fail(rows, model):
    browser = client("superuser")
    for value in [*HOSTILE, str(uuid.uuid4()), "0"]:
        for page in ("change/", "delete/", "history/", ""):
            path = f"{changelist(model)}{value.replace('/', '')}/{page}"
            no_server_error(browser.get(path), path)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_no_selection_makes_an_admin_action_fail(rows, model):
    """Ids that are not ids of the model, in any action: a message, nothing done."""
    browser = client("superuser")
    url = changelist(model)
    request = browser.get(url).wsgi_request
    actions = list(admin.site._registry[model].get_actions(request))
    assert actions  # every admin here has at least "delete selected" or its own
    before = model.objects.count()
    for action in [*actions, "no_such_action"]:
        for value in [*HOSTILE, "00000000-0000-0000-0000-000000000000"]:
            data = {"action": action, "index": "0", "_selected_action": [value]}
            no_server_error(browser.post(url, data), action, value)
    assert model.objects.count() == before


def schedule_form(**changes: str) -> dict[str, str]:
    data = {
        "name": "nightly",
        "task_name": "record",
        "cron": "0 3 * * *",
        "interval_seconds": "",
        "timezone": "Europe/Paris",
        "args": '["nightly"]',
        "kwargs": "{}",
        "queue": "",
        "missed": "once",
        "enabled": "on",
    }
    data.update(changes)
    return data


DEEP = "[" * 100_000


@pytest.mark.parametrize("field", list(schedule_form()))
def test_no_schedule_form_value_makes_the_admin_fail(rows, field):
    browser = client("superuser")
    for value in [*HOSTILE, DEEP, "[NaN]", '["\\ud800"]', '{"a": 1e999}', "[" + "9" * 5000 + "]"]:
        for url in (
            "/admin/django_tasks/schedule/add/",
            f"/admin/django_tasks/schedule/{rows['schedule']}/change/",
        ):
            response = browser.post(url, schedule_form(**{field: value}))
            no_server_error(response, field, value[:50])
    for schedule in Schedule.objects.all():  # what was saved can tick
        schedule.timing()


@pytest.mark.parametrize("field", ["scope", "name", "concurrency", "rate"])
def test_no_limit_form_value_makes_the_admin_fail(rows, field):
    browser = client("superuser")
    for value in HOSTILE:
        data = {"scope": "tag", "name": "email", "concurrency": "2", "rate": "", field: value}
        for url in (
            "/admin/django_tasks/limit/add/",
            f"/admin/django_tasks/limit/{rows['limit']}/change/",
        ):
            no_server_error(browser.post(url, data), field, value)


@pytest.mark.parametrize(
    ("model", "field"), [("taskrun", "retry_of"), ("schedule", "last_run"), ("artifact", "run")]
)
def test_no_autocomplete_term_makes_the_admin_fail(rows, model, field):
    """The admin's autocomplete view searches the run admin for any foreign key to runs."""
    browser = client("superuser")
    for term in HOSTILE:
        params = {"app_label": "django_tasks", "model_name": model, "field_name": field}
        response = browser.get("/admin/autocomplete/", {**params, "term": term})
        assert no_server_error(response, model, term) == 200
        if "\x00" in term:
            assert response.json()["results"] == []


# -- the API ----------------------------------------------------------------------------------


def api_reads(rows: dict[str, Any]) -> dict[str, list[str]]:
    """Each GET endpoint and the query parameters it reads (and one it does not)."""
    run, schedule, limit, artifact = rows["run"], rows["schedule"], rows["limit"], rows["artifact"]
    listing = ["cursor", "page_size", "unknown"]
    return {
        "runs/": [
            *listing,
            *("state", "state_name", "task", "queue", "tag", "origin", "search"),
            *("created_after", "created_before"),
        ],
        f"runs/{run}/": ["format"],
        f"runs/{run}/states/": [],
        f"runs/{run}/logs/": [],
        f"runs/{run}/dependencies/": [],
        "workers/": listing,
        "schedules/": listing,
        f"schedules/{schedule}/": [],
        "limits/": listing,
        f"limits/{limit}/": [],
        "artifacts/": [*listing, "key", "run", "latest"],
        f"artifacts/{artifact}/": [],
        "tasks/": ["window"],
        "stats/": ["window"],
        "schema/": ["format", "lang", "version"],
    }


def test_no_query_string_or_id_makes_the_api_fail(rows):
    browser = client("superuser")
    for path, params in api_reads(rows).items():
        for param in [*params, "format"]:
            for value in HOSTILE:
                no_server_error(browser.get(API + path, {param: value}), path, param, value)
    for value in HOSTILE:
        value = value.replace("/", "")
        for path in ("runs/{}/", "runs/{}/states/", "runs/{}/logs/", "runs/{}/dependencies/"):
            no_server_error(browser.get(API + path.format(value)), path, value)
        for path in ("schedules/{}/", "limits/{}/", "artifacts/{}/"):
            no_server_error(browser.get(API + path.format(value)), path, value)
        for path in ("runs/{}/cancel/", "runs/{}/retry/"):
            no_server_error(browser.post(API + path.format(value)), path, value)
        no_server_error(browser.delete(API + f"limits/{value}/"), value)


BODIES: list[tuple[str, bytes | str]] = [
    ("application/json", "[" * 100_000),  # over the size the API reads
    ("application/json", "[" * 60_000),  # under it, nested 60,000 levels
    ("application/json", "{" * 50_000),
    ("application/json", '{"a":' * 20_000),
    ("application/json", "[NaN]"),
    ("application/json", '{"name": "x", "concurrency": Infinity}'),
    ("application/json", '{"name": "\\ud800", "concurrency": 1}'),
    ("application/json", '{"name": "a\\u0000b", "concurrency": 1}'),
    ("application/json", '{"name": "x", "concurrency": ' + "9" * 5000 + "}"),
    ("application/json", '{"name": "x", "concurrency": 1e999}'),
    ("application/json", '{"name": "x", "concurrency": 99999999999999999999}'),
    ("application/json", '{"name": ["x"], "concurrency": "1", "scope": 5, "rate": 7}'),
    ("application/json", '{"name": "x", "rate": "\\ud800/s"}'),
    ("application/json", '{"name": "x", "scope": "\\u0000"}'),
    ("application/json", "null"),
    ("application/json", "[]"),
    ("application/json", '"text"'),
    ("application/json", ""),
    ("application/json", b"\xff\xfe{}"),
    ("application/json", '{"name": "' + "x" * 70_000 + '"}'),
    ("application/x-www-form-urlencoded", "name=a%00b&concurrency=1e999"),
    ("multipart/form-data; boundary=zz", "--zz\r\nbroken"),
    ("text/plain", "name=x"),
]
WRITES = ["post", "put", "patch", "delete"]


@pytest.mark.parametrize("who", ["superuser", "not_staff", "anonymous"])
def test_no_body_makes_the_api_fail(rows, who):
    browser = client(who)
    paths = [
        "limits/",
        f"limits/{rows['limit']}/",
        f"runs/{rows['run']}/cancel/",
        f"runs/{rows['run']}/retry/",
        "runs/",
        "stats/",
        "schema/",
        f"artifacts/{rows['artifact']}/",
    ]
    for path in paths:
        for content_type, body in BODIES:
            for method in WRITES:
                response = getattr(browser, method)(API + path, body, content_type=content_type)
                no_server_error(response, who, method, path, content_type, body[:40])
    assert not Limit.objects.exclude(pk=rows["limit"]).exists()  # no body made a limit
    if who != "superuser":  # who may cancel does, whatever the (ignored) body
        assert TaskRun.objects.get(pk=rows["run"]).state_type == "SCHEDULED"


@pytest.mark.parametrize("who", ["superuser", "not_staff", "anonymous"])
@pytest.mark.parametrize("body", ["[" * 100_000, "[" * 60_000, '{"a":' * 20_000])
def test_a_deeply_nested_body_is_a_400_for_anyone_before_it_is_parsed(rows, who, body):
    """Before any permission check, whoever sends it, on any endpoint and method."""
    browser = client(who)
    for path in ("limits/", f"runs/{rows['run']}/cancel/", "stats/", "schema/"):
        for method in ("post", "put", "patch"):
            response = getattr(browser, method)(API + path, body, content_type="application/json")
            assert response.status_code == 400, (path, method, response.content[:200])
            said = response.content  # JSON; the schema view's own renderer for schema/
            assert b"at most 65,536 bytes" in said or b"Nested more than 100 levels" in said


def test_an_anonymous_upload_is_refused_unread(rows, monkeypatch):
    """Only JSON bodies (64 KiB at most) are read before the permission check: an upload of
    10 MB by someone not signed in is a 403, and no multipart parser ever ran."""
    from rest_framework.parsers import MultiPartParser

    parsed: list[object] = []
    real = MultiPartParser.parse

    def counted(self: MultiPartParser, *args: Any, **kwargs: Any) -> Any:
        parsed.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MultiPartParser, "parse", counted)
    upload = SimpleUploadedFile("big.bin", b"x" * 10_000_000)
    for path in ("limits/", f"runs/{rows['run']}/cancel/"):
        assert client("anonymous").post(API + path, {"file": upload}).status_code == 403
        upload.seek(0)
    assert parsed == []
