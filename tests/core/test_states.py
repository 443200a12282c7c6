"""One state enum for jobs and tasks, equal to the names the store holds and torchx uses."""

from __future__ import annotations

import pytest
from torchx.specs import AppState

from nemo_run.core.states import FINAL_JOB_STATES, JOB_STATES, State


def test_job_states_are_torchx_app_states_by_name():
    assert {s.value for s in JOB_STATES} == {s.name for s in AppState}
    for state in JOB_STATES:
        assert state.app_state() == AppState[state.value]
        assert State.parse(AppState[state.value]) is state
        assert state.is_terminal() == (state in FINAL_JOB_STATES)


def test_task_states_and_comparisons_with_stored_strings():
    assert State.SKIPPED.is_terminal() and not State.WAITING.is_terminal()
    assert State.FAILED == "FAILED" and "CANCELLED" in FINAL_JOB_STATES
    assert State.parse("succeeded") is State.SUCCEEDED
    assert [
        s.is_bad_end() for s in (State.FAILED, State.CANCELLED, State.SKIPPED, State.SUCCEEDED)
    ] == [True, True, True, False]
    with pytest.raises(ValueError, match="unknown state 'RUNNNING'"):
        State.parse("RUNNNING")
    with pytest.raises(ValueError, match="task state"):
        State.WAITING.app_state()
