"""The demo page: a form that calls ``.delay()`` and a live list of recent runs."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from django_tasks.models import TaskRun

from .tasks import build_gallery, call_partner_api, resize_image, send_report


class JobForm(forms.Form):
    JOBS = [
        ("report", "Send a report"),
        ("resize", "Resize an image"),
        ("bad", "Resize (bad scale)"),
        ("pipeline", "Build a gallery (fan-out pipeline)"),
        ("partner", "Call a partner API (rate limit: 12 a minute)"),
    ]
    job = forms.ChoiceField(choices=JOBS)
    email = forms.EmailField(initial="team@example.com", required=False)
    count = forms.IntegerField(min_value=1, max_value=20, initial=1)


def index(request: HttpRequest) -> HttpResponse:
    form = JobForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        job, count = form.cleaned_data["job"], form.cleaned_data["count"]
        for _ in range(count):
            if job == "report":
                send_report.delay(form.cleaned_data["email"] or "team@example.com", pages=3)
            elif job == "pipeline":
                build_gallery.delay(6)
            elif job == "partner":
                call_partner_api.delay()
            else:
                resize_image.delay(640, 480, scale=0.25 if job == "resize" else 3.0)
        messages.success(request, f"Enqueued {count} run(s); watch them below.")
        return redirect("index")
    return render(request, "demo/index.html", {"form": form, "runs": _recent()})


@require_GET
def recent_runs(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/_runs.html", {"runs": _recent()})


def _recent() -> list[TaskRun]:
    """The latest runs, with how many upstream runs each waited for (pipelines)."""
    runs = TaskRun.objects.defer("parameters", "result").annotate(upstreams=Count("upstream_edges"))
    # annotate() with an aggregate drops Meta.ordering: newest first must be said again.
    return list(runs.order_by("-id")[:20])
