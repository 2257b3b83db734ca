"""No module of stablekeras reaches into another module's underscore names.

A name that starts with an underscore is private to its module. A helper that
several modules need lives, under a public name, in a private module
(``stablekeras._checks.pair``): importing a private *module* is fine, importing
or reading a private *name* of another module is not. The test reads every
module's source with :mod:`ast`, without importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stablekeras"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    path = ROOT / Path(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _source_of(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    parts = parts[: len(parts) - node.level + int(is_package)]
    return ".".join(parts + ([node.module] if node.module else []))


def crossings(source: str, module: str, is_package: bool = False) -> list[str]:
    """The private names of other stablekeras modules that ``source`` uses."""
    tree = ast.parse(source)
    found = []
    modules = {}  # local name -> the stablekeras module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            origin = _source_of(node, module, is_package)
            if origin.split(".")[0] != "stablekeras":
                continue
            for alias in node.names:
                if _is_module(f"{origin}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{origin}.{alias.name}"
                elif _private(alias.name) and origin != module:
                    found.append(f"line {node.lineno}: from {origin} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "stablekeras":
                    local = alias.asname or alias.name.split(".")[0]
                    modules[local] = alias.name if alias.asname else "stablekeras"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        owner = modules.get(node.value.id)
        if owner is None or owner == module or not _private(node.attr):
            continue
        if not _is_module(f"{owner}.{node.attr}"):  # stablekeras._checks is a module
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_a_module_border(path):
    module = _module_name(path)
    assert crossings(path.read_text(), module, path.name == "__init__.py") == []


def test_the_walker_finds_both_kinds_of_crossing():
    source = (
        "from stablekeras.spectral import _axis_grid\n"
        "from stablekeras import spectral, _checks\n"
        "from ..spectral import _circular_grid\n"
        "from ._operators import DenseOperator\n"
        "spectral._explicit_dims\n"
        "_checks.pair\n"
        "def f():\n"
        "    from stablekeras.models import _pool_bound\n"
    )
    assert crossings(source, "stablekeras.layers.probe") == [
        "line 1: from stablekeras.spectral import _axis_grid",
        "line 3: from stablekeras.spectral import _circular_grid",
        "line 8: from stablekeras.models import _pool_bound",
        "line 5: spectral._explicit_dims",
    ]
    # a module's own private names, and private modules themselves, are fine
    assert crossings("from stablekeras import _checks\n_checks.pair\n", "stablekeras.x") == []
    assert crossings("from stablekeras.spectral import _pair\n", "stablekeras.spectral") == []
