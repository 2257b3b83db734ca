"""Operator norms: exact adjoints, power iteration, and sound, tight upper bounds.

Every number is checked against the SVD of the operator's explicit matrix, built by
applying the operator to the identity basis of a small input (float64).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from _support.operator_matrices import conv_matrix, spectral_norm

from stablekeras import spectral
from stablekeras.layers import NonExpansiveDense, SpectralDense

# Every convolution configuration: strides, paddings, kernel sizes, and inputs
# (spatial shape, c_in, c_out) with even, odd and mixed sizes and several channel counts.
STRIDES = (1, 2)
PADDINGS = ("same", "valid")
KERNEL_SIZES = (1, 2, 3, 4, 5)
INPUTS = (((6, 6), 1, 1), ((7, 7), 2, 3), ((6, 9), 3, 2))
CONV_CONFIGS = list(itertools.product(STRIDES, PADDINGS, KERNEL_SIZES, INPUTS))
DENSE_SHAPES = ((1, 1), (3, 5), (8, 4), (16, 16))


def _conv_id(config):
    s, p, k, (hw, ci, co) = config
    return f"s{s}-{p}-k{k}-{hw[0]}x{hw[1]}-{ci}to{co}"


def _random_kernel(rng, k, ci, co):
    return rng.normal(size=(k, k, ci, co))


def _inner(a, b) -> float:
    """``<a, b>`` accumulated in float64."""
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def _assert_adjoint(ax, z, x, atz):
    lhs, rhs = _inner(ax, z), _inner(x, atz)
    scale = np.linalg.norm(np.asarray(ax, np.float64)) * np.linalg.norm(np.asarray(z, np.float64))
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), scale * 1e-3, 1e-30), (lhs, rhs)


# --- adjoints ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", DENSE_SHAPES)
@pytest.mark.parametrize("layer_class", [NonExpansiveDense, SpectralDense])
def test_dense_operator_is_w_and_its_adjoint_w_transpose(shape, layer_class):
    """The layers' dense ``A`` and ``A^T`` (``_apply``, ``_adjoint``): the matrices ``W`` and
    ``W^T`` of the kernel (Keras stores ``W^T``), exact adjoints of each other."""
    d, units = shape
    layer = layer_class(units, **({"max_norm": None} if layer_class is SpectralDense else {}))
    layer.build((None, d))
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=shape).astype(np.float32)
    layer.kernel.assign(kernel)
    forward = np.asarray(layer._apply(tf.eye(d))).T  # column j = A e_j
    backward = np.asarray(layer._adjoint(tf.eye(units))).T
    np.testing.assert_array_equal(forward, kernel.T)  # one product per entry: exact
    np.testing.assert_array_equal(backward, kernel)
    x = tf.constant(rng.normal(size=(3, d)), tf.float32)
    z = tf.constant(rng.normal(size=(3, units)), tf.float32)
    _assert_adjoint(layer._apply(x), z, x, layer._adjoint(z))


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=_conv_id)
def test_conv2d_adjoint(config):
    s, p, k, (hw, ci, co) = config
    rng = np.random.default_rng(2)
    kernel = tf.constant(_random_kernel(rng, k, ci, co), tf.float32)
    x = tf.constant(rng.normal(size=(2, *hw, ci)), tf.float32)
    ax = spectral.conv2d(x, kernel, s, p)
    assert tuple(ax.shape[1:3]) == spectral.conv2d_output_shape(hw, k, s, p)
    z = tf.constant(rng.normal(size=ax.shape), tf.float32)
    atz = spectral.conv2d_adjoint(z, kernel, x.shape, s, p)
    assert atz.shape == x.shape
    _assert_adjoint(ax, z, x, atz)


@pytest.mark.parametrize("config", CONV_CONFIGS[::7], ids=_conv_id)
def test_conv2d_adjoint_is_the_transposed_matrix(config):
    """Stronger than the inner product on random vectors: A^T is exactly M^T."""
    s, p, k, (hw, ci, co) = config
    kernel = _random_kernel(np.random.default_rng(3), k, ci, co)
    m = conv_matrix(kernel, hw, s, p)
    oh, ow = spectral.conv2d_output_shape(hw, k, s, p)
    n_out = oh * ow * co
    basis = tf.constant(np.eye(n_out).reshape(n_out, oh, ow, co))
    rows = spectral.conv2d_adjoint(basis, tf.constant(kernel), (*hw, ci), s, p)
    np.testing.assert_allclose(np.reshape(rows, (n_out, -1)), m, atol=1e-12)


# --- power iteration ------------------------------------------------------------


POWER_CONV = [
    (1, "same", 3, (6, 6), 2, 3),
    (2, "same", 4, (7, 7), 2, 2),
    (2, "valid", 3, (7, 6), 3, 2),
]


@pytest.mark.parametrize("shape", DENSE_SHAPES[1:])
def test_dense_power_iteration_matches_svd_and_warm_start(shape):
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=shape).astype("float32")
    true = spectral_norm(kernel)
    sigma, u = spectral.dense_power_iteration(
        kernel, tf.constant(rng.normal(size=shape[0]), tf.float32), 300
    )
    assert float(sigma) == pytest.approx(true, rel=1e-3)
    assert float(sigma) <= true * (1 + 1e-5)  # converges from below
    # Warm start: one more iteration from the previous iterate stays converged.
    sigma1, u1 = spectral.dense_power_iteration(kernel, u, 1)
    assert float(sigma1) == pytest.approx(true, rel=1e-3)
    assert abs(_inner(u, u1)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("config", POWER_CONV, ids=str)
def test_conv2d_power_iteration_matches_svd_and_warm_start(config):
    s, p, k, hw, ci, co = config
    rng = np.random.default_rng(5)
    kernel = _random_kernel(rng, k, ci, co).astype("float32")
    true = spectral_norm(conv_matrix(kernel, hw, s, p))
    u0 = tf.constant(rng.normal(size=(1, *hw, ci)), tf.float32)
    sigma, u = spectral.conv2d_power_iteration(kernel, u0, s, p, iterations=300)
    assert float(sigma) == pytest.approx(true, rel=1e-3)
    assert float(sigma) <= true * (1 + 1e-5)
    sigma1, u1 = spectral.conv2d_power_iteration(kernel, u, s, p, iterations=1)
    assert float(sigma1) == pytest.approx(true, rel=1e-3)
    assert abs(_inner(u, u1)) == pytest.approx(1.0, abs=1e-3)


def test_power_iteration_generic_operator():
    """power_iteration only needs A and A^T as callables."""
    m = np.diag([3.0, 2.0, 0.5]).astype("float32")
    sigma, u = spectral.power_iteration(
        lambda v: tf.linalg.matvec(m, v),
        lambda v: tf.linalg.matvec(m, v, transpose_a=True),
        tf.ones(3),
        iterations=60,
    )
    assert float(sigma) == pytest.approx(3.0, rel=1e-4)
    np.testing.assert_allclose(np.abs(u), [1, 0, 0], atol=1e-4)


# --- sound upper bounds ---------------------------------------------------------------


@pytest.mark.parametrize("shape", DENSE_SHAPES)
def test_dense_bounds_are_sound_and_tight(shape):
    rng = np.random.default_rng(6)
    for _ in range(5):
        kernel = rng.normal(size=shape)
        true = spectral_norm(kernel)
        exact = spectral.dense_norm(kernel)
        gram = float(spectral.dense_gram_bound(kernel.astype("float32")))
        assert true <= exact <= 1.2 * true
        assert true * (1 - 1e-6) <= gram <= 1.2 * true


def test_dense_gram_bound_rank_one_and_zero():
    u = np.arange(1.0, 5.0)
    kernel = np.outer(u, [1.0, -2.0, 0.5]).astype("float32")
    assert float(spectral.dense_gram_bound(kernel)) >= spectral_norm(kernel) * (1 - 1e-6)
    assert float(spectral.dense_gram_bound(np.zeros((3, 2), "float32"))) < 1e-6
    with pytest.raises(ValueError, match="2-D"):
        spectral.dense_norm(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=_conv_id)
def test_conv2d_bounds_are_sound_and_tight(config):
    s, p, k, (hw, ci, co) = config
    rng = np.random.default_rng(7)
    kernel = _random_kernel(rng, k, ci, co)
    true = spectral_norm(conv_matrix(kernel, hw, s, p))
    host = spectral.conv2d_norm_bound(kernel, hw, s, p)
    graph = float(spectral.conv2d_gram_bound(kernel.astype("float32"), hw, s, p))
    assert true * (1 - 1e-9) <= host <= 1.2 * true
    assert true * (1 - 1e-6) <= graph <= 1.2 * true


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=_conv_id)
def test_conv2d_circular_embedding_alone_is_sound(config, monkeypatch):
    """With the explicit-matrix shortcut disabled, the circular embedding is still a bound."""
    monkeypatch.setattr(spectral, "EXPLICIT_MAX_DIM", 0)
    s, p, k, (hw, ci, co) = config
    kernel = _random_kernel(np.random.default_rng(8), k, ci, co)
    true = spectral_norm(conv_matrix(kernel, hw, s, p))
    assert spectral.conv2d_norm_bound(kernel, hw, s, p) >= true * (1 - 1e-9)
    graph = float(spectral.conv2d_gram_bound(kernel.astype("float32"), hw, s, p))
    assert graph >= true * (1 - 1e-6)


@pytest.mark.parametrize(
    "config",
    [(1, "same", 3, (9, 9), 4, 4), (2, "same", 3, (12, 12), 3, 8), (1, "valid", 3, (14, 14), 2, 2)],
    ids=str,
)
def test_conv2d_circular_embedding_tight_on_larger_grids(config):
    """Above EXPLICIT_MAX_DIM only the circular embedding is used: still within 1.2."""
    s, p, k, hw, ci, co = config
    assert min(spectral._explicit_dims((k, k, ci, co), hw, (s, s), p)) > spectral.EXPLICIT_MAX_DIM
    kernel = _random_kernel(np.random.default_rng(9), k, ci, co)
    true = spectral_norm(conv_matrix(kernel, hw, s, p))
    assert true * (1 - 1e-9) <= spectral.conv2d_norm_bound(kernel, hw, s, p) <= 1.2 * true
    graph = float(spectral.conv2d_gram_bound(kernel.astype("float32"), hw, s, p))
    assert true * (1 - 1e-6) <= graph <= 1.2 * true


def test_conv2d_bound_of_an_identity_kernel_is_one():
    kernel = np.zeros((3, 3, 2, 2))
    kernel[1, 1] = np.eye(2)
    assert spectral.conv2d_norm_bound(kernel, (6, 6)) == pytest.approx(1.0, abs=1e-9)
    gram = float(spectral.conv2d_gram_bound(kernel, (6, 6)))
    # all 72 singular values are 1: the Gram bound's worst case
    assert 1.0 - 1e-6 <= gram <= spectral.gram_overestimate_factor(72) * (1 + 1e-6)


def test_gram_overestimate_factor():
    assert spectral.gram_overestimate_factor(1) == 1.0
    assert 1.0 < spectral.gram_overestimate_factor(64) < 1.02


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(strides=0), "strides=\\(0, 0\\)"),
        (dict(strides=(1, 2, 3)), "strides"),
        (dict(padding="full"), "padding='full'"),
    ],
)
def test_bad_convolution_arguments(kwargs, match):
    kernel = np.zeros((3, 3, 1, 1))
    with pytest.raises(ValueError, match=match):
        spectral.conv2d_norm_bound(kernel, (6, 6), **kwargs)
    with pytest.raises(ValueError, match="4-D"):
        spectral.conv2d_norm_bound(np.zeros((3, 3)), (6, 6))
