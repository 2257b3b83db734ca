"""Gradient steps in ``enforcement="normalize"``: the kernel rescaled in every forward pass.

The certified convolutional layer of the package: ``x - h A^T s(Ax + b)`` with ``A``
normalised (Gram-iteration bound, or AOL scales) onto ``||A|| = min(1, a_max)``.
Each layer is trained towards the expansive map ``y = -3 x`` (which pushes ``A`` as
far as it may go) and then probed: the largest ratio found on random and
gradient-ascent pairs must never exceed ``lipschitz_bound()`` (1), the step must sit
on the boundary of its condition (Gram normalisation, up to the bound's slack),
and the reported bounds must be tight against explicit-matrix SVDs.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from _support.lipschitz_probe import probe
from _support.operator_matrices import conv_matrix, operator_matrix, spectral_norm
from _support.round_trip import reload_and_compare

from stablekeras import spectral
from stablekeras.layers import ContractiveConv2D, NonExpansiveConv2D, NonExpansiveDense
from stablekeras.models import build_network, lipschitz_bound

TOL = 1e-4
IMAGE = (7, 7, 3)
# normalization, activation, integrator, kernel_size, strides, padding
CONV_CASES = [
    ("gram", "relu", "euler", 3, 1, "same"),
    ("aol", "relu", "euler", 3, 1, "same"),
    ("gram", "tanh", "heun", 3, 2, "same"),
    ("aol", "leaky_relu", "rk4", 2, 2, "valid"),
    ("gram", "sigmoid", "euler", 5, 1, "valid"),
    ("aol", "elu", "euler", 1, 1, "same"),
]
DENSE_CASES = [("gram", "relu"), ("aol", "relu"), ("gram", "softplus"), ("aol", "tanh")]


def _target(layer) -> float:
    """``min(1, a_max)``: the norm the normalisation aims at."""
    h, L, r, mu = (
        layer.step_size,
        layer.activation.slope,
        layer.integrator.radius,
        layer.strong_convexity,
    )
    return min(1.0, math.sqrt((2 * r - 2 * h * mu) / (h * L)))


def _fit(layers, input_shape, steps=40, batch=16):
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, [layer(inputs) for layer in layers])
    model.compile(keras.optimizers.Adam(0.05), loss=["mse"] * len(layers))
    model.optimizer.build(model.trainable_variables)
    x = np.random.default_rng(0).normal(size=(steps * batch, *input_shape)).astype("float32")
    model.fit(x, [-3.0 * x] * len(layers), batch_size=batch, epochs=1, verbose=0, shuffle=False)


@pytest.fixture(scope="module")
def trained(fast_graphs):
    keras.utils.set_random_seed(2)
    conv = {
        case: NonExpansiveConv2D(
            6,
            case[3],
            strides=case[4],
            padding=case[5],
            activation=case[1],
            integrator=case[2],
            enforcement="normalize",
            normalization=case[0],
            step_size=2.0 if case[1] == "relu" else 1.0,
        )
        for case in CONV_CASES
    }
    contractive = ContractiveConv2D(
        6, 3, enforcement="normalize", strong_convexity=0.2, step_size=1.5
    )
    dense = {
        case: NonExpansiveDense(
            8, activation=case[1], enforcement="normalize", normalization=case[0], step_size=2.0
        )
        for case in DENSE_CASES
    }
    _fit([*conv.values(), contractive], IMAGE)
    _fit(list(dense.values()), (5,))
    image_layers = [*conv.values(), contractive]
    ratios = dict(zip(map(id, image_layers), probe(image_layers, IMAGE, n_ascent=16)))
    ratios.update(zip(map(id, dense.values()), probe(list(dense.values()), (5,))))
    return dict(conv=conv, contractive=contractive, dense=dense, ratios=ratios)


def _used_operator_norm(layer) -> float:
    """||A|| of the kernel the layer computes with, from the SVD of its explicit matrix."""
    kernel = layer.used_kernel().numpy()
    if kernel.ndim == 2:
        return spectral_norm(kernel)
    return spectral_norm(conv_matrix(kernel, IMAGE[:2], layer.strides, layer.padding))


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_is_non_expansive_after_training(trained, case):
    layer = trained["conv"][case]
    ratio, bound = trained["ratios"][id(layer)], layer.lipschitz_bound()
    assert bound <= 1.0
    assert ratio <= bound * (1 + TOL)
    norm = _used_operator_norm(layer)
    assert norm <= _target(layer) * (1 + 1e-5)
    # the certificate's float64 norm is sound and tight against the explicit SVD
    assert norm <= layer.operator_norm() * (1 + 1e-9)
    assert layer.operator_norm() <= 1.05 * norm
    if case[0] == "gram":
        # Gram normalisation puts the step on the boundary, up to the bound's slack
        assert norm >= 0.95 * _target(layer)


@pytest.mark.parametrize("case", DENSE_CASES, ids="-".join)
def test_dense_is_non_expansive_after_training(trained, case):
    layer = trained["dense"][case]
    ratio, bound = trained["ratios"][id(layer)], layer.lipschitz_bound()
    assert bound <= 1.0
    assert ratio <= bound * (1 + TOL)
    norm = _used_operator_norm(layer)
    assert norm <= _target(layer) * (1 + 1e-5)
    if case[0] == "gram":
        assert norm >= 0.95 * _target(layer)


def test_contractive_normalized_step(trained):
    layer = trained["contractive"]
    bound = layer.lipschitz_bound()
    assert bound == pytest.approx(1 - 1.5 * 0.2, abs=1e-9)
    assert trained["ratios"][id(layer)] <= bound * (1 + TOL)


def test_probe_has_power_on_a_normalized_layer_past_the_boundary():
    """The same probe finds expansion when the step is too long for the normalised A."""
    layer = NonExpansiveConv2D(6, 3, enforcement="normalize", normalization="gram", step_size=2.0)
    layer.build((None, *IMAGE))
    # h = 6 with ||A|| = 1: h L ||A||^2 = 6 > 2, the step expands (1 - 6 = -5 along A)
    kernel = layer.used_kernel()

    def too_long(x):
        return x - 6.0 * layer._adjoint(tf.nn.relu(layer._apply(x, kernel)), kernel)

    assert probe([too_long], IMAGE, n_ascent=8, steps=20)[0] > 1.5


def test_bound_is_tight_against_the_jacobian():
    """lipschitz_bound() <= 1.05 x the largest Jacobian norm found (explicit SVDs).

    With ReLU the Jacobian is ``I - h A^T D A`` (D the active units): the identity
    where no unit is active, a reflection on the boundary; its norm is 1.
    """
    keras.utils.set_random_seed(3)
    layer = NonExpansiveConv2D(4, 3, enforcement="normalize", normalization="gram", step_size=2.0)
    x = np.random.default_rng(0).normal(size=(6, 5, 5, 2)).astype("float32")
    layer(x)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    jac = tape.batch_jacobian(y, x).numpy().reshape(6, 50, 50)
    largest = max(spectral_norm(j) for j in jac)
    assert largest <= layer.lipschitz_bound() * (1 + TOL)
    assert layer.lipschitz_bound() <= 1.05 * largest


@pytest.mark.parametrize(
    "kernel_shape, strides, padding, grid",
    [
        ((3, 3, 2, 5), 1, "same", (6, 6)),
        ((3, 3, 4, 3), 2, "same", (7, 7)),
        ((2, 2, 3, 4), 2, "valid", (6, 5)),
        ((5, 5, 1, 2), 1, "valid", (8, 8)),
        ((1, 1, 6, 4), 1, "same", (3, 3)),
    ],
)
def test_aol_scales_are_sound(kernel_shape, strides, padding, grid):
    """||diag(d) A|| <= 1 for the AOL scales d, any padding and stride (explicit SVD)."""
    rng = np.random.default_rng(7)
    for trial in range(4):
        kernel = rng.normal(size=kernel_shape)
        if trial == 3:  # nearly orthogonal channels: where the bound is tight
            kernel = np.zeros(kernel_shape)
            for i in range(min(kernel_shape[2:])):
                kernel[kernel_shape[0] // 2, kernel_shape[1] // 2, i, i] = 1.0
        d = spectral.conv2d_aol_scales(tf.constant(kernel)).numpy()
        norm = spectral_norm(conv_matrix(kernel * d, grid, strides, padding))
        assert norm <= 1.0 + 1e-9
        if trial == 3 and strides == 1 and padding == "same":
            assert norm == pytest.approx(1.0, rel=1e-9)
    dense = rng.normal(size=(7, 4))
    d = spectral.dense_aol_scales(tf.constant(dense)).numpy()
    assert spectral_norm(dense * d) <= 1.0 + 1e-9


def test_used_kernel_operators_are_exact_adjoints():
    rng = np.random.default_rng(8)
    for normalization in ("gram", "aol"):
        layer = NonExpansiveConv2D(
            3, 3, strides=2, enforcement="normalize", normalization=normalization
        )
        layer.build((None, 7, 6, 2))
        kernel = layer.used_kernel()
        x = rng.normal(size=(2, 7, 6, 2)).astype("float32")
        ax = np.asarray(layer._apply(x, kernel), np.float64)
        z = rng.normal(size=ax.shape).astype("float32")
        atz = np.asarray(layer._adjoint(z, kernel), np.float64)
        lhs, rhs = np.sum(ax * z), np.sum(x.astype(np.float64) * atz)
        assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_gradients_reach_the_raw_kernel_through_the_normalisation():
    layer = NonExpansiveConv2D(3, 3, enforcement="normalize")
    x = tf.constant(np.random.default_rng(9).normal(size=(2, 5, 5, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grad = tape.gradient(loss, layer.kernel)
    assert grad is not None and float(tf.norm(grad)) > 0
    # rescaling the raw kernel does not change the layer (it is normalised away)
    before = layer(x).numpy()
    layer.kernel.assign(7.0 * layer.kernel)
    np.testing.assert_allclose(layer(x).numpy(), before, rtol=1e-4, atol=1e-5)


def test_save_and_load_without_custom_objects(tmp_path):
    keras.utils.set_random_seed(4)
    model = build_network(
        (75,),
        3,
        image_shape=(5, 5, 3),
        width=12,
        depth=2,
        dense_width=8,
        dense_depth=1,
        lift_block_size=1,
    )
    blocks = [layer for layer in model.layers if isinstance(layer, NonExpansiveConv2D)]
    assert len(blocks) == 2 and all(layer.enforcement == "normalize" for layer in blocks)
    x = np.random.default_rng(5).normal(size=(4, 75)).astype("float32")
    loaded, clones = reload_and_compare(model, x, blocks, tmp_path)
    assert [clone.normalization for clone in clones] == [layer.normalization for layer in blocks]
    assert lipschitz_bound(loaded) == pytest.approx(lipschitz_bound(model), rel=1e-9)
    assert lipschitz_bound(model) <= 1.0 + 1e-5
    aol = NonExpansiveConv2D(3, enforcement="normalize", normalization="aol")
    assert NonExpansiveConv2D.from_config(aol.get_config()).normalization == "aol"


def test_whole_network_bound_after_training(fast_graphs):
    keras.utils.set_random_seed(6)
    model = build_network(
        (64,), 3, image_shape=(8, 8, 1), width=8, depth=2, dense_width=16, dense_depth=2
    )
    rng = np.random.default_rng(0)
    x = rng.random((256, 64)).astype("float32")
    y = rng.integers(0, 3, size=256)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    bound = lipschitz_bound(model)
    assert bound <= 1.0 + 1e-5
    assert probe([model], (64,), n_ascent=16, scale=0.5)[0] <= bound * (1 + TOL)


def test_bad_normalization_is_named():
    with pytest.raises(ValueError, match="normalization='power'"):
        NonExpansiveConv2D(3, enforcement="normalize", normalization="power")
    with pytest.raises(ValueError, match="normalization='power'"):
        NonExpansiveDense(3, normalization="power")


def test_operator_matrix_helper_agrees_with_the_layer():
    """The explicit matrix used above is the layer's own A (guards the test helper)."""
    layer = NonExpansiveConv2D(2, 3, enforcement="normalize")
    layer.build((None, 4, 4, 1))
    kernel = layer.used_kernel()
    m = operator_matrix(lambda e: layer._apply(tf.cast(e, tf.float32), kernel), (4, 4, 1))
    np.testing.assert_allclose(m, conv_matrix(kernel.numpy(), (4, 4), 1, "same"), atol=1e-6)
