"""Upstream runs: futures passed as arguments (data dependencies) and ``wait_for``.

Before a run starts, every future among its arguments - also inside lists, tuples, sets and
dicts - is waited for and replaced by its result, and every future in ``wait_for`` is waited
for. If one of them did not complete, the run does not start: it ends FAILED with a message
naming that upstream (:class:`UpstreamFailed`), unless the future was wrapped in
:func:`allow_failure`, in which case the argument is the upstream's exception. These are
Prefect's rules; they hold for inline calls and ``.submit()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .futures import BaseFuture

__all__ = [
    "AnyFuture",
    "Upstream",
    "UpstreamFailed",
    "allow_failure",
    "collect_upstreams",
    "resolve",
]

T = TypeVar("T")


#: Submitted and background futures alike.
AnyFuture = BaseFuture


class allow_failure(Generic[T]):  # Prefect's name (lower case)
    """Wrap an upstream future so that its failure does not stop the downstream run: the
    downstream receives the upstream's exception as the argument instead."""

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"allow_failure({self.value!r})"


class UpstreamFailed(Exception):
    """An upstream run did not complete, so this run did not start."""


@dataclass(frozen=True)
class Upstream:
    future: AnyFuture
    kind: str  # "data" or "wait_for"
    allow_failure: bool


def collect_upstreams(
    args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] = ()
) -> list[Upstream]:
    """Every future a run depends on, once each, in the order met. Containers are visited
    once each, so a structure that holds itself (which pickle accepts) is no problem, and
    without recursion, so neither is one nested a hundred thousand deep."""
    if not wait_for and _all_plain(args) and _all_plain(kwargs.values()):
        return []  # the usual call: no container to look into (a quarter of a bulk item's Python)
    found: dict[uuid.UUID, Upstream] = {}
    seen: set[int] = set()
    # A stack, popped from its end: the arguments first, then wait_for in its order.
    todo: list[tuple[Any, str, bool]] = [(w, "wait_for", False) for w in reversed(list(wait_for))]
    todo.append((list(args) + list(kwargs.values()), "data", False))
    while todo:
        value, kind, allowed = todo.pop()
        if isinstance(value, allow_failure):
            todo.append((value.value, kind, True))
        elif isinstance(value, AnyFuture):
            found.setdefault(value.id, Upstream(value, kind, allowed))
        elif isinstance(value, list | tuple | set | frozenset | dict):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = list(value.values() if isinstance(value, dict) else value)
            todo.extend((item, kind, allowed) for item in reversed(items))
    return list(found.values())


#: Types that never hold a future.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _all_plain(values: Iterable[Any]) -> bool:
    return all(type(value) in _PLAIN for value in values)


def check_upstreams(upstreams: list[Upstream]) -> None:
    """Wait for every upstream; raise :class:`UpstreamFailed` for the first that failed."""
    for upstream in upstreams:
        state = upstream.future.wait()
        if not state.is_completed() and not upstream.allow_failure:
            raise UpstreamFailed(
                f"Upstream run {upstream.future.id} ended {state.name}"
                f"{': ' + state.message if state.message else ''}; this run did not start."
            )


def resolve(value: Any, only: type[BaseFuture] = BaseFuture, timeout: float | None = None) -> Any:
    """``value`` with every future (of class ``only``) replaced by its result, after
    :func:`check_upstreams`; an ``allow_failure`` future gives its exception instead.
    Containers are copied once each (a list that holds itself gives a copy that holds the
    copy)."""
    return _Resolver(only, timeout).resolve(value, allowed=False)


class _Resolver:
    """One resolution: containers copied once each, ``allow_failure`` reaching every future
    inside what it wraps (``allow_failure([f, 1, 2])`` gives ``[f's exception, 1, 2]``, as in
    Prefect)."""

    def __init__(self, only: type[BaseFuture], timeout: float | None) -> None:
        self.only, self.timeout = only, timeout
        self.done: dict[tuple[int, bool], Any] = {}

    def resolve(self, value: Any, allowed: bool) -> Any:
        if isinstance(value, allow_failure):
            if isinstance(value.value, BaseFuture) and not isinstance(value.value, self.only):
                return value  # a future of another kind: resolved where it runs
            return self.resolve(value.value, allowed=True)
        if isinstance(value, self.only):
            return value.result(self.timeout, raise_on_failure=not allowed)
        if isinstance(value, BaseFuture):  # another kind, resolved later: keep what allows it
            return allow_failure(value) if allowed else value
        key = (id(value), allowed)
        if key in self.done:
            return self.done[key]
        if isinstance(value, list):
            copy: list[Any] = []
            self.done[key] = copy  # before the items: an item may be the list itself
            copy.extend(self.resolve(item, allowed) for item in value)
            return copy
        if isinstance(value, dict):
            mapping: dict[Any, Any] = {}
            self.done[key] = mapping
            mapping.update((k, self.resolve(item, allowed)) for k, item in value.items())
            return mapping
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*(self.resolve(item, allowed) for item in value))
        for kind in (tuple, set, frozenset):
            if isinstance(value, kind):
                return kind(self.resolve(item, allowed) for item in value)
        return value
