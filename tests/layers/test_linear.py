"""SpectralDense and SpectralConv2D: the lift and the projection of a certified network."""

import keras
import numpy as np
import pytest
from _support.lipschitz_probe import probe
from _support.operator_matrices import conv_matrix, spectral_norm
from _support.round_trip import reload_and_compare

from stablekeras.layers import SpectralConv2D, SpectralDense

TOL = 1e-4
FLAT, IMAGE = (5,), (6, 6, 2)


@pytest.fixture(scope="module")
def trained(fast_graphs):
    """Layers with max_norm=1 trained (model.fit) towards y = 3 x, which needs norm 3."""
    keras.utils.set_random_seed(0)
    flat, image = keras.Input(FLAT), keras.Input(IMAGE)
    dense = SpectralDense(5, max_norm=1.0)
    conv3 = SpectralConv2D(2, 3, max_norm=1.0)
    conv1 = SpectralConv2D(2, 1, max_norm=1.0, activation="tanh")
    model = keras.Model([flat, image], [dense(flat), conv3(image), conv1(image)])
    model.compile(keras.optimizers.Adam(0.1), loss=["mse"] * 3)
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = [
        rng.normal(size=(480, *FLAT)).astype("float32"),
        rng.normal(size=(480, *IMAGE)).astype("float32"),
    ]
    model.fit(x, [3 * x[0], 3 * x[1], 3 * x[1]], batch_size=16, epochs=1, verbose=0)
    ratios = {id(dense): probe([dense], FLAT)[0]}
    ratios.update(zip((id(conv3), id(conv1)), probe([conv3, conv1], IMAGE, n_ascent=16)))
    return dict(dense=dense, conv3=conv3, conv1=conv1, ratios=ratios)


def test_dense_norm_stays_at_most_max_norm(trained):
    layer = trained["dense"]
    norm = spectral_norm(layer.kernel.numpy())
    assert 0.95 <= norm <= 1.0  # training pushed against the constraint
    assert layer.lipschitz_bound() == pytest.approx(norm, rel=1e-9)
    assert trained["ratios"][id(layer)] <= layer.lipschitz_bound() * (1 + TOL)


@pytest.mark.parametrize("name", ["conv3", "conv1"])
def test_conv_operator_norm_stays_at_most_max_norm(trained, name):
    layer = trained[name]
    norm = spectral_norm(conv_matrix(layer.kernel.numpy(), IMAGE[:2], layer.strides, layer.padding))
    assert 0.9 <= norm <= 1.0
    assert layer.operator_norm() == pytest.approx(norm, rel=1e-9)
    assert trained["ratios"][id(layer)] <= layer.lipschitz_bound() * (1 + TOL)
    assert layer.lipschitz_bound() <= 1.0


def test_free_kernel_bound_is_its_norm_times_the_slope():
    dense = SpectralDense(
        4,
        max_norm=None,
        activation="sigmoid",
        kernel_initializer=keras.initializers.RandomNormal(stddev=2.0),
    )
    conv = SpectralConv2D(
        3,
        3,
        strides=2,
        padding="valid",
        max_norm=None,
        kernel_initializer=keras.initializers.RandomNormal(stddev=2.0),
    )
    dense.build((None, 6))
    conv.build((None, 7, 7, 2))
    norm = spectral_norm(dense.kernel.numpy())
    assert norm > 2.0  # the kernel was left free
    assert dense.lipschitz_bound() == pytest.approx(0.25 * norm, rel=1e-9)
    conv_norm = spectral_norm(conv_matrix(conv.kernel.numpy(), (7, 7), 2, "valid"))
    assert conv.lipschitz_bound() == pytest.approx(conv_norm, rel=1e-9)
    assert dense.compute_output_shape((None, 6)) == (None, 4)
    assert conv.compute_output_shape((None, 7, 7, 2)) == (None, 3, 3, 3)


def test_save_and_load_without_custom_objects(tmp_path):
    flat, image = keras.Input(FLAT), keras.Input(IMAGE)
    outputs = [
        SpectralDense(3, max_norm=2.0, activation="leaky_relu")(flat),
        SpectralConv2D(4, (2, 3), strides=2, padding="valid", max_norm=None, use_bias=False)(image),
    ]
    model = keras.Model([flat, image], outputs)
    rng = np.random.default_rng(1)
    x = [
        rng.normal(size=(2, *FLAT)).astype("float32"),
        rng.normal(size=(2, *IMAGE)).astype("float32"),
    ]
    reload_and_compare(model, x, model.layers[2:], tmp_path)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (SpectralDense, dict(units=0), "units=0"),
        (SpectralConv2D, dict(filters=-2), "filters=-2"),
        (SpectralDense, dict(units=3, max_norm=0), "max_norm=0"),
        (SpectralConv2D, dict(filters=3, max_norm=-1.0), "max_norm=-1.0"),
        (SpectralDense, dict(units=3, activation="gelu"), "'gelu', which is not monotone"),
        (SpectralConv2D, dict(filters=3, strides=0), "strides"),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
