"""The unconstrained residual baseline: expansive, with a sound (growing) bound."""

import inspect

import keras
import numpy as np
import pytest
from _support.lipschitz_probe import probe
from _support.operator_matrices import conv_matrix, spectral_norm
from _support.round_trip import reload_and_compare

from stablekeras.layers import ResidualConv2D, ResidualDense

TOL = 1e-4
FLAT, IMAGE = (4,), (5, 5, 2)
BIG = keras.initializers.RandomNormal(stddev=0.8)


@pytest.fixture(scope="module")
def layers(fast_graphs):
    keras.utils.set_random_seed(0)
    dense = ResidualDense(6, step_size=0.5, activation="tanh", kernel_initializer=BIG)
    conv = ResidualConv2D(3, 3, kernel_initializer=BIG)
    dense.build((None, *FLAT))
    conv.build((None, *IMAGE))
    return dict(
        dense=(dense, probe([dense], FLAT)[0]), conv=(conv, probe([conv], IMAGE, n_ascent=16)[0])
    )


def test_dense_bound_is_sound_and_the_layer_expands(layers):
    layer, ratio = layers["dense"]
    a, b = spectral_norm(layer.kernel_a.numpy()), spectral_norm(layer.kernel_b.numpy())
    assert layer.lipschitz_bound() == pytest.approx(1 + 0.5 * a * b, rel=1e-9)
    assert ratio <= layer.lipschitz_bound() * (1 + TOL)
    assert ratio > 1.05  # unlike the gradient step, nothing keeps it non-expansive


def test_conv_bound_is_sound_and_the_layer_expands(layers):
    layer, ratio = layers["conv"]
    a = spectral_norm(conv_matrix(layer.kernel_a.numpy(), IMAGE[:2]))
    b = spectral_norm(conv_matrix(layer.kernel_b.numpy(), IMAGE[:2]))
    assert layer.lipschitz_bound() == pytest.approx(1 + a * b, rel=1e-9)
    assert ratio <= layer.lipschitz_bound() * (1 + TOL)
    assert ratio > 1.05


def test_save_and_load_without_custom_objects(tmp_path):
    flat, image = keras.Input(FLAT), keras.Input(IMAGE)
    model = keras.Model(
        [flat, image],
        [ResidualDense(3, activation="elu")(flat), ResidualConv2D(2, (3, 1), step_size=0.3)(image)],
    )
    rng = np.random.default_rng(1)
    x = [
        rng.normal(size=(2, *FLAT)).astype("float32"),
        rng.normal(size=(2, *IMAGE)).astype("float32"),
    ]
    _, clones = reload_and_compare(model, x, model.layers[2:], tmp_path)
    for clone in clones:
        assert inspect.signature(clone.call).parameters["training"].default is None


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (ResidualDense, dict(units=0), "units=0"),
        (ResidualConv2D, dict(filters=0), "filters=0"),
        (ResidualDense, dict(units=3, step_size=0), "step_size=0"),
        (ResidualConv2D, dict(filters=3, step_size=-1), "step_size=-1"),
        (ResidualDense, dict(units=3, activation="swish"), "'swish', which is not monotone"),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
