"""IsometricLift, OrthogonalDense, OrthogonalNonExpansiveDense: sound and tight bounds."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _support.lipschitz_probe import probe
from _support.operator_matrices import spectral_norm
from _support.round_trip import reload_and_compare

from stablekeras.layers import IsometricLift, OrthogonalDense, OrthogonalNonExpansiveDense
from stablekeras.models import build_network, lipschitz_bound
from stablekeras.spectral import bjorck_orthonormalize

TOL = 1e-4


def test_isometric_lift_preserves_norms_and_shapes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 12, 2)).astype("float32")
    layer = IsometricLift(20, block_size=2)
    y = layer(x).numpy()
    assert y.shape == (3, 4, 6, 20)
    np.testing.assert_allclose(
        np.linalg.norm(y.reshape(3, -1), axis=1), np.linalg.norm(x.reshape(3, -1), axis=1), 1e-6
    )
    assert np.all(y[..., 8:] == 0)  # the zero channels
    assert sorted(y[..., :8].ravel()) == sorted(x.ravel())  # a permutation
    assert layer.lipschitz_bound() == 1.0
    assert layer.compute_output_shape((None, 8, 12, 2)) == (None, 4, 6, 20)


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        (dict(channels=7, block_size=2), (None, 4, 4, 2), "channels=7"),
        (dict(channels=16, block_size=3), (None, 4, 4, 1), "divisible by 3"),
        (dict(channels=16), (None, 4, 4), "height, width, channels"),
    ],
)
def test_isometric_lift_bad_arguments_are_named(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        IsometricLift(**kwargs).build(shape)
    with pytest.raises(ValueError, match="block_size=0"):
        IsometricLift(4, block_size=0)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (16, 16)])
def test_bjorck_gives_singular_values_one_from_any_start(shape):
    v = np.random.default_rng(1).normal(size=shape).astype("float32")
    s = np.linalg.svd(bjorck_orthonormalize(v, 20).numpy().astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(s, 1.0, atol=1e-4)
    # few iterations: not converged, but never above 1 (beyond rounding)
    s3 = np.linalg.svd(bjorck_orthonormalize(v, 3).numpy().astype(np.float64), compute_uv=False)
    assert s3.max() <= 1 + 1e-6


@pytest.fixture(scope="module")
def trained(fast_graphs):
    """The three layers trained (model.fit) towards a target that wants gain 3."""
    keras.utils.set_random_seed(0)
    d = 12
    inputs = keras.Input((d,))
    dense = OrthogonalDense(6, kernel_initializer="glorot_uniform")
    wide = OrthogonalDense(20)
    step = OrthogonalNonExpansiveDense(8)
    step_sigmoid = OrthogonalNonExpansiveDense(16, activation="sigmoid", bjorck_iterations=4)
    outputs = [dense(inputs), wide(inputs), step(inputs), step_sigmoid(inputs)]
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), loss=["mse"] * 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(480, d)).astype("float32")
    targets = [3 * x[:, :6], 3 * np.tile(x, 2)[:, :20], 3 * np.abs(x), 3 * np.abs(x)]
    model.fit(x, targets, batch_size=16, epochs=1, verbose=0)
    layers = dict(dense=dense, wide=wide, step=step, step_sigmoid=step_sigmoid)
    ratios = dict(zip(layers, probe(list(layers.values()), (d,), n_ascent=16)))
    return layers, ratios


@pytest.mark.parametrize("name", ["dense", "wide", "step", "step_sigmoid"])
def test_probe_never_exceeds_the_bound(trained, name):
    layers, ratios = trained
    layer = layers[name]
    assert ratios[name] <= layer.lipschitz_bound() * (1 + TOL)
    assert layer.lipschitz_bound() <= 1.0 + 1e-6


@pytest.mark.parametrize("name", ["dense", "wide"])
def test_orthogonal_dense_keeps_every_singular_value_at_one(trained, name):
    layers, ratios = trained
    layer = layers[name]
    q = layer.orthonormal_kernel().numpy().astype(np.float64)
    s = np.linalg.svd(q, compute_uv=False)
    # "dense" started from a Glorot kernel, far from orthogonal: 6 iterations get within 1%
    np.testing.assert_allclose(s, 1.0, atol=1e-2)
    assert s.max() <= 1.0
    assert layer.lipschitz_bound() == pytest.approx(spectral_norm(q), rel=1e-9)
    assert ratios[name] >= 0.99  # the bound is tight: some direction has gain 1


def test_relu_step_is_a_reflection(trained):
    """With ReLU and orthonormal columns the Jacobian is orthogonal: gradient norm preserving."""
    layer = trained[0]["step"]
    x = tf.constant(np.random.default_rng(2).normal(size=(8, 12)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    jac = tape.batch_jacobian(y, x).numpy().astype(np.float64)
    for j in jac:
        np.testing.assert_allclose(np.linalg.svd(j, compute_uv=False), 1.0, atol=1e-3)
        np.testing.assert_allclose(j, j.T, atol=1e-5)  # the gradient of a potential


def test_zero_iterations_still_bound_the_norm():
    layer = OrthogonalNonExpansiveDense(3, bjorck_iterations=0)
    layer.build((None, 5))
    layer.kernel.assign(np.eye(5, 3, dtype="float32") * 2.0)
    # zero iterations only rescale by the Gershgorin bound: norm 1 again
    assert layer.lipschitz_bound() <= 1.0 + 1e-6


def test_save_and_load_without_custom_objects(tmp_path):
    inputs = keras.Input((4, 4, 1))
    y = IsometricLift(8, block_size=2)(inputs)
    y = keras.layers.Flatten()(y)
    y = OrthogonalDense(10, bjorck_iterations=5, use_bias=False)(y)
    y = OrthogonalNonExpansiveDense(4, activation="leaky_relu")(y)
    model = keras.Model(inputs, y)
    x = np.random.default_rng(3).random((2, 4, 4, 1)).astype("float32")
    reload_and_compare(model, x, model.layers[1:], tmp_path)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (OrthogonalDense, dict(units=0), "units=0"),
        (OrthogonalDense, dict(units=3, bjorck_iterations=-1), "bjorck_iterations=-1"),
        (OrthogonalNonExpansiveDense, dict(units=3, activation="gelu"), "not monotone"),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_certified_network_bound_holds_after_training(fast_graphs):
    """The whole architecture of the certified benchmark, small: bound <= 1 and never beaten."""
    keras.utils.set_random_seed(0)
    model = build_network(
        (64,),
        3,
        image_shape=(8, 8, 1),
        lift_block_size=2,
        width=4,
        depth=1,
        dense_width=16,
        dense_depth=2,
    )
    names = [layer.name for layer in model.layers]
    assert names[0] == "to_image" and names[1] == "lift" and "pool_blocks" not in names
    assert names[-4:] == ["dense_lift", "dense_block_0", "dense_block_1", "projection"]
    rng = np.random.default_rng(0)
    x = rng.random((256, 64)).astype("float32")
    y = rng.integers(0, 3, size=256)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    bound = lipschitz_bound(model)
    assert bound <= 1.0 + 1e-5
    assert probe([model], (64,), n_ascent=16, scale=0.5)[0] <= bound * (1 + TOL)


def test_default_network_is_the_certified_one():
    """The defaults: isometric lift, gradient steps, orthogonal dense stage and projection."""
    model = build_network((64,), 3, image_shape=(8, 8, 1), width=4, depth=1, dense_depth=1)
    names = [layer.name for layer in model.layers]
    assert names == [
        "to_image",
        "lift",
        "block_0",
        "flatten",
        "dense_lift",
        "dense_block_0",
        "projection",
    ]
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds[:2] == ["IsometricLift", "NonExpansiveConv2D"]
    assert kinds[-3:] == ["OrthogonalDense", "OrthogonalNonExpansiveDense", "OrthogonalDense"]
    assert model.layers[2].enforcement == "normalize"


def test_chapter_network_is_one_parameter_away():
    model = build_network(
        (64,), 3, image_shape=(8, 8, 1), width=4, depth=1, network="chapter", dense_width=None
    )
    names = [layer.name for layer in model.layers]
    assert names == [
        "to_image",
        "lift",
        "pool_lift",
        "block_0",
        "pool_blocks",
        "flatten",
        "projection",
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(network="pool"), "network='pool'"),
        (dict(dense_width=1), "dense_width=1"),
        (dict(dense_width=8, dense_depth=-1), "dense_depth=-1"),
        (dict(lift_block_size=0), "lift_block_size=0"),
    ],
)
def test_build_network_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_network((64,), 3, image_shape=(8, 8, 1), **kwargs)
