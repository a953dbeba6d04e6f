"""Text and JSON made storable: escaped, summarised, capped with the cut marked."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from django_tasks.serializers import preview
from django_tasks.storable import (
    describe_exception,
    format_traceback,
    shown,
    storable_float,
    storable_int,
    storable_json,
    storable_message,
    storable_text,
)


def test_nul_and_lone_surrogates_are_escaped():
    assert storable_text("a\x00b") == "a\\x00b"
    assert storable_text("x \ud800 y") == "x \\ud800 y"
    assert storable_text("é ✓ 😀") == "é ✓ 😀"  # real characters stay
    assert storable_text("a\x00\ud800").encode("utf-8")  # always encodable


@pytest.mark.parametrize("limit", [0, 1, 10, 40, 100])
def test_a_cut_is_marked_and_never_longer_than_the_limit(limit):
    text = storable_text("x" * 500 + "\x00" * 500, limit)
    assert len(text) <= max(limit, len("… [cut: 1000 more characters]"))
    if limit >= 40:
        assert len(text) <= limit
        kept = text.split("…")[0]
        assert text.endswith(f"… [cut: {1000 - len(kept)} more characters]")


@override_settings(DJANGO_TASKS={"MESSAGE_MAX_CHARS": 100})
def test_messages_are_capped_by_the_setting():
    assert len(storable_message("y" * 10_000)) <= 100
    assert storable_message("short") == "short"


def test_numbers_json_cannot_hold():
    assert [storable_float(v) for v in (1.5, float("nan"), float("inf"), -float("inf"))] == [
        1.5,
        "NaN",
        "Infinity",
        "-Infinity",
    ]
    assert storable_int(10**199, 200) == 10**199
    assert storable_int(-(10**200), 200) == "<int of 201 digits>"
    assert storable_int(10**5000 - 1, 200) == "<int of 5000 digits>"


def test_exceptions_are_described_even_when_str_fails():
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe_exception(ValueError("bad\x00")) == "ValueError: bad\\x00"
    assert describe_exception(KeyError()) == "KeyError"
    assert describe_exception(Broken()) == "Broken: <str() failed: RuntimeError: no>"
    with pytest.raises(Broken) as info:
        raise Broken()
    assert "Traceback (most recent call last)" in format_traceback(info.value)


def test_storable_json_and_preview_always_encode_for_postgresql():
    value = {"n\x00": [float("nan"), "\ud800", 10**5000, (1, 2)], 3: object()}
    for made in (storable_json(value), preview(value)):
        text = json.dumps(made, allow_nan=False)
        assert "\\u0000" not in text
        text.encode("utf-8")


def test_preview_survives_a_mapping_that_breaks_when_read():
    class Hostile(dict[str, int]):
        def items(self):
            raise RuntimeError("no reading")

    assert preview(Hostile(a=1)).endswith(".Hostile (preview failed: RuntimeError: no reading)>")


def test_the_edges_of_describing_and_summarising(monkeypatch):
    assert storable_int(10**200 - 1, 200) == 10**200 - 1  # exactly 200 digits: kept

    class Hopeless(Exception):
        def __str__(self) -> str:
            raise Hopeless()  # and so does the error's own str()

    assert describe_exception(Hopeless()) == "Hopeless: <str() failed: Hopeless>"

    def broken_formatting(*args: object) -> list[str]:
        raise RuntimeError("no frames")

    monkeypatch.setattr("traceback.format_exception", broken_formatting)
    text = format_traceback(ValueError("x"))
    assert text.startswith("ValueError: x\n(the traceback could not be formatted: RuntimeError")


def test_shown_quotes_a_value_whole_when_short_and_cut_with_its_length_when_not():
    assert shown("invoice-42") == "'invoice-42'"
    assert shown(b"a\x00") == "b'a\\x00'"
    assert shown("a\ud800") == "'a\\ud800'"  # escaped: storable, printable
    assert shown(7) == "7"
    assert shown(10**5000) == "<int of 5001 digits>"  # Python would refuse to print it
    huge = shown("x" * 10_000_000)
    assert huge == f"'{'x' * 200}'… (10,000,000 characters)"
    assert len(shown(list(range(1_000_000)))) < 250
    assert len(shown({"k": "y" * 1_000_000, "deep": [[[[[[1]]]]]]})) < 250

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert "Broken" in shown(Broken())
