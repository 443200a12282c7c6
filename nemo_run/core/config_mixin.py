"""`ConfigurableMixin`: what executors, launchers and packagers share with 0.11.1's namesake.

Each is a dataclass that can be turned into a `run.Config` (`to_config`), drawn as a graph
(`visualize`, `_repr_svg_` in notebooks, `save_config_img`) and compared with another
(`diff`). fiddle and graphviz are imported only when one of these is called, so building an
executor stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from nemo_run.core.atomic import atomic_write
from nemo_run.exceptions import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from typing_extensions import Self

    from nemo_run.core.configurable import Config


class ConfigurableMixin:
    """Config, graph and diff of a dataclass object (an executor, launcher or packager)."""

    def to_config(self) -> Config[Self]:
        """This object as a `run.Config`, the dataclasses inside it converted too, so that
        `fdl.build` returns an equal object. Fields given with `repr=False` (client
        secrets, tokens) are left out: a config is made to be shown and saved, and the
        object finds such values again where it reads them when none is given."""
        return to_config(self)

    def visualize(self, **kwargs: Any) -> Any:
        """This object's config as a `graphviz.Graph` (fiddle's rendering)."""
        return render_graph(self.to_config(), **kwargs)

    def diff(self, old: Self, trim: bool = True, **kwargs: Any) -> Any:
        """A `graphviz.Graph` of what changed from `old` to this object."""
        return render_graph_diff(old.to_config(), self.to_config(), trim=trim, **kwargs)

    def save_config_img(self, path_str: str) -> None:
        """Write the config graph to `path_str`, in the format its extension names (.png,
        .svg, ...); needs Graphviz's `dot` program."""
        save_graph(self.visualize(), path_str)

    def _repr_svg_(self) -> str:
        """The config graph in notebooks; the plain repr when it cannot be rendered."""
        return svg_or_repr(self)


def to_config(obj: Any) -> Config[Any]:
    """`obj` (a dataclass) as a `run.Config`; see `ConfigurableMixin.to_config`."""
    # imports fiddle (~0.3 s), which only a caller asking for a config needs
    from nemo_run.core.configurable import Config  # noqa: PLC0415

    return _as_config(obj, Config)


def _as_config(value: Any, config_cls: type[Config[Any]]) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        kwargs = {
            f.name: _as_config(getattr(value, f.name), config_cls)
            for f in fields(value)
            if f.init and f.repr
        }
        return config_cls(type(value), **kwargs)
    if isinstance(value, list):
        return [_as_config(v, config_cls) for v in value]
    if isinstance(value, tuple):
        return tuple(_as_config(v, config_cls) for v in value)
    if isinstance(value, dict):
        return {k: _as_config(v, config_cls) for k, v in value.items()}
    return value


def render_graph(cfg: Any, **kwargs: Any) -> Any:
    """`cfg` (a fiddle buildable) as a `graphviz.Graph`."""
    return _fiddle_graphviz().render(cfg, **kwargs)


def render_graph_diff(old: Any, new: Any, trim: bool = True, **kwargs: Any) -> Any:
    """A `graphviz.Graph` of what changed from buildable `old` to buildable `new`."""
    return _fiddle_graphviz().render_diff(old=old, new=new, trim=trim, **kwargs)


def save_graph(graph: Any, path_str: str) -> None:
    """Write `graph` to `path_str` in the format its extension names (.png, .svg, ...), whole
    or not at all; needs Graphviz's `dot` program."""
    fmt = os.path.splitext(path_str)[1].lstrip(".").lower() or "png"
    try:
        image = graph.pipe(format=fmt)
    except Exception as e:  # graphviz raises its own types: no dot, unknown format
        raise ConfigError(
            f"cannot render the config as {fmt!r} into {path_str}: {e}; install Graphviz "
            "(its `dot` program) or use a format it knows, e.g. .png or .svg"
        ) from e
    atomic_write(path_str, image, mode=0o644, fsync=False)


def svg_or_repr(obj: Any) -> str:
    """`obj.visualize()` as SVG for notebooks; its plain repr when it cannot be rendered."""
    try:
        svg: str = obj.visualize().pipe(format="svg").decode()
    except Exception:  # no graphviz package or no dot program: show the text instead
        return repr(obj)
    return svg


def _fiddle_graphviz() -> Any:
    """fiddle's graphviz rendering, imported only when a graph is asked for."""
    try:
        # fiddle and graphviz cost ~0.4 s to import: only these methods need them
        from fiddle import graphviz  # noqa: PLC0415
    except ImportError as e:
        raise MissingDependencyError(
            f"rendering a config needs the graphviz package ({e}); pip install graphviz"
        ) from e
    return graphviz
