"""Imports point down only: every module of the package, read as source, imports nothing from a
higher layer (imports inside functions and `TYPE_CHECKING` blocks count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "nemo_run"

# Top to bottom; a module belongs to the layer of its longest matching prefix (the package
# itself, the lazy facade `import nemo_run`, only by its exact name).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("package", ("nemo_run",)),
    ("help", ("nemo_run.help",)),  # 0.11.1's run.help: arguments and the cli's factories
    ("testing", ("nemo_run.testing",)),  # API emulators, started by the tests
    ("cli", ("nemo_run.cli",)),
    ("dashboard", ("nemo_run.dashboard",)),  # `nemorun dashboard`'s server, loaded by the cli
    ("run", ("nemo_run.run", "nemo_run.api")),  # experiment, driver, api, job; 0.11.1's api
    ("torchx_backend", ("nemo_run.run.torchx_backend",)),  # runner, poller, packaging
    ("schedulers", ("nemo_run.run.torchx_backend.schedulers",)),
    ("core", ("nemo_run.core",)),
    ("base", ("nemo_run.config", "nemo_run.exceptions")),
)
BACKEND_MODULES = frozenset(
    f"nemo_run.run.torchx_backend.schedulers.{name}"
    for name in ("local", "docker", "skypilot", "dgxcloud", "lepton", "slurm")
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index into LAYERS (0 is the top)."""
    if module == "nemo_run":
        return 0
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS[1:], start=1):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def described(module: str) -> str:
    return f"{module} ({LAYERS[layer_of(module)][0]})"


def imported_modules(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the package's own modules in `path`; `from a import b`
    names `a.b` when b is a module, else `a`."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "nemo_run"]


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_from_a_higher_layer():
    """One test for the whole package (not one per module: `-k "not docker"` would skip some)."""
    upward = [
        f"{described(module)} line {line}: {described(name)}"
        for module, path in MODULES.items()
        for line, name in imported_modules(module, path)
        if layer_of(name) < layer_of(module)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_backend_imports_another():
    others = [
        f"{module} line {line}: {name}"
        for module in sorted(BACKEND_MODULES)
        for line, name in imported_modules(module, MODULES[module])
        if any(name == b or name.startswith(b + ".") for b in BACKEND_MODULES - {module})
    ]
    assert not others, "a backend imports another:\n" + "\n".join(others)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check itself: a core module importing the CLI would be reported."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from nemo_run.cli import nemorun\n")
    names = [name for _, name in imported_modules("nemo_run.core.fake", fake)]
    assert names == ["nemo_run.cli.nemorun"] and layer_of(names[0]) < layer_of("nemo_run.core")
