"""Antisymmetric and Hamiltonian layers: the property each keeps, and a sound bound."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from _support.lipschitz_probe import probe
from _support.round_trip import reload_and_compare

from stablekeras.layers import AntisymmetricDense, HamiltonianDense

TOL = 1e-4
DIM = 6


@pytest.fixture(scope="module")
def layers(fast_graphs):
    keras.utils.set_random_seed(0)
    # made here, after the seed: an unseeded initializer draws its seed from Python's
    # `random` when it is made, so one made at import would depend on collection order
    big = keras.initializers.RandomNormal(stddev=1.0)
    anti = AntisymmetricDense(step_size=0.5, gamma=0.3, activation="tanh", kernel_initializer=big)
    ham = HamiltonianDense(4, step_size=0.5, activation="tanh", kernel_initializer=big)
    for layer in (anti, ham):
        layer.build((None, DIM))
    ham.bias_1.assign(np.linspace(-1, 1, 4))
    ratios = probe([anti, ham], (DIM,))
    return dict(anti=(anti, ratios[0]), ham=(ham, ratios[1]))


def test_antisymmetric_matrix_is_exactly_skew_minus_gamma(layers):
    layer, _ = layers["anti"]
    m = layer.matrix().numpy()
    gamma32 = np.float32(layer.gamma)
    np.testing.assert_array_equal(m + m.T, -2 * gamma32 * np.eye(DIM, dtype=np.float32))
    eig = np.linalg.eigvals(m.astype(np.float64))
    np.testing.assert_allclose(eig.real, -layer.gamma, atol=1e-5)
    assert np.abs(eig.imag).max() > 0.5  # a real rotation part, not just -gamma I


def test_antisymmetric_bound_is_sound(layers):
    layer, ratio = layers["anti"]
    m = layer.matrix().numpy().astype(np.float64)
    expected = 1 + 0.5 * np.linalg.svd(m, compute_uv=False)[0]
    assert layer.lipschitz_bound() == pytest.approx(expected, rel=1e-6)
    assert ratio <= layer.lipschitz_bound() * (1 + TOL)


def test_hamiltonian_jacobian_has_determinant_one(layers):
    layer, _ = layers["ham"]
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = tf.constant(rng.normal(size=(1, DIM)), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        jac = tape.jacobian(y, x).numpy().reshape(DIM, DIM).astype(np.float64)
        assert np.abs(jac - np.eye(DIM)).max() > 0.1  # far from the identity
        assert np.linalg.det(jac) == pytest.approx(1.0, abs=1e-4)


def test_hamiltonian_step_is_exactly_invertible(layers):
    """The two shears undo in reverse order: information is not lost over depth."""
    layer, _ = layers["ham"]
    x = np.random.default_rng(2).normal(size=(5, DIM)).astype("float32")
    out = layer(x).numpy()
    h, s, m = layer.step_size, np.tanh, DIM // 2
    k1, k2 = layer.kernel_1.numpy(), layer.kernel_2.numpy()
    b1, b2 = layer.bias_1.numpy(), layer.bias_2.numpy()
    y, z = out[:, :m].astype(np.float64), out[:, m:].astype(np.float64)
    z = z + h * s(y @ k2 + b2) @ k2.T
    y = y - h * s(z @ k1 + b1) @ k1.T
    np.testing.assert_allclose(np.concatenate([y, z], axis=1), x, atol=1e-4)


def test_hamiltonian_bound_is_sound(layers):
    layer, ratio = layers["ham"]
    assert ratio <= layer.lipschitz_bound() * (1 + TOL)
    assert ratio > 1.0  # volume preserving, not non-expansive


def test_save_and_load_without_custom_objects(tmp_path, layers):
    inputs = keras.Input((DIM,))
    a = AntisymmetricDense(step_size=0.2, gamma=0.05, activation="relu", use_bias=False)
    h = HamiltonianDense(3, step_size=0.3, activation="softplus")
    model = keras.Model(inputs, [a(inputs), h(inputs)])
    x = np.random.default_rng(3).normal(size=(2, DIM)).astype("float32")
    _, clones = reload_and_compare(model, x, [a, h], tmp_path)
    for clone in clones:
        assert inspect.signature(clone.call).parameters["training"].default is None


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (AntisymmetricDense, dict(step_size=0), "step_size=0"),
        (AntisymmetricDense, dict(gamma=-0.1), "gamma=-0.1"),
        (AntisymmetricDense, dict(activation="sin"), "'sin', which is not monotone"),
        (HamiltonianDense, dict(units=0), "units=0"),
        (HamiltonianDense, dict(units=2, step_size=-0.1), "step_size=-0.1"),
        (HamiltonianDense, dict(units=2, activation="gelu"), "'gelu', which is not monotone"),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_hamiltonian_needs_an_even_dimension():
    with pytest.raises(ValueError, match="even input dimension"):
        HamiltonianDense(2).build((None, 5))
