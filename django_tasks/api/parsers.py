"""How the API reads request bodies: its own JSON parser, whatever the project's
``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]`` say.

DRF's ``JSONParser`` hands the body to ``json.load``, which recurses once per level of
nesting: 100,000 ``[`` are a ``RecursionError`` and a 500 - for any signed-in user, since the
session's CSRF check parses the body before any permission is checked. It also reads a body of
any size, and lets NaN through when the project turns ``STRICT_JSON`` off. This parser reads
at most :data:`MAX_BODY_BYTES`, measures the nesting without recursion and refuses NaN
(:class:`django_tasks.json_input.BoundedJSONDecoder`): each a 400 that says why. The values of
the fields a view reads are checked by its serializer (a limit's name: text PostgreSQL
can store).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser

from .. import json_input
from ..storable import cut

__all__ = ["BODY_PARSERS", "MAX_BODY_BYTES", "StorableJSONParser"]

#: The largest body the API reads: its bodies are a limit's few fields.
MAX_BODY_BYTES = 64 * 1024


class StorableJSONParser(JSONParser):
    """JSON bodies (UTF-8, as RFC 8259 says), read through :func:`json_input.loads`."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = stream.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise ParseError(f"A request body is at most {MAX_BODY_BYTES:,} bytes.")
        try:
            return json_input.loads(raw, json_input.BoundedJSONDecoder)
        except json.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {cut(exc.msg)}") from None
        except ValueError as exc:  # not UTF-8
            raise ParseError(f"JSON parse error - {cut(str(exc))}") from None


#: The parsers of every API view: DRF's defaults, with JSON read by ours (forms and multipart
#: bodies are parsed by Django, which bounds them: DATA_UPLOAD_MAX_MEMORY_SIZE and
#: DATA_UPLOAD_MAX_NUMBER_FIELDS).
BODY_PARSERS: list[type[BaseParser]] = [StorableJSONParser, FormParser, MultiPartParser]
