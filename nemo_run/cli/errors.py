"""Errors of `run.cli`'s command-line parsing (0.11.1's names and signatures, from `cli_parser`).

They live in a module of their own, without fiddle, so `main` can tell a bad override (exit 2,
one message, no traceback) from a failure of the task whatever has been imported. Each is a
`ConfigError`: bad input, reported before anything starts. Their public home is 0.11.1's,
`nemo_run.cli.cli_parser` (which re-exports these very classes): `__module__` says so, so
tracebacks, pickles and `except nemo_run.cli.cli_parser.CLIException` name the path users know.
"""

from __future__ import annotations

from typing import Any

from nemo_run.exceptions import ConfigError


class CLIException(ConfigError):
    """A command line that cannot be turned into a run; the message says what to type instead."""

    def __init__(self, message: str, arg: str = "", context: dict[str, Any] | None = None):
        super().__init__(message)
        self.arg = arg
        self.context = dict(context or {})

    def user_friendly_message(self) -> str:
        """The message as the command prints it (0.11.1's name)."""
        return str(self)


class ArgumentParsingError(CLIException):
    """An argument that is not `key=value`, `key+=value`, ..., or an unknown flag."""


class TypeParsingError(CLIException):
    """A value that does not fit its parameter's type."""


class OperationError(CLIException):
    """`+=`, `*=`, ... on a value it cannot apply to."""


class ArgumentValueError(CLIException):
    """A key that names no parameter, or a value that cannot be set there."""


class UndefinedVariableError(CLIException):
    """An operation on a parameter that has no value yet."""


class ParseError(CLIException):
    """`value` could not be read as `expected_type`, for `reason`."""

    def __init__(self, value: str, expected_type: Any, reason: str):
        super().__init__(reason, value, {"expected_type": expected_type})
        self.value = value
        self.expected_type = expected_type
        self.reason = reason


class LiteralParseError(ParseError):
    """A value that is none of a `Literal`'s choices."""


class CollectionParseError(ParseError):
    """A list, tuple, set or dict that cannot be read."""


class ListParseError(CollectionParseError):
    """A list that cannot be read."""


class DictParseError(CollectionParseError):
    """A dict that cannot be read."""


class UnknownTypeError(ParseError):
    """An annotation the parser has no way to read values for."""


_PUBLIC_MODULE = "nemo_run.cli.cli_parser"
for _cls in (
    CLIException,
    ArgumentParsingError,
    TypeParsingError,
    OperationError,
    ArgumentValueError,
    UndefinedVariableError,
    ParseError,
    LiteralParseError,
    CollectionParseError,
    ListParseError,
    DictParseError,
    UnknownTypeError,
):
    _cls.__module__ = _PUBLIC_MODULE
