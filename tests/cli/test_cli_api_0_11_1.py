"""0.11.1's `run.cli` names beyond the decorators (issue 15, the `cli` scope of the API report):
lazy re-exports, `Entrypoint` call/parse/typer helpers, `TypeParser`, the CLI errors' public
path, and `run.help`'s helpers."""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import nemo_run as run
from nemo_run.cli import api, cli_parser, errors, registry
from nemo_run.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]
# the module (the package attribute `run.help` is the callable)
run_help = importlib.import_module("nemo_run.help")


@dataclass
class Shape:
    width: int = 1


def area(shape: Shape, scale: float = 1.0, tags: list[str] | None = None) -> float:
    """Area of a shape."""
    return shape.width * scale


@run.cli.factory(target=Shape)
def wide_shape_0111() -> run.Config[Shape]:
    """A wide shape."""
    return run.Config(Shape, width=10)


# -- lazy re-exports ------------------------------------------------------------------------
def test_reexports_resolve_to_the_package_objects() -> None:
    from nemo_run.core.execution.local import LocalExecutor  # noqa: PLC0415 - what is compared

    assert api.Config is run.Config and api.Partial is run.Partial
    assert api.LocalExecutor is LocalExecutor
    assert api.Plugin is run.Plugin
    assert api.parse_cli_args is cli_parser.parse_cli_args
    assert api.EXECUTOR_CLASSES[1] is LocalExecutor
    assert api.PLUGIN_CLASSES == [run.Plugin, typing.List[run.Plugin]]  # noqa: UP006
    assert {"Config", "SlurmExecutor", "EXECUTOR_CLASSES"} <= set(dir(api))
    with pytest.raises(AttributeError):
        api.NoSuchName  # noqa: B018


