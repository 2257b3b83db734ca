"""The examples in the docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "stablekeras.activations",
    "stablekeras.integrators",
    "stablekeras.spectral",
    "stablekeras.constraints",
    "stablekeras.layers._operators",
    "stablekeras.layers.nonexpansive",
    "stablekeras.layers.lipschitz",
    "stablekeras.layers.residual",
    "stablekeras.layers.dynamics",
    "stablekeras.models",
    "stablekeras.losses",
    "stablekeras.demo",
    "stablekeras.estimators",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_the_examples_exist():
    finder = doctest.DocTestFinder()
    examples = sum(
        len(test.examples)
        for name in MODULES
        for test in finder.find(importlib.import_module(name))
    )
    assert examples >= 20
