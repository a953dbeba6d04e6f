"""Artifacts in the API: ``artifacts/`` (newest first; ``?key=``, ``?run=``, ``?latest=1`` for the
latest version of each key) and ``artifacts/<id>/``, for whoever has ``view_artifact``. Each
artifact comes with its ``data`` as stored and its ``html``: the same sanitized rendering the
admin shows (:mod:`.render`)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound, ValidationError

from ..api.views import _ERROR, NewestFirst, _Secured
from ..permissions import VIEW_ARTIFACT
from ..storable import storable_text
from .create import KEY_PATTERN
from .models import Artifact
from .render import render_artifact

__all__ = ["ArtifactSerializer", "ArtifactViewSet"]


class ArtifactSerializer(serializers.ModelSerializer[Artifact]):
    html = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = ["id", "key", "type", "description", "run", "created", "data", "html"]
        read_only_fields = fields

    def get_html(self, obj: Artifact) -> str:
        """The artifact rendered and sanitized, as the admin shows it."""
        return str(render_artifact(obj.type, obj.data))


_FILTERS = [
    OpenApiParameter(
        "key",
        {"type": "string", "pattern": KEY_PATTERN.pattern, "maxLength": 255},
        description="Versions of one key, newest first.",
    ),
    OpenApiParameter("run", OpenApiTypes.UUID, description="The artifacts of one run (its id)."),
    OpenApiParameter(
        "latest", str, enum=["0", "1", "true", "false"], description="1: the latest of each key."
    ),
]


class ArtifactViewSet(_Secured, viewsets.ReadOnlyModelViewSet[Artifact]):
    """What runs attached: markdown, tables and links (``view_artifact``)."""

    serializer_class = ArtifactSerializer
    queryset = Artifact.objects.all()
    pagination_class = NewestFirst
    permission_required = VIEW_ARTIFACT
    lookup_value_regex = "[^/]+"
    schema_overrides = {
        "list": {
            "parameters": _FILTERS,
            # 404: a cursor that points at no artifact
            "responses": {200: ArtifactSerializer(many=True), 400: _ERROR, 404: _ERROR},
        },
        "retrieve": {"responses": {200: ArtifactSerializer, 404: _ERROR}},
    }

    def get_queryset(self) -> QuerySet[Artifact]:
        params = self.request.query_params
        artifacts = Artifact.objects.all()
        key = params.get("key")
        if key is not None:
            if not KEY_PATTERN.match(key) or len(key) > 255:
                raise ValidationError({"key": "Lowercase letters, digits and dashes."})
            artifacts = artifacts.filter(key=key)
        run = params.get("run")
        if run is not None:
            artifacts = artifacts.filter(run_id=_uuid("run", run))
        latest = params.get("latest")
        if latest is not None:
            if latest not in ("0", "1", "true", "false"):
                raise ValidationError({"latest": "1 or 0."})
            if latest in ("1", "true"):
                newest = Artifact.objects.exclude(key="").order_by("key", "-created")
                artifacts = artifacts.filter(id__in=newest.distinct("key").values("id"))
        return artifacts

    def get_object(self) -> Artifact:
        _uuid("id", self.kwargs.get("pk", ""), not_found=True)
        return super().get_object()


def _uuid(name: str, text: str, not_found: bool = False) -> uuid.UUID:
    """An id from a query: a malformed one is a clear 400 (or 404 in a path), never a 500."""
    try:
        return uuid.UUID(text)
    except ValueError:
        if not_found:
            raise NotFound("No such artifact.") from None
        raise ValidationError({name: f"Not an id: {storable_text(text[:40])!r}."}) from None