def test_importing_the_cli_api_loads_no_fiddle_or_executors() -> None:
    code = (
        "import sys, nemo_run.cli.api, nemo_run.cli.errors; "
        "print(sorted(m for m in ('fiddle', 'torchx', 'nemo_run.core.execution.local', "
        "'rich', 'typer') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_constants_follow_0_11_1() -> None:
    assert api.INCLUDE_WORKSPACE_FILE is True
    assert api.NEMORUN_PRETTY_EXCEPTIONS is False
    assert api.BOX_STYLE == "" and api.TABLE_STYLES["padding"] == (0, 1)
    assert api.RECURSIVE_TYPES == (typing.Union, typing.Optional)
    assert api.logger.name == "nemo_run.cli.api"


# -- Entrypoint and RunContext --------------------------------------------------------------
def test_entrypoint_call_parse_partial_and_configure() -> None:
    entry = api.Entrypoint(area, "tests")
    assert entry(Shape(3), scale=2.0) == 6.0
    partial = entry.parse_partial(["shape=wide_shape_0111", "scale=0.5"], tags=["a"])
    assert isinstance(partial, run.Partial)
    assert partial.scale == 0.5 and partial.tags == ["a"] and partial.shape.width == 10
    # the command line wins over the defaults given in Python
    assert entry.parse_partial(["scale=3"], scale=2.0).scale == 3.0
    entry.configure(scale=4.0)
    assert entry._configured_fn.scale == 4.0


def test_entrypoint_cli_adds_a_typer_command_that_parses_overrides() -> None:
    import typer  # noqa: PLC0415 - only this test builds an app

    seen: list[float] = []

    def measure(scale: float = 1.0) -> None:
        seen.append(scale)

    app = typer.Typer()
    api.Entrypoint(measure, "tests", enable_executor=False).cli(app)
    api.add_global_options(app)
    result = CliRunner().invoke(app, ["measure", "scale=2.5", "--yes"])
    assert result.exit_code == 0, result.output
    assert seen == [2.5]


def test_cli_command_uses_the_run_context_class_and_defaults() -> None:
    import typer  # noqa: PLC0415 - only this test builds an app

    seen: list[int] = []

    def count(n: int = 0) -> None:
        seen.append(n)

    class Ctx(api.RunContext):
        pass

    app = typer.Typer()
    command = Ctx.cli_command(
        app, "count", count, cmd_defaults={"skip_confirmation": True}, command_kwargs={}
    )
    assert callable(command)
    result = CliRunner().invoke(app, ["n=7"])
    assert result.exit_code == 0, result.output
    assert seen == [7]
    bad = CliRunner().invoke(app, ["m=7"])
    assert bad.exit_code == 2


def test_run_context_executor_and_plugins_before_parse_args() -> None:
    ctx = api.RunContext(name="x")
    assert ctx.executor is None and ctx.plugins == []


def test_run_context_errors_are_config_errors() -> None:
    assert issubclass(api.InvalidOptionError, api.RunContextError)
    assert issubclass(api.MissingRequiredOptionError, api.RunContextError)
    assert issubclass(api.RunContextError, ConfigError)


def test_configure_logging_sets_torchx_level() -> None:
    torchx = logging.getLogger("torchx")
    before = torchx.level
    try:
        api.configure_logging(False)
        assert torchx.level == logging.WARNING
        api.configure_logging(True)
        assert torchx.level == logging.INFO
    finally:
        torchx.setLevel(before)


def test_extract_constituent_types() -> None:
    T = typing.TypeVar("T")
    assert api.extract_constituent_types(typing.Union[int, str]) == {int, str}  # noqa: UP007
    assert api.extract_constituent_types(int | None) == {int}
    assert api.extract_constituent_types(typing.List[int]) == {typing.List[int], list, int}  # noqa: UP006
    assert api.extract_constituent_types(typing.Annotated[list[int], "m"]) == {list[int], list, int}
    assert int in api.extract_constituent_types(typing.Callable[[str], int])
    assert api.extract_constituent_types(T) == {T}


def test_factory_registration_takes_0_11_1_arguments() -> None:
    reg = registry.FactoryRegistration("my.space", "thing")
    assert (reg.namespace, reg.name) == ("my.space", "thing")
    assert reg.resolve() == ("my.space", None)
    with pytest.raises(ConfigError, match="no function"):
        reg.fn()


# -- the parser -----------------------------------------------------------------------------
def test_cli_errors_have_0_11_1_public_path_and_are_caught_there() -> None:
    assert errors.CLIException is cli_parser.CLIException
    assert cli_parser.ListParseError.__module__ == "nemo_run.cli.cli_parser"
    assert issubclass(cli_parser.ListParseError, cli_parser.ParseError)
    with pytest.raises(cli_parser.CLIException):
        cli_parser.parse_cli_args(area, ["scale=abc"])
    copy = pickle.loads(pickle.dumps(cli_parser.ArgumentValueError("bad", "x", {})))
    assert type(copy) is cli_parser.ArgumentValueError


def test_type_parser_reads_like_an_override() -> None:
    tp = cli_parser.TypeParser()
    assert tp.parse("1", int) == 1
    assert tp.parse("[1, 2]", typing.List[int]) == [1, 2]  # noqa: UP006
    assert tp.parse("{'a': 1}", dict[str, int]) == {"a": 1}
    assert tp.parse("None", typing.Optional[int]) is None  # noqa: UP045
    assert tp.parse("x", typing.Literal["x", "y"]) == "x"
    assert tp.parse("/a", Path) == Path("/a")
    assert tp.parse("true", bool) is True
    assert tp.parse("3", typing.Any) == 3
    assert tp.parse("3", "int") == 3
    assert tp.infer_type("1.5") is float and tp.infer_type("[1]") is list
    with pytest.raises(cli_parser.ParseError):
        tp.parse("x", typing.Literal["a"])
    with pytest.raises(cli_parser.UnknownTypeError):
        tp.parse_unknown("x", object)
    assert cli_parser.TypeParser(strict_mode=False).parse_unknown("x", object) == "x"
    assert tp.parse_buildable("wide_shape_0111", run.Config[Shape]).width == 10


class Celsius(float):
    """A type only a registered parser reads (`30C`)."""


def thermo(t: Celsius) -> float:
    return t


def test_registered_parser_is_used_on_the_command_line() -> None:
    @cli_parser.type_parser.register_parser(Celsius)
    def parse_celsius(value: str, annotation: type) -> Celsius:
        return Celsius(float(value.rstrip("C")))

    try:
        assert cli_parser.type_parser.parse("21C", Celsius) == 21.0
        assert cli_parser.parse_cli_args(thermo, ["t=30C"]).t == 30.0
    finally:
        del cli_parser.type_parser.custom_parsers[Celsius]


def test_parse_attribute_walks_attributes_and_indexes() -> None:
    @dataclass
    class Holder:
        items: list[Shape]

    holder = Holder([Shape(1), Shape(2)])
    assert cli_parser.parse_attribute("items[1]", holder).width == 2
    with pytest.raises(cli_parser.ArgumentValueError, match="items"):
        cli_parser.parse_attribute("items[5]", holder)
    with pytest.raises(cli_parser.ArgumentValueError, match="nope"):
        cli_parser.parse_attribute("nope", holder)


def test_cli_exception_handler_wraps_unexpected_errors() -> None:
    @cli_parser.cli_exception_handler
    def broken() -> None:
        raise KeyError("k")

    @cli_parser.cli_exception_handler
    def refused() -> None:
        raise cli_parser.ArgumentParsingError("bad arg", "x", {})

    with pytest.raises(cli_parser.CLIException) as info:
        broken()
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(cli_parser.ArgumentParsingError):
        refused()
    assert cli_parser.TYPING_TO_BUILTIN[typing.List] is list  # noqa: UP006


# -- run.help helpers -----------------------------------------------------------------------
def test_help_helpers_print_factories_and_types() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    run_help.help_for_type(Shape, console, arg_name="shape")
    assert "Factory for shape:" in out.getvalue() and "wide_shape_0111" in out.getvalue()
    assert run_help.class_to_str(typing.Optional[int]) == "Optional[int]"  # noqa: UP045
    assert run_help.class_to_str(list[Shape]).endswith("test_cli_api_0_11_1.Shape]")
    assert run_help.class_to_str(typing.Callable[..., int]) == "Callable[..., int]"
    assert run_help.get_underlying_types(int | None) == {int, type(None)}


def test_help_for_callable_prints_arguments_on_the_shared_console() -> None:
    out = io.StringIO()
    before = run_help.CONSOLE.file
    run_help.CONSOLE.file = out
    try:
        run_help.help_for_callable(area, display_executors=False)
        run_help.help_for_callable(42)
    finally:
        run_help.CONSOLE.file = before
    text = out.getvalue()
    assert "scale" in text and "wide_shape_0111" in text and "not callable" in text
