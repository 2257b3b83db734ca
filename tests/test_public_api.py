"""Every public name is documented: it has a docstring and the README or a tutorial uses it.

The public names are ``stablekeras.__all__`` and the ``__all__`` of each submodule.
Modules, classes and functions need a docstring of their own; a constant needs a
``#:`` comment on the lines just above its assignment (the Sphinx convention the
package follows), or, for an instance of one of the package's classes, that class's
docstring. A name is mentioned when it appears as a whole word in README.md or in the
source of a cell of a notebook in tutorials/.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBMODULES = [
    "activations",
    "integrators",
    "spectral",
    "constraints",
    "layers",
    "models",
    "bounds",
    "losses",
    "estimators",
    "robustness",
    "datasets",
    "export",
    "demo",
    "cli",
]
MODULES = ["stablekeras"] + [f"stablekeras.{name}" for name in SUBMODULES]


def public_names() -> list[tuple[str, str]]:
    """``(module, name)`` for every name in the ``__all__`` of the package and its submodules."""
    pairs = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        pairs += [(module_name, name) for name in module.__all__]
    return pairs


def _comment_above(module: types.ModuleType, name: str) -> str:
    """The ``#:`` comment lines right above ``name = ...`` in the module's source."""
    lines = inspect.getsource(module).splitlines()
    pattern = re.compile(rf"^{re.escape(name)}\s*(:[^=]+)?=")
    for i, line in enumerate(lines):
        if pattern.match(line):
            comment = []
            for above in reversed(lines[:i]):
                if not above.startswith("#:"):
                    break
                comment.append(above[2:].strip())
            return " ".join(reversed(comment))
    return ""


def docstring(module_name: str, name: str) -> str:
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    if isinstance(obj, types.ModuleType) or inspect.isclass(obj) or inspect.isroutine(obj):
        return (obj.__doc__ or "").strip()
    comment = _comment_above(module, name)
    if comment:
        return comment
    if type(obj).__module__.startswith("stablekeras"):
        return (type(obj).__doc__ or "").strip()
    return ""


def documentation_text() -> str:
    """README.md and the source of every tutorial cell (not the outputs)."""
    parts = []
    readme = ROOT / "README.md"
    if readme.exists():
        parts.append(readme.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "tutorials").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        parts += [cell.source for cell in nb.cells]
    return "\n".join(parts)


def unmentioned(text: str) -> list[str]:
    names = sorted({name for _, name in public_names()})
    return [name for name in names if not re.search(rf"\b{re.escape(name)}\b", text)]


@pytest.mark.parametrize("module_name, name", public_names(), ids=lambda v: v)
def test_public_name_has_a_docstring(module_name, name):
    assert docstring(module_name, name), f"{module_name}.{name} has no docstring"


def test_public_names_resolve():
    for module_name, name in public_names():
        assert hasattr(importlib.import_module(module_name), name), f"{module_name}.{name}"


def test_every_public_name_appears_in_the_readme_or_a_tutorial():
    missing = ", ".join(unmentioned(documentation_text()))
    assert not missing, f"public names used neither in README.md nor in a tutorial: {missing}"
