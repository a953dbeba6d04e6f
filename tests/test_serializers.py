import threading

import pytest
from django.test import override_settings

from django_tasks.serializers import (
    PayloadSignatureError,
    PayloadTooLarge,
    SerializationError,
    dumps,
    loads,
    preview,
)


def test_round_trip_with_closures():
    factor = 3
    payload = dumps(((lambda x: x * factor), {"a": [1, 2]}))
    fn, data = loads(payload)
    assert fn(2) == 6
    assert data == {"a": [1, 2]}


def test_tampered_payload_is_refused():
    payload = bytearray(dumps({"amount": 10}))
    payload[-3] ^= 0x01
    with pytest.raises(PayloadSignatureError, match="tampered"):
        loads(bytes(payload))


def test_garbage_is_refused():
    with pytest.raises(PayloadSignatureError, match="not a signed"):
        loads(b"\x80\x04K\x01.")


def test_other_secret_is_refused_and_fallback_is_accepted():
    with override_settings(SECRET_KEY="some-other-key", SECRET_KEY_FALLBACKS=[]):
        foreign = dumps("x")
    with pytest.raises(PayloadSignatureError):
        loads(foreign)
    with override_settings(SECRET_KEY="tests-old-secret-key"):
        rotated = dumps("rotated")
    assert loads(rotated) == "rotated"  # SECRET_KEY_FALLBACKS holds the old key


def test_unpicklable_value_has_a_clear_error():
    with pytest.raises(SerializationError, match="parameters cannot be pickled"):
        dumps(threading.Lock(), what="parameters")


@override_settings(DJANGO_TASKS={"MAX_PAYLOAD_BYTES": 1000})
def test_size_limit():
    assert loads(dumps("x" * 500)) == "x" * 500
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        dumps("x" * 2000)


def test_preview_is_json_safe_and_bounded():
    lock = threading.Lock()
    shown = preview({"n": 1, "s": "x" * 500, "obj": lock, "items": list(range(50)), 3: (1, 2)})
    assert shown["n"] == 1
    assert shown["s"].endswith("…")
    assert len(shown["s"]) == 201
    assert shown["obj"].startswith("<unlocked _thread.lock")
    assert len(shown["items"]) == 21
    assert shown["items"][-1] == "… 30 more"
    assert shown["3"] == [1, 2]
    assert preview({f"k{i}": i for i in range(25)})["…"] == "5 more"
    assert preview([[[["deep"]]]]) == [[["['deep']"]]]


def test_preview_survives_broken_repr():
    class Broken:
        def __repr__(self):
            raise RuntimeError

    assert preview(Broken()) == "<test_preview_survives_broken_repr.<locals>.Broken (repr failed)>"


def test_values_from_main_are_pickled_by_value(monkeypatch):
    class Local:
        pass

    Local.__module__ = "__main__"
    Local.__qualname__ = "Local"
    import __main__

    monkeypatch.setattr(__main__, "Local", Local, raising=False)
    payload = dumps(Local())
    monkeypatch.delattr(__main__, "Local")
    assert type(loads(payload)).__name__ == "Local"  # cloudpickle carried the class itself
