"""SpectralNorm: the constrained operator's norm (explicit matrix, SVD) is at most max_value."""

import keras
import numpy as np
import pytest
from _support.operator_matrices import conv_matrix, spectral_norm

from stablekeras.constraints import SpectralNorm


@pytest.mark.parametrize("shape", [(3, 5), (8, 8), (16, 4)])
@pytest.mark.parametrize("max_value", [0.5, 1.0, 3.0])
def test_dense_kernel_norm_is_at_most_max_value(shape, max_value):
    kernel = (5.0 * np.random.default_rng(0).normal(size=shape)).astype("float32")
    assert spectral_norm(kernel) > max_value  # the constraint has work to do
    out = np.asarray(SpectralNorm(max_value)(kernel))
    norm = spectral_norm(out)
    assert norm <= max_value
    assert norm >= 0.95 * max_value  # a rescaling, not a collapse
    np.testing.assert_allclose(
        out / np.linalg.norm(out), kernel / np.linalg.norm(kernel), atol=1e-6
    )


@pytest.mark.parametrize(
    "k, hw, strides, padding, channels",
    [
        (1, (6, 6), 1, "same", (3, 2)),
        (1, (6, 6), 2, "same", (2, 2)),
        (3, (6, 6), 1, "same", (2, 3)),
        (3, (7, 7), 2, "same", (2, 2)),
        (4, (7, 6), 2, "valid", (1, 3)),
        (5, (6, 6), 1, "valid", (2, 1)),
        (2, (7, 7), 1, "valid", (3, 3)),
    ],
)
def test_conv_kernel_norm_is_at_most_max_value(k, hw, strides, padding, channels):
    kernel = (3.0 * np.random.default_rng(1).normal(size=(k, k, *channels))).astype("float32")
    assert spectral_norm(conv_matrix(kernel, hw, strides, padding)) > 1.0
    constraint = SpectralNorm(1.0, input_shape=hw, strides=strides, padding=padding)
    norm = spectral_norm(conv_matrix(np.asarray(constraint(kernel)), hw, strides, padding))
    assert 0.8 <= norm <= 1.0


def test_kernel_inside_the_ball_is_left_alone():
    kernel = np.diag([0.5, 0.25]).astype("float32")
    np.testing.assert_array_equal(np.asarray(SpectralNorm(1.0)(kernel)), kernel)


def test_keras_applies_it_after_each_optimizer_step():
    layer = keras.layers.Dense(4, kernel_constraint=SpectralNorm(1.0), use_bias=False)
    model = keras.Sequential([keras.Input((4,)), layer])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.random.default_rng(2).normal(size=(32, 4)).astype("float32")
    model.fit(x, 5 * x, batch_size=8, epochs=1, verbose=0)
    assert 0.9 <= spectral_norm(layer.kernel.numpy()) <= 1.0


def test_serialization_round_trip():
    c = SpectralNorm(2.5, input_shape=(7, 6), strides=2, padding="valid", iterations=8)
    config = c.get_config()
    assert config == {
        "max_value": 2.5,
        "input_shape": [7, 6],
        "strides": [2, 2],
        "padding": "valid",
        "iterations": 8,
        "compute_dtype": None,
    }
    assert SpectralNorm.from_config(config).get_config() == config
    half = SpectralNorm(1.0, compute_dtype="float16").get_config()
    assert SpectralNorm.from_config(half).get_config() == half
    restored = keras.constraints.deserialize(keras.constraints.serialize(c))
    assert isinstance(restored, SpectralNorm)
    assert restored.get_config() == config
    # through JSON, as in a saved model
    layer = keras.layers.Dense(3, kernel_constraint=c)
    clone = keras.layers.Dense.from_config(layer.get_config())
    assert clone.kernel_constraint.get_config() == config


def test_conv_kernel_larger_than_1x1_needs_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        SpectralNorm(1.0)(np.ones((3, 3, 2, 2), "float32"))
    # a 1x1 stride-1 convolution is a dense map on the channels: no grid needed
    out = np.asarray(SpectralNorm(1.0)(3 * np.eye(2, dtype="float32").reshape(1, 1, 2, 2)))
    assert spectral_norm(out.reshape(2, 2)) <= 1.0


@pytest.mark.parametrize("bad", [0, -1.5, float("nan")])
def test_bad_max_value_is_named(bad):
    with pytest.raises(ValueError, match=f"max_value={bad}"):
        SpectralNorm(bad)


def test_bad_kernel_rank_and_padding():
    with pytest.raises(ValueError, match="2-D dense or 4-D"):
        SpectralNorm(1.0)(np.ones((3,), "float32"))
    with pytest.raises(ValueError, match="padding='full'"):
        SpectralNorm(1.0, input_shape=(4, 4), padding="full")
