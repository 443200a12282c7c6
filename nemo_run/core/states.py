"""The states of jobs and experiment tasks: one enum for the store, experiments and the CLI.

A job moves UNSUBMITTED -> SUBMITTED -> PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED,
as torchx's `AppState` does (same names, so records and torchx agree); UNKNOWN means the
backend's answer could not be mapped or the job could not be found yet, and is not final.
An experiment task adds two states of its own: WAITING (its job has not been launched yet,
e.g. its dependencies are still running) and SKIPPED (it will never run: a dependency did not
succeed, or its launcher exited before starting it).

Values are the names as strings, so a state compares equal to what the store holds.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class State(str, Enum):
    """A job's or a task's state; `is_terminal()` tells whether it can still change."""

    UNSUBMITTED = "UNSUBMITTED"
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    WAITING = "WAITING"  # tasks only: not launched yet
    SKIPPED = "SKIPPED"  # tasks only: will never run

    def __str__(self) -> str:
        return self.value

    def is_terminal(self) -> bool:
        """True once nothing can change it any more."""
        return self in TERMINAL

    def is_bad_end(self) -> bool:
        """Ended without succeeding (what makes the CLI exit 1)."""
        return self in (State.FAILED, State.CANCELLED, State.SKIPPED)

    @classmethod
    def parse(cls, value: Any) -> State:
        """A State from a name, a State, or a torchx AppState; ValueError naming the choices."""
        if isinstance(value, State):
            return value
        name = getattr(value, "name", value)
        try:
            return cls(str(name).upper())
        except ValueError:
            raise ValueError(
                f"unknown state {value!r}; states: {', '.join(s.value for s in cls)}"
            ) from None

    def app_state(self) -> Any:
        """The torchx AppState of a job state (task-only states have none)."""
        from torchx.specs import AppState  # noqa: PLC0415 - torchx (~0.2 s): the CLI needs none

        if self in (State.WAITING, State.SKIPPED):
            raise ValueError(f"{self.value} is an experiment task state, not a job state")
        return AppState[self.value]


JOB_STATES: tuple[State, ...] = (
    State.UNSUBMITTED,
    State.SUBMITTED,
    State.PENDING,
    State.RUNNING,
    State.SUCCEEDED,
    State.FAILED,
    State.CANCELLED,
    State.UNKNOWN,
)
FINAL_JOB_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
TERMINAL = frozenset({*FINAL_JOB_STATES, State.SKIPPED})
ACTIVE_JOB_STATES = frozenset(s for s in JOB_STATES if s not in FINAL_JOB_STATES)
