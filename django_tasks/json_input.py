"""JSON from outside - an API request's body, a schedule's arguments typed in the admin or
declared in code - read and checked before anything else touches it.

Python's ``json`` module recurses once per level of nesting: a body of 100,000 ``[`` is a
``RecursionError`` (not the ``ValueError`` every caller catches), so a 500, and a deeply
nested value breaks whatever walks it later. :class:`BoundedJSONDecoder` measures the nesting
first, by a scan that does not recurse, and refuses NaN and infinities (not JSON).

PostgreSQL's ``jsonb`` also refuses ``\\u0000`` and lone surrogates: JSON that is stored as it
is given (a schedule's arguments) is read with :class:`StorableJSONDecoder`, which refuses
those too, with a message that names them - where the JSON is given, never later at the
``INSERT``. (An API body is read with the bounded decoder: its fields check their own values,
and a field it does not have is ignored whatever it holds.)
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .storable import shown

__all__ = [
    "MAX_DEPTH",
    "BoundedJSONDecoder",
    "StorableJSONDecoder",
    "check_storable",
    "loads",
    "read_stored",
]

#: Levels of nesting accepted (a list in a dict in a list... is three). Deeper JSON is a
#: mistake or an attack; PostgreSQL itself refuses a few thousand levels.
MAX_DEPTH = 100

#: The characters that matter to nesting: brackets, and the quotes and backslashes that say
#: whether a bracket is inside a string.
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


class _Refused(ValueError):
    """JSON that this module refuses (the decoder turns it into a ``JSONDecodeError``)."""


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text`` nests arrays and objects more than ``limit`` levels deep, brackets in
    strings not counted; in one pass, without recursion. Text that is not JSON gives some
    answer: the parser says what is wrong with it."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case: not even that many brackets
    depth, in_string, escaped_at = 0, False, -1
    for match in _STRUCTURE.finditer(text):
        at = match.start()
        if at == escaped_at:
            continue  # the character after a backslash, in a string
        char = text[at]
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def check_storable(value: Any, what: str = "JSON") -> None:
    """Refuse (``ValueError``) a value PostgreSQL's ``jsonb`` would not store as given, or that
    JSON cannot say: NaN and infinities, NUL characters and lone surrogates in strings and
    keys, keys that are not strings, ints too long to print, other types, too deep nesting.
    Walks with a stack of its own (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()  # depth: of the arrays and objects around it, with it
        if depth > MAX_DEPTH and isinstance(item, dict | list | tuple):
            raise _Refused(f"{what}: nested more than {MAX_DEPTH} levels deep.")
        if isinstance(item, dict):
            for key, member in item.items():
                if not isinstance(key, str):
                    raise _Refused(f"{what}: a key that is not a str ({shown(key)}).")
                _check_text(key, what)
                stack.append((member, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((member, depth + 1) for member in item)
        elif isinstance(item, str):
            _check_text(item, what)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _Refused(f"{what}: {item!r} is not a JSON number (NaN and infinities).")
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > 14_000:  # about 4,300 digits: more than Python prints
                raise _Refused(f"{what}: an int too long to write ({shown(item)}).")
        elif item is not None and not isinstance(item, bool):
            raise _Refused(f"{what}: a {type(item).__name__} is not a JSON value.")


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise _Refused(f"{what}: a NUL character, which PostgreSQL cannot store in JSON.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(
                f"{what}: a lone surrogate, which is not text ({shown(text)})."
            ) from None


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON (PostgreSQL cannot store it).")


class BoundedJSONDecoder(json.JSONDecoder):
    """``json.loads(text, cls=BoundedJSONDecoder)``: JSON nested at most :data:`MAX_DEPTH`
    levels, without NaN or infinities, or a ``json.JSONDecodeError`` that says what is wrong
    - the one error Django's form ``JSONField`` (and any careful caller) expects."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("parse_constant", _refuse_constant)
        super().__init__(**kwargs)

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        if too_deep(s):
            raise json.JSONDecodeError(f"Nested more than {MAX_DEPTH} levels deep", s, 0)
        try:
            value = super().decode(s, *args, **kwargs)
            self.check(value)
        except json.JSONDecodeError:
            raise
        except RecursionError:  # not after too_deep(); but never a RecursionError from here
            raise json.JSONDecodeError("Nested too deep", s, 0) from None
        except ValueError as exc:  # refused here, or an int of more than 4,300 digits
            raise json.JSONDecodeError(str(exc).rstrip("."), s, 0) from None
        return value

    def check(self, value: Any) -> None:
        """Further checks of the value read (ValueError)."""


class StorableJSONDecoder(BoundedJSONDecoder):
    """JSON as PostgreSQL stores it (:func:`check_storable`)."""

    def check(self, value: Any) -> None:
        check_storable(value)


def loads(text: str | bytes, cls: type[BoundedJSONDecoder] = StorableJSONDecoder) -> Any:
    """Parse JSON from outside (``json.JSONDecodeError``, a ``ValueError``, when refused)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError too
    return json.loads(text, cls=cls)


#: Stored JSON this short holds no int longer than Python reads (4,300 digits).
_SHORT = 4000


def read_stored(data: str | bytes | memoryview) -> Any:
    """A stored ``json``/``jsonb`` value as the worker's psycopg connections read it: with the
    bounded decoder, and as its text when that refuses it - as Django's ``JSONField`` does
    with the models' decoder - so that a value SQL nested thousands deep (a RecursionError
    in ``json.loads``) or an int longer than Python reads (a ValueError) reaches the code that
    reads the row, which fails that one run (``ClaimedRun.from_claim``), instead of making
    psycopg fail the row's whole batch."""
    if isinstance(data, memoryview):
        data = bytes(data)
    if len(data) <= _SHORT:
        opening = data.count(b"[") + data.count(b"{") if isinstance(data, bytes) else None
        if opening is not None and opening <= MAX_DEPTH:
            return json.loads(data)  # neither too deep nor too long an int: the fast way
    try:
        return loads(data, BoundedJSONDecoder)
    except ValueError:
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
