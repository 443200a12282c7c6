"""0.11.1's `nemo_run.run.utils`: copying this process's output into a file."""

from __future__ import annotations

import contextlib
import sys
from typing import IO, Any

from nemo_run.core.redact import redact_text


class _Tee:
    """A text stream writing to the original stream and to a file (the file's copy masked)."""

    def __init__(self, original: IO[str], copy: IO[str]) -> None:
        self._original = original
        self._copy = copy

    def write(self, text: str) -> int:
        self._copy.write(redact_text(text))
        return self._original.write(text)

    def flush(self) -> None:
        self._original.flush()
        self._copy.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding... of the original
        return getattr(self._original, name)


class TeeStdoutStderr(contextlib.ExitStack):
    """`with TeeStdoutStderr(path):` everything printed to stdout and stderr also goes to
    `path` (appended), as in 0.11.1; secret-looking values are masked in the file."""

    def __init__(self, filename: str) -> None:
        super().__init__()
        self.filename = filename

    def __enter__(self) -> TeeStdoutStderr:
        super().__enter__()
        copy = self.enter_context(open(self.filename, "a", encoding="utf-8"))  # noqa: SIM115
        self.enter_context(contextlib.redirect_stdout(_Tee(sys.stdout, copy)))
        self.enter_context(contextlib.redirect_stderr(_Tee(sys.stderr, copy)))
        return self
