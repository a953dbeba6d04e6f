"""Who may do what, cell by cell: every API endpoint, the admin's pages, buttons and bulk
actions, the dashboard and the metrics, for each kind of user - with the default permission
class, and with DRF's DjangoModelPermissions configured instead (never a 500)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

from django_tasks.models import TaskRun
from tests.taskapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

API = "/tasks/api/"
ADMIN = "/admin/django_tasks/taskrun/"
ROLES = ["anonymous", "not_staff", "staff", "viewer", "operator", "superuser"]


def make_user(role: str) -> User | None:
    if role == "anonymous":
        return None
    if role == "superuser":
        return User.objects.create_superuser("root", "root@example.com", "pw")
    user = User.objects.create_user(role, password="pw", is_staff=role != "not_staff")
    codenames = {
        "not_staff": ["view_taskrun", "retry_taskrun", "cancel_taskrun"],  # staff is the floor
        "staff": [],
        "viewer": ["view_taskrun"],
        "operator": ["view_taskrun", "retry_taskrun", "cancel_taskrun"],
    }[role]
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def client_for(role: str) -> Client:
    client = Client()
    user = make_user(role)
    if user is not None:
        client.force_login(user)
    return client


def finished_run() -> uuid.UUID:
    """A background run that ended (it may be retried)."""
    run_id = add.delay(1, 2).id
    TaskRun.objects.filter(pk=run_id).update(state_type="COMPLETED", state_name="Completed")
    return run_id


def waiting_run() -> uuid.UUID:
    """A background run not started yet (it may be cancelled)."""
    return add.delay(3, 4).id


def read_paths(run_id: uuid.UUID) -> list[str]:
    return [
        f"{API}runs/",
        f"{API}runs/{run_id}/",
        f"{API}runs/{run_id}/states/",
        f"{API}runs/{run_id}/logs/",
        f"{API}runs/{run_id}/dependencies/",
        f"{API}workers/",
        f"{API}tasks/",
        f"{API}stats/",
        f"{API}schema/",
        "/tasks/dashboard/",
        "/tasks/metrics/",
        ADMIN,
        f"{ADMIN}{run_id}/change/",
        f"{ADMIN}{run_id}/live/",  # the run page's live refresh (JSON)
        f"{ADMIN}task/?name=add",  # the task page
    ]


#: Expected status of a read, per role: the API refuses with 403; the admin and the dashboard
#: send anonymous and non-staff users to the login page, and refuse staff without permission.
def expected_read(role: str, path: str) -> int:
    login_page = path.startswith(("/admin/", "/tasks/dashboard/"))
    if role in ("anonymous", "not_staff"):
        return 302 if login_page else 403
    return 403 if role == "staff" else 200


@pytest.mark.parametrize("role", ROLES)
def test_who_may_read(role):
    client = client_for(role)
    run_id = finished_run()
    statuses = {path: client.get(path).status_code for path in read_paths(run_id)}
    assert statuses == {path: expected_read(role, path) for path in statuses}


@pytest.mark.parametrize("role", ROLES)
def test_who_may_retry_and_cancel_through_the_api(role):
    client = client_for(role)
    done, waiting = finished_run(), waiting_run()
    retried = client.post(f"{API}runs/{done}/retry/")
    cancelled = client.post(f"{API}runs/{waiting}/cancel/")
    allowed = role in ("operator", "superuser")
    assert (retried.status_code, cancelled.status_code) == ((201, 200) if allowed else (403, 403))
    assert TaskRun.objects.filter(retry_of_id=done).exists() == allowed
    assert TaskRun.objects.get(pk=waiting).state_type == ("CANCELLED" if allowed else "SCHEDULED")


@pytest.mark.parametrize("role", ROLES)
def test_who_may_press_the_admin_buttons(role):
    client = client_for(role)
    done, waiting = finished_run(), waiting_run()
    page = client.get(f"{ADMIN}{done}/change/").content.decode()
    retried = client.post(f"{ADMIN}{done}/retry/")
    cancelled = client.post(f"{ADMIN}{waiting}/cancel/")
    allowed = role in ("operator", "superuser")
    if role in ("anonymous", "not_staff"):
        expected = (302, 302)  # to the login page
        assert "/login/" in retried["Location"]
    else:
        expected = (302, 302) if allowed else (403, 403)
    assert (retried.status_code, cancelled.status_code) == expected
    assert TaskRun.objects.filter(retry_of_id=done).exists() == allowed
    assert TaskRun.objects.get(pk=waiting).state_type == ("CANCELLED" if allowed else "SCHEDULED")
    # The page offers a button only to whoever may press it.
    assert (f"{done}/retry/" in page) == allowed


@pytest.mark.parametrize("role", ["viewer", "operator", "superuser"])
@pytest.mark.parametrize("action", ["cancel_selected", "retry_selected"])
def test_who_may_run_the_bulk_actions_on_every_run(role, action):
    """ "Select all" and an action: only with that action's permission does anything happen."""
    client = client_for(role)
    waiting = [waiting_run() for _ in range(3)]
    done = finished_run()
    data: dict[str, Any] = {
        "action": action,
        "select_across": "1",
        "index": "0",
        "_selected_action": [str(waiting[0])],
    }
    response = client.post(ADMIN, data)
    allowed = role in ("operator", "superuser")
    # With no action it may run, the list has no actions at all: the POST just shows it.
    assert response.status_code == (302 if allowed else 200)
    states = set(TaskRun.objects.filter(pk__in=waiting).values_list("state_type", flat=True))
    if action == "cancel_selected":
        assert states == ({"CANCELLED"} if allowed else {"SCHEDULED"})
    else:
        assert TaskRun.objects.filter(retry_of_id=done).exists() == allowed
        assert states == {"SCHEDULED"}
    listed = client.get(ADMIN).content.decode()
    assert (f'value="{action}"' in listed) == allowed


DRF_MODEL_PERMISSIONS = {
    "API_PERMISSION_CLASSES": ["rest_framework.permissions.DjangoModelPermissions"]
}


@pytest.mark.parametrize("role", ROLES)
def test_drf_model_permissions_configured_instead_never_answer_500(role):
    """DRF's DjangoModelPermissions: any signed-in user reads (DRF's rule for GET), POST
    needs add_taskrun. What matters here: an answer for every endpoint, never a 500."""
    client = client_for(role)
    done, waiting = finished_run(), waiting_run()
    with override_settings(DJANGO_TASKS=DRF_MODEL_PERMISSIONS):
        reads = {
            path: client.get(path).status_code for path in read_paths(done) if path.startswith(API)
        }
        retried = client.post(f"{API}runs/{done}/retry/").status_code
        cancelled = client.post(f"{API}runs/{waiting}/cancel/").status_code
    signed_in = role != "anonymous"
    assert reads == dict.fromkeys(reads, 200 if signed_in else 403)
    assert (retried, cancelled) == ((201, 200) if role == "superuser" else (403, 403))
