import pytest

from django_tasks.states import (
    ALLOWED_MOVES,
    FINAL_TYPES,
    InvalidTransition,
    StateType,
    check_transition,
    default_name,
    is_final,
)


def test_background_lifecycle_is_allowed():
    current = None
    for target in ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]:
        current = check_transition(current, target)
    assert current == StateType.COMPLETED


def test_inline_lifecycle_starts_pending():
    assert check_transition(None, StateType.PENDING) == StateType.PENDING
    with pytest.raises(InvalidTransition, match="no state to RUNNING"):
        check_transition(None, StateType.RUNNING)


@pytest.mark.parametrize("final", sorted(FINAL_TYPES))
@pytest.mark.parametrize("target", list(StateType))
def test_final_states_never_move(final, target):
    assert is_final(final)
    if (final, target) == (StateType.CRASHED, StateType.SCHEDULED):
        assert check_transition(final, target) == target  # a crashed run retried by the rescue
        return
    with pytest.raises(InvalidTransition, match=f"from {final}"):
        check_transition(final, target)


def test_skipping_pending_is_refused():
    with pytest.raises(InvalidTransition, match="SCHEDULED to RUNNING"):
        check_transition(StateType.SCHEDULED, StateType.RUNNING)


def test_unknown_type_is_refused():
    with pytest.raises(InvalidTransition, match="Unknown state type"):
        check_transition(StateType.PENDING, "EXPLODED")


def test_every_type_has_a_row_and_a_name():
    assert set(ALLOWED_MOVES) == {None, *StateType}
    assert default_name(StateType.RUNNING) == "Running"
    assert not is_final(StateType.CANCELLING)
