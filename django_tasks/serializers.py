"""Signed cloudpickle payloads and JSON-safe previews.

Unpickling runs code, so every payload carries an HMAC-SHA256 over its bytes keyed from
``SECRET_KEY``; :func:`loads` refuses any payload whose signature does not verify with
``SECRET_KEY`` or one of ``SECRET_KEY_FALLBACKS`` (key rotation). The web side only ever reads
the JSON preview stored beside a payload.

A signature is bound to what it signs: the task's key and the field (``parameters`` or
``result``), through a key derived for that pair. A payload copied onto another task's run, or
from a result into parameters, does not verify there. Payloads signed before the binding
(format ``djt1``) are still read as they were, so that runs enqueued by an older version (a
rolling deploy) and stored results keep working; everything written now is bound (``djt2``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import math
import pickle
from collections.abc import Mapping
from typing import Any

import cloudpickle
from django.conf import settings
from django.utils.encoding import force_str

from .conf import task_settings
from .storable import cut, describe_exception, storable_float, storable_int, storable_text

__all__ = [
    "PayloadError",
    "PayloadSignatureError",
    "PayloadTooLarge",
    "SerializationError",
    "dumps",
    "loads",
    "preview",
    "rebind",
]

_MAGIC = b"djt2"  # bound to a task key and a field
_MAGIC_UNBOUND = b"djt1"  # before the binding: still read
_SALT = "django_tasks.serializers.payload"
#: What a payload is, by the ``what`` of dumps(): the column it goes to.
_FIELDS = {"parameters": "parameters", "result": "result", "exception": "result"}
_DIGEST_SIZE = 32


class PayloadError(Exception):
    """Base class of every payload problem."""


class SerializationError(PayloadError, TypeError):
    """A value could not be pickled (a lock, a socket, an open file, a generator...)."""


class PayloadTooLarge(PayloadError, ValueError):
    """A payload is over ``DJANGO_TASKS["MAX_PAYLOAD_BYTES"]``."""


class PayloadSignatureError(PayloadError, ValueError):
    """A payload's signature does not verify: it was tampered with or signed with another key."""


@functools.lru_cache(maxsize=8)
def _key(secret: str | bytes) -> bytes:
    """The HMAC key derived from a secret, as ``salted_hmac`` derives it (computed once)."""
    return hashlib.sha256((_SALT + force_str(secret)).encode()).digest()


@functools.lru_cache(maxsize=1024)
def _bound_key(secret: str | bytes, task_key: str, field: str) -> bytes:
    """The key that signs ``field`` payloads of ``task_key``'s runs (computed once each)."""
    return hashlib.sha256(
        b"%s\x00%s\x00%s" % (_key(secret), task_key.encode(), field.encode())
    ).digest()


def _signature(data: bytes, secret: str | bytes, task_key: str = "", field: str = "value") -> bytes:
    # The one-shot C function: no HMAC object per payload (part of every .delay()).
    return hmac.digest(_bound_key(secret, task_key, field), data, "sha256")


def dumps(value: Any, *, what: str = "value", task_key: str = "") -> bytes:
    """Pickle and sign ``value`` for ``task_key``'s runs - as their parameters, or as a result
    or exception (``what``); raise a clear error if it cannot be pickled or is too large."""
    try:
        # The C pickler first (most values: fast); cloudpickle for what it cannot do (lambdas,
        # closures, classes defined in __main__). Both are read back by pickle.loads.
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if b"__main__" in data:  # pickled by reference to a script: workers can't import it
            raise pickle.PicklingError("refers to __main__")
    except Exception:
        try:
            data = _cloudpickle(value)
        except Exception as exc:
            raise SerializationError(
                f"The task's {what} cannot be pickled: {cut(str(exc))}"
            ) from exc
    limit = task_settings().MAX_PAYLOAD_BYTES
    if len(data) > limit:
        raise PayloadTooLarge(
            f"The task's {what} pickle to {len(data)} bytes, over the limit of {limit} bytes "
            f"(DJANGO_TASKS['MAX_PAYLOAD_BYTES']). Pass a reference (a primary key, a file path) "
            f"instead of the data."
        )
    signature = _signature(data, settings.SECRET_KEY, task_key, _FIELDS.get(what, what))
    return _MAGIC + signature + bytes(data)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, except for open files: it would pickle a file's contents (read now, in
    the caller's process), which is never what passing a file to a background run means."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, io.IOBase):
            raise pickle.PicklingError(
                f"{obj!r} is an open file or stream: a worker runs in another process, maybe on "
                f"another host. Pass its path (or its contents) instead."
            )
        return super().reducer_override(obj)


def _cloudpickle(value: Any) -> bytes:
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return buffer.getvalue()


