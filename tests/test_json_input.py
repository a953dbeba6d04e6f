"""JSON from outside, read without recursion limits and checked for what PostgreSQL stores."""

from __future__ import annotations

import json
import time

import pytest

from django_tasks.json_input import MAX_DEPTH, BoundedJSONDecoder, check_storable, loads, too_deep


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[]", False),
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, False),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), True),
        ('{"a":' * (MAX_DEPTH + 1), True),
        ('["' + "[" * 500 + '"]', False),  # brackets in a string are text
        ('["\\"' + "[" * 500 + '"]', False),  # after an escaped quote, still in the string
        ('["\\\\"' + ", [" * 500 + "]", True),  # an escaped backslash ends nothing
        ("[" * 100_000, True),
    ],
)
def test_nesting_is_measured_without_recursion(text, deep):
    assert too_deep(text) is deep


def test_the_scan_of_a_large_body_is_quick():
    body = json.dumps([{"a": [1, {"b": "x[y]{"}]} for _ in range(10_000)])  # 260 KB
    started = time.perf_counter()
    assert not too_deep(body)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * 100_000, "Nested more than 100 levels deep"),
        ("[NaN]", "NaN is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ("[1e999]", "inf is not a JSON number"),
        ('["\\ud800"]', "a lone surrogate"),
        ('{"\\udfff": 1}', "a lone surrogate"),
        ('["a\\u0000b"]', "a NUL character"),
        ("[" + "9" * 5000 + "]", "Exceeds the limit (4300 digits)"),
        ("[1 2]", "Expecting ',' delimiter"),  # the same words in Python 3.11 to 3.13
    ],
)
def test_what_postgresql_refuses_is_a_decode_error_that_says_why(text, said):
    with pytest.raises(json.JSONDecodeError) as info:
        loads(text)
    assert said in info.value.msg


def test_the_bounded_decoder_leaves_strings_to_whoever_reads_them():
    assert loads('["a\\u0000b", "\\ud800"]', BoundedJSONDecoder) == ["a\x00b", "\ud800"]
    with pytest.raises(json.JSONDecodeError, match="NaN"):
        loads("[NaN]", BoundedJSONDecoder)


def test_values_built_in_python_are_checked_the_same_way():
    check_storable([1, 2.5, "é", None, True, {"k": [1]}], "args")
    for value, said in [
        (float("nan"), "nan is not a JSON number"),
        ({1: "x"}, "a key that is not a str"),
        ({"x"}, "a set is not a JSON value"),
        (7**9000, "an int too long to write"),
    ]:
        with pytest.raises(ValueError, match=said):
            check_storable([value], "args")
    deep: list[object] = []
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 100 levels"):
        check_storable(deep, "args")  # no RecursionError: a stack of its own


@pytest.mark.parametrize(
    "wrap", [bytes, memoryview, lambda b: b.decode()], ids=["bytes", "view", "str"]
)
def test_stored_json_is_read_as_json_or_else_as_its_text(wrap):
    """What the worker's connections read from json/jsonb columns (read_stored): JSON as JSON,
    short or long; what Python's json cannot read (too deep, an int too long) as its text."""
    from django_tasks.json_input import read_stored

    assert read_stored(wrap(b'{"tags": ["a", "b"], "n": 1.5}')) == {"tags": ["a", "b"], "n": 1.5}
    long_list = b"[" + b",".join(b'"x"' for _ in range(2000)) + b"]"
    assert read_stored(wrap(long_list)) == ["x"] * 2000  # past the fast way's length
    nested = b"[" * 100 + b"]" * 100  # 100 levels: read
    value = read_stored(wrap(nested))
    for _ in range(99):
        assert isinstance(value, list)
        assert len(value) == 1
        value = value[0]
    assert value == []
    deep = b"[" * 5000 + b"]" * 5000
    assert read_stored(wrap(deep)) == deep.decode()
    huge = b"[" + b"9" * 5000 + b"]"
    assert read_stored(wrap(huge)) == huge.decode()
