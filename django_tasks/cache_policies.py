"""Cache policies: what makes two runs of a task "the same" (Prefect's names).

A policy turns a run into a cache key - or ``None``, meaning "do not cache this run". Policies
combine with ``+`` (the key covers every part) and ``- "name"`` leaves a parameter out of
the inputs part (``(INPUTS + TASK_SOURCE) - "conn"``; a policy without inputs is unchanged).
A run whose key has a live result record ends CACHED with that result, without calling the
function (see :mod:`django_tasks.caching`).

``INPUTS`` hashes the parameters as canonical JSON when they are JSON values (so ``{"a": 1,
"b": 2}`` and ``{"b": 2, "a": 1}`` are the same), else as a pickle. A parameter that can be
neither (a lock, an open file, a generator) is a :class:`CacheKeyError` at the call, naming
it: no key is better than a wrong one. Exclude it (``INPUTS - "conn"``) or give a
``cache_key_fn``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

from .storable import cut

if TYPE_CHECKING:
    from .context import TaskRunContext

__all__ = [
    "INPUTS",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyError",
    "CacheKeyFn",
    "CachePolicy",
    "Inputs",
    "inputs_digest",
]

#: ``cache_key_fn(context, parameters) -> str | None``, as in Prefect.
CacheKeyFn = Callable[["TaskRunContext", dict[str, Any]], "str | None"]


class CacheKeyError(ValueError):
    """A run's cache key could not be computed (an input that cannot be hashed)."""


class CachePolicy:
    """Base class: ``compute_key`` returns a key, or ``None`` for "do not cache"."""

    def compute_key(self, context: TaskRunContext, parameters: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return CompoundCachePolicy([*_parts(self), *_parts(other)])

    def __sub__(self, name: str) -> CachePolicy:
        """Leave parameter ``name`` out of the key: only :class:`Inputs` (alone or in a
        compound) hashes parameters, so on any other policy this changes nothing - Prefect's
        rule, which lets ``policy - "conn"`` be written without knowing the policy."""
        if not isinstance(name, str):
            return NotImplemented
        return self


class CompoundCachePolicy(CachePolicy):
    """Several policies at once: the key hashes every part's key (parts that say ``None`` are
    left out; if all do, the run is not cached)."""

    def __init__(self, policies: list[CachePolicy]) -> None:
        self.policies = policies

    def compute_key(self, context: TaskRunContext, parameters: Mapping[str, Any]) -> str | None:
        keys = [p.compute_key(context, parameters) for p in self.policies]
        present = [k for k in keys if k is not None]
        return _digest("+".join(present)) if present else None

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            return NotImplemented
        return CompoundCachePolicy([part - name for part in self.policies])

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies)


class _NoCache(CachePolicy):
    def compute_key(self, context: TaskRunContext, parameters: Mapping[str, Any]) -> str | None:
        return None

    def __repr__(self) -> str:
        return "NO_CACHE"


class _TaskSource(CachePolicy):
    """The function's source code: editing the task invalidates its cache."""

    def compute_key(self, context: TaskRunContext, parameters: Mapping[str, Any]) -> str | None:
        fn = context.task.fn
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = repr(fn.__code__.co_code)
        return _digest(source)

    def __repr__(self) -> str:
        return "TASK_SOURCE"


class _RunId(CachePolicy):
    """The run itself: only a retry or a re-execution of the same run finds the result."""

    def compute_key(self, context: TaskRunContext, parameters: Mapping[str, Any]) -> str | None:
        return str(context.id)

    def __repr__(self) -> str:
        return "RUN_ID"


class Inputs(CachePolicy):
    """The run's parameters (all but ``exclude``)."""

    def __init__(self, exclude: tuple[str, ...] = ()) -> None:
        self.exclude = exclude

    def __sub__(self, name: str) -> Inputs:
        if not isinstance(name, str):
            return NotImplemented
        return Inputs((*self.exclude, name))

    def compute_key(self, context: TaskRunContext, parameters: Mapping[str, Any]) -> str | None:
        return inputs_digest(parameters, self.exclude)

    def __repr__(self) -> str:
        return "INPUTS" + "".join(f" - {name!r}" for name in self.exclude)


def inputs_digest(parameters: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> str:
    """A hash of a run's parameters (JSON where it can, else pickled): INPUTS's cache key and
    the key of ``unique=True`` runs."""
    kept = {k: v for k, v in parameters.items() if k not in exclude}
    parts = [f"{name}={_hash_value(name, value)}" for name, value in sorted(kept.items())]
    return _digest("&".join(parts))


def _hash_value(name: str, value: Any) -> str:
    try:
        return _digest("j" + json.dumps(value, sort_keys=True, allow_nan=True))
    except (TypeError, ValueError):
        pass
    try:
        return _digest(b"p" + cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise CacheKeyError(
            f"Cache policy INPUTS cannot hash parameter {name!r} ({type(value).__name__}): "
            f"{cut(str(exc))}. Leave it out (cache_policy=INPUTS - {name!r}) or pass a "
            "cache_key_fn."
        ) from exc


def _digest(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def _parts(policy: CachePolicy) -> list[CachePolicy]:
    return policy.policies if isinstance(policy, CompoundCachePolicy) else [policy]


NO_CACHE: CachePolicy = _NoCache()
INPUTS = Inputs()
TASK_SOURCE: CachePolicy = _TaskSource()
RUN_ID: CachePolicy = _RunId()
