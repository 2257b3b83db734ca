"""Every docstring example of the package runs in ``make test``.

``make test`` runs ``pytest --doctest-modules tests stablekeras``: pytest executes
the examples of every module of the package. These tests keep that true: the target
still asks for the doctests, every module imports (a module that fails to import
would drop its examples), and the examples are still there.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import stablekeras

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(
    info.name for info in pkgutil.walk_packages(stablekeras.__path__, prefix="stablekeras.")
)


def _examples(name):
    finder = doctest.DocTestFinder()
    return sum(len(test.examples) for test in finder.find(importlib.import_module(name)))


def test_make_test_runs_the_doctests_of_the_package():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no `test` target in the Makefile"
    assert re.search(r"--doctest-modules\b.*\bstablekeras\b", recipe.group(1)), recipe.group(1)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


def test_the_examples_exist():
    counts = {name: _examples(name) for name in MODULES}
    assert sum(counts.values()) >= 150, counts
    # the public modules with functions or classes each show at least one example
    for name in (
        "stablekeras.estimators.classifier",
        "stablekeras.estimators.regressor",
        "stablekeras.export",
        "stablekeras.robustness",
        "stablekeras.robustness.attacks",
        "stablekeras.robustness.certify",
        "stablekeras.robustness.curves",
        "stablekeras.models",
        "stablekeras.bounds",
        "stablekeras.layers.linear",
        "stablekeras.layers.gradient_steps",
        "stablekeras.datasets",
    ):
        assert counts[name] > 0, name
