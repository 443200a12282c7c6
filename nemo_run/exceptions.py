"""One error hierarchy for nemo_run, so callers can catch by kind rather than by backend."""

from __future__ import annotations

from typing import Any


class NemoRunError(Exception):
    """Base of every error nemo_run raises on purpose."""


class ConfigError(NemoRunError, ValueError):
    """User input is invalid; raised before any process, container or remote call starts."""


class BackendError(NemoRunError):
    """A backend (engine, API server, cloud service) refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class StoreError(NemoRunError):
    """The job store cannot be read or written; the message names the file and the fix."""


class DiskError(NemoRunError, OSError):
    """A file under the home folder or a job folder cannot be written: no space, a read-only
    filesystem or no permission; the message says which, and the fix."""


class MissingDependencyError(NemoRunError, ImportError):
    """An optional backend SDK is not installed; the message says which extra to install."""


class UnknownJobError(NemoRunError, KeyError):
    """An app id or handle that no store or backend knows."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownExperimentError(NemoRunError, KeyError):
    """An experiment id or title, or a task id within one, that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class JobFailedError(NemoRunError):
    """A job the caller waited for ended in a state other than SUCCEEDED."""

    def __init__(self, handle: str, state: str, message: str = "") -> None:
        detail = f": {message}" if message else ""
        super().__init__(f"job {handle} ended {state}{detail}")
        self.handle = handle
        self.state = state


class LogsGoneError(NemoRunError):
    """A job's logs lived in its folder, and that folder no longer exists (deleted by hand)."""


class SetValueError(ConfigError):
    """`nemo_run.config.set_value` got a path that does not parse, leads nowhere, or names a
    field that cannot take the value (0.11.1's `SetValueError`, a `ValueError`)."""


class BindArgumentsError(ConfigError, TypeError):
    """`run.Config`/`run.Partial` got arguments its callable does not accept; a `TypeError`
    too, as in 0.11.1."""


class TunnelConnectionError(BackendError):
    """A tunnel could not reach its host (refused, timed out, no key accepted, unknown host
    key, connection lost); the message names host and user and the fix. Transient for
    callers: it says nothing about the command or the job."""


class TunnelCommandError(BackendError):
    """A command run through a tunnel exited non-zero (0.11.1's `invoke` `UnexpectedExit`);
    `result` holds its output and exit code, also in `status`."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message, status=result.exited, body=result.stderr)
        self.result = result