def loads(payload: bytes | memoryview, *, task_key: str = "", field: str = "value") -> Any:
    """Verify and unpickle a payload made by :func:`dumps` for ``task_key``'s ``field``."""
    raw = bytes(payload)
    head = len(_MAGIC) + _DIGEST_SIZE
    bound = raw.startswith(_MAGIC)
    if len(raw) < head or not (bound or raw.startswith(_MAGIC_UNBOUND)):
        raise PayloadSignatureError("The payload is not a signed django_tasks payload.")
    signature, data = raw[len(_MAGIC) : head], raw[head:]
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if bound:
        valid = any(
            hmac.compare_digest(signature, _signature(data, secret, task_key, field))
            for secret in secrets
        )
    else:
        valid = any(
            hmac.compare_digest(signature, hmac.digest(_key(secret), data, "sha256"))
            for secret in secrets
        )
    if not valid:
        raise PayloadSignatureError(
            f"The payload's signature does not verify as the {field} of task {task_key!r} with "
            f"SECRET_KEY or SECRET_KEY_FALLBACKS: it was tampered with, moved from another "
            f"task's run or another field, or signed with another key. It was not unpickled."
        )
    return pickle.loads(data)


def rebind(payload: bytes, *, field: str, from_task: str, to_task: str) -> bytes:
    """``payload`` (verified as ``from_task``'s) signed for ``to_task``: a cached result
    computed by one task and returned by another's run."""
    if from_task == to_task:
        return payload
    raw = bytes(payload)
    loads(raw, task_key=from_task, field=field)  # verify before signing anew
    data = raw[len(_MAGIC) + _DIGEST_SIZE :]
    return _MAGIC + _signature(data, settings.SECRET_KEY, to_task, field) + data


def preview(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe, bounded picture of ``value`` for the admin and API (never unpickled).

    Always storable (see :mod:`.storable`): NaN and infinities become strings, NUL and lone
    surrogates are escaped, an int too long to print is summarised - so that a preview can
    never be the reason a run or its result fails to be written."""
    limit = task_settings().PREVIEW_MAX_CHARS
    if type(value) is dict and depth == 0:
        shown = _plain_preview(value, limit)
        if shown is not None:
            return shown
    try:
        return _preview(value, depth, limit)
    except Exception as exc:  # a mapping or sequence that breaks when read
        return f"<{type(value).__qualname__} (preview failed: {describe_exception(exc)})>"


def _plain_preview(arguments: dict[Any, Any], limit: int) -> dict[str, Any] | None:
    """The preview of the usual arguments - at most 20, named by short plain strings, each
    ``None``, a bool, a modest int, a finite float or a short plain string - is the arguments
    themselves; ``None`` for anything else (then :func:`_preview` makes one). A fast path:
    previews were a fifth of a bulk enqueue's Python."""
    if len(arguments) > 20:
        return None
    for key, value in arguments.items():
        if type(key) is not str or not _plain_text(key, limit):
            return None
        kind = type(value)
        if value is None or kind is bool or (kind is int and -_BIG < value < _BIG):
            continue
        if kind is float and math.isfinite(value):
            continue
        if kind is str and _plain_text(value, limit):
            continue
        return None
    return dict(arguments)


#: Ints shown as they are by the fast path (longer ones are summarised by storable_int).
_BIG = 10**15


def _plain_text(text: str, limit: int) -> bool:
    return len(text) <= limit and text.isascii() and "\x00" not in text


def _preview(value: Any, depth: int, limit: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return storable_int(value, limit)
    if isinstance(value, float):
        return storable_float(value)
    if isinstance(value, str):
        return _cut(value, limit)
    if depth >= 3:
        return _short_repr(value, limit)
    if isinstance(value, Mapping):
        items = list(value.items())
        shown = {_preview_key(k, limit): _preview(v, depth + 1, limit) for k, v in items[:20]}
        if len(items) > 20:
            shown["…"] = f"{len(items) - 20} more"
        return shown
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out = [_preview(v, depth + 1, limit) for v in seq[:20]]
        if len(seq) > 20:
            out.append(f"… {len(seq) - 20} more")
        return out
    return _short_repr(value, limit)


def _cut(text: str, limit: int) -> str:
    return storable_text(text) if len(text) <= limit else storable_text(text[:limit]) + "…"


def _preview_key(key: Any, limit: int) -> str:
    if isinstance(key, str):
        return _cut(key, limit)
    if isinstance(key, int | float | bool) or key is None:
        return _cut(str(_preview(key, 0, limit)), limit)
    return _short_repr(key, limit)


def _short_repr(value: Any, limit: int) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__} (repr failed)>"
    return _cut(text, limit)
