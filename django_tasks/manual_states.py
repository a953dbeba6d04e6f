"""States a task returns to say how its run ends: ``return Failed(message="no rows")``.

Prefect lets a task return a state instead of a value; the run then ends in that state (its
type, name and message as given) rather than COMPLETED with the state object as its result.
These constructors build one; :func:`returned_state` is how the runners recognise it:

* ``Completed(data=x)`` - COMPLETED, and ``x`` is the result;
* ``Failed(message=..., data=exc)`` - FAILED, retried like a raised exception when the task has
  retries left; ``result()`` raises ``exc`` (or :class:`~.futures.TaskRunFailed` with the
  message when none is given);
* ``Crashed(...)``, ``Cancelled(...)`` - final as given, never retried.

A task that returns a state which is not final (for example ``State(StateType.RUNNING, ...)``)
fails with a :class:`TypeError` that says so: a run cannot stay running after its function
returned.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from .futures import State, TaskRunFailed
from .states import StateName, StateType, is_final

__all__ = ["Cancelled", "Completed", "Crashed", "Failed", "returned_state"]


# The constructors keep Prefect's capitalised names, so that task code moves over unchanged.


def Completed(*, data: Any = None, message: str = "", name: str = StateName.COMPLETED) -> State:
    """A COMPLETED state whose ``data`` becomes the run's result."""
    return _state(StateType.COMPLETED, name, message, data)


def Failed(*, message: str = "", data: Any = None, name: str = StateName.FAILED) -> State:
    """A FAILED state; ``data`` may be the exception that ``result()`` raises."""
    return _state(StateType.FAILED, name, message, data)


def Crashed(*, message: str = "", data: Any = None, name: str = StateName.CRASHED) -> State:
    """A CRASHED state (final, not retried)."""
    return _state(StateType.CRASHED, name, message, data)


def Cancelled(*, message: str = "", data: Any = None, name: str = StateName.CANCELLED) -> State:
    """A CANCELLED state (final, not retried)."""
    return _state(StateType.CANCELLED, name, message, data)


def _state(state_type: StateType, name: str, message: str, data: Any) -> State:
    if not isinstance(message, str) or not isinstance(name, str):
        raise TypeError("A state's message and name must be str.")
    if state_type == StateType.COMPLETED:
        return State(state_type, name, message, timezone.now(), data=data)
    exception = data if isinstance(data, BaseException) else None
    return State(state_type, name, message, timezone.now(), exception=exception)


def returned_state(value: Any) -> State | None:
    """The state a run ends in when its function returned ``value``: ``None`` for an ordinary
    value; for a returned :class:`~.futures.State`, that state with an exception for
    ``result()`` to raise when it is not COMPLETED. :class:`TypeError` for a state that is
    not final."""
    if not isinstance(value, State):
        return None
    if not is_final(value.type):
        raise TypeError(
            f"The task returned a {value.name} state; a task may return only a final state "
            f"(Completed, Failed, Crashed or Cancelled)."
        )
    if value.type == StateType.COMPLETED or value.exception is not None:
        return value
    message = value.message or f"The task returned a {value.name} state."
    failure = TaskRunFailed(message, state=value)
    return State(
        value.type, value.name, value.message or message, value.timestamp, exception=failure
    )
