"""Text and JSON that PostgreSQL accepts, whatever a task returns, raises or logs.

PostgreSQL refuses a NUL character in ``text`` and ``jsonb``, lone UTF-16 surrogates (they
are not UTF-8), and NaN or infinities in ``jsonb``; Python refuses to print an int of more than
4,300 digits. A task's value reaches the database as a signed pickle (exact, whatever it holds)
*and* as text a person reads: a preview, a state message, a traceback, a log line. This module
makes that text storable - escaped or summarised, and cut at a size a page can show, with the
cut marked - so that recording an outcome can never fail because of what the outcome holds.
"""

from __future__ import annotations

import math
import reprlib
import traceback
from typing import Any

from .conf import task_settings

__all__ = [
    "cut",
    "describe_exception",
    "format_traceback",
    "shown",
    "storable_float",
    "storable_int",
    "storable_json",
    "storable_message",
    "storable_text",
]

#: log10(2): the decimal digits of an int from its bit length, without printing it.
_LOG10_2 = 0.30102999566398120
#: Python prints ints up to this many digits (sys.get_int_max_str_digits' default).
_MAX_INT_DIGITS = 4300
#: How a cut is marked.
_CUT = "… [cut: {} more characters]"
#: Characters of a value an error message quotes (:func:`shown`).
QUOTED_CHARS = 200


def storable_text(text: str, limit: int | None = None) -> str:
    """``text`` with NUL shown as ``\\x00`` and lone surrogates as ``\\udXXX``, cut to at most
    ``limit`` characters (the cut marked with how many characters were left out)."""
    length = len(text)
    if limit is not None and length > limit:
        text = text[:limit]  # escape only what may be kept (a message can be 50 MB)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if limit is not None and (length > limit or len(text) > limit):
        # The marker for the whole length is at least as long as the one finally written.
        keep = max(0, limit - len(_CUT.format(max(length, len(text)))))
        text = text[:keep] + _CUT.format(max(length, len(text)) - keep)
    return text


def storable_message(text: str) -> str:
    """A state message, traceback or log line: storable and at most ``MESSAGE_MAX_CHARS``."""
    return storable_text(text, task_settings().MESSAGE_MAX_CHARS)


def storable_float(value: float) -> float | str:
    """JSON has no NaN or infinity: those become the strings ``NaN``, ``Infinity``..."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def storable_int(value: int, limit: int) -> int | str:
    """An int longer than ``limit`` digits is summarised by its number of digits."""
    bits = value.bit_length()
    if bits * _LOG10_2 < limit:
        return value
    digits = int(bits * _LOG10_2) + 1
    if abs(value) < 10 ** (digits - 1):
        digits -= 1
    if digits <= limit:
        return value
    return f"<int of {digits} digits>"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` for a state message, even when ``str(exc)`` itself raises."""
    try:
        text = str(exc)
    except Exception as error:
        try:
            detail = f"{type(error).__name__}: {error}"
        except Exception:
            detail = type(error).__name__
        text = f"<str() failed: {detail}>"
    return storable_message(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback as text, storable and capped."""
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception as error:  # a broken __str__ inside a chained exception, a bad frame...
        text = f"{describe_exception(exc)}\n(the traceback could not be formatted: {error!r})"
    return storable_message(text)


def storable_json(value: Any) -> Any:
    """``value`` (JSON-ready: dicts, lists, str, numbers) with every string, key and number
    made storable; for data built elsewhere that must be written whatever it holds."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return storable_float(value)
    if isinstance(value, int):
        return storable_int(value, _MAX_INT_DIGITS)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return storable_text(repr(value))


class _Quoting(reprlib.Repr):
    """``reprlib``'s bounded repr (a few items of a container, a few levels deep), with ints
    summarised instead of printed (Python refuses to print one of more than 4,300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        value = storable_int(x, self.maxlong)
        return repr(value) if isinstance(value, int) else value


_quoting = _Quoting()
_quoting.maxstring = _quoting.maxother = _quoting.maxlong = QUOTED_CHARS
_quoting.maxlevel = 3


def cut(text: str, limit: int = 2 * QUOTED_CHARS) -> str:
    """Another library's error message, quoted in ours: it may quote what it refused whole
    (``inspect``: "got an unexpected keyword argument 'xxx...'"), so it is cut as values are."""
    return storable_text(text, limit)


def shown(value: object, limit: int = QUOTED_CHARS) -> str:
    """``repr(value)`` as an error message quotes what it refuses: whole when short; else its
    first ``limit`` characters, an ellipsis and its full length - a 10 MB key passed by mistake
    makes a message (a log line, a 400 response, a form error) of normal size. Never raises,
    and the text is storable (a message may be written to a run's state)."""
    if isinstance(value, str | bytes | bytearray):
        if len(value) <= limit:
            return storable_text(repr(value))
        return storable_text(f"{value[:limit]!r}… ({len(value):,} characters)")
    if isinstance(value, int) and not isinstance(value, bool):
        return _quoting.repr_int(value, 0)
    try:
        text = _quoting.repr(value)
    except Exception:  # a __repr__ that fails: say what it is instead
        text = f"<{type(value).__name__} object>"
    if len(text) > limit:  # reprlib shortened what it holds already ("..."): cut what is left
        text = f"{text[:limit]}…"
    return storable_text(text)
