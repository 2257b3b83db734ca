"""Slope-restricted activations: monotone, slope at most L_s, and nothing else accepted."""

import keras
import numpy as np
import pytest

from stablekeras import activations

NAMES = ["relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus"]
SLOPES = {"relu": 1.0, "leaky_relu": 1.0, "elu": 1.0, "tanh": 1.0, "sigmoid": 0.25, "softplus": 1.0}


def _finite_difference_slopes(act, lo=-8.0, hi=8.0, n=4001):
    x = np.linspace(lo, hi, n, dtype=np.float64)
    y = np.asarray(act(x.astype("float32")), dtype=np.float64)
    return np.diff(y) / np.diff(x)


@pytest.mark.parametrize("name", NAMES)
def test_monotone_and_slope_restricted(name):
    act = activations.get(name)
    assert act.slope == SLOPES[name]
    slopes = _finite_difference_slopes(act)
    assert slopes.min() >= -1e-4
    assert slopes.max() <= act.slope * (1 + 1e-3)
    assert slopes.max() >= 0.9 * act.slope  # the bound is the real slope, not a loose one


@pytest.mark.parametrize(
    "cls, alpha",
    [
        (activations.LeakyReLU, 0.1),
        (activations.LeakyReLU, 2.0),
        (activations.ELU, 0.5),
        (activations.ELU, 3.0),
    ],
)
def test_parametrised_slope_bounds(cls, alpha):
    act = cls(alpha=alpha)
    assert act.slope == max(1.0, alpha)
    slopes = _finite_difference_slopes(act)
    assert slopes.min() >= -1e-4
    assert slopes.max() <= act.slope * (1 + 1e-3)
    assert slopes.max() >= 0.9 * act.slope


def test_lookup_forms():
    assert activations.get("ReLU") == activations.ReLU()
    assert activations.get("leakyrelu") == activations.LeakyReLU()
    assert activations.get("logistic") == activations.Sigmoid()
    assert activations.get(keras.activations.relu) == activations.ReLU()
    assert activations.get(keras.activations.tanh) == activations.Tanh()
    act = activations.LeakyReLU(0.3)
    assert activations.get(act) is act
    assert activations.get({"name": "leaky_relu", "config": {"alpha": 0.3}}) == act
    assert activations.get({"name": "elu"}) == activations.ELU()


@pytest.mark.parametrize(
    "act",
    [activations.ReLU(), activations.LeakyReLU(0.3), activations.ELU(2.0), activations.Sigmoid()],
)
def test_serialize_round_trip(act):
    assert activations.get(activations.serialize(act)) == act
    assert hash(activations.get(activations.serialize(act))) == hash(act)
    assert type(act).__name__ in repr(act)


@pytest.mark.parametrize(
    "identifier, name",
    [
        ("swish", "swish"),
        ("gelu", "gelu"),
        ("sin", "sin"),
        ("silu", "silu"),
        ("mish", "mish"),
        (keras.activations.swish, "silu"),
        (keras.activations.gelu, "gelu"),
    ],
)
def test_non_monotone_activations_are_rejected_with_the_reason(identifier, name):
    with pytest.raises(ValueError, match=f"activation='{name}', which is not monotone") as info:
        activations.get(identifier)
    message = str(info.value)
    assert "convexity" in message
    assert activations.NON_MONOTONE[name] in message


@pytest.mark.parametrize("cls", [activations.LeakyReLU, activations.ELU])
def test_negative_alpha_is_rejected(cls):
    with pytest.raises(ValueError, match="alpha=-0.1"):
        cls(alpha=-0.1)


@pytest.mark.parametrize("identifier", ["softsign_typo", 3, lambda x: x])
def test_unknown_activations_are_rejected(identifier):
    with pytest.raises(ValueError, match="Expected one of"):
        activations.get(identifier)
