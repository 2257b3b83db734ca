"""Every stable layer family under ``keras.mixed_precision.set_global_policy("mixed_float16")``.

Each family keeps its guarantee: kernels, their normalisation and the bounds
are float32/float64, the activations float16. For each layer, with weights
that press against its constraint and non-zero biases:

1. float16 activations, float32 variables;
2. ``lipschitz_bound()`` is sound for the map that runs (the layer's map with
   its float16 parameters, evaluated exactly in float64): no random or
   adversarially ascended pair of inputs exceeds it;
3. the float16 evaluation is within the allowance ``delta(x)`` of that map
   (tests/_support/float16_rounding.py derives it), so the analysis describes what runs;
4. the float16 outputs themselves: ``||f16(x) - f16(y)|| <= L ||x - y|| +
   delta(x) + delta(y)`` on random pairs far and close, and on pairs ascended on
   the float16 ratio itself;
5. where the layer promises a bound (non-expansive, contractive, orthogonal,
   capped), it still reports it.

The allowance ``delta`` is additive: float16 rounding of the activations is an
error of about ``u = 2^-11`` times the size of the values, which no Lipschitz
constant describes. For pairs as far apart as the inputs are large it is a few
tenths of a percent of ``L ||x - y||``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from _support.float16_rounding import U, exact_map, network_exact_map, norms
from _support.lipschitz_probe import probe

from stablekeras.layers import (
    AntisymmetricDense,
    ContractiveConv2D,
    ContractiveDense,
    HamiltonianDense,
    IsometricLift,
    NonExpansiveConv2D,
    NonExpansiveDense,
    OrthogonalDense,
    OrthogonalNonExpansiveDense,
    ResidualConv2D,
    ResidualDense,
    SpectralConv2D,
    SpectralDense,
)

BIG = keras.initializers.RandomNormal(stddev=1.0)  # kernels well beyond the constraints
BIAS = keras.initializers.RandomNormal(stddev=0.5)

#: name: (make the layer, input shape, the bound it promises or None)
FAMILIES = {
    "nonexpansive_dense": (
        lambda: NonExpansiveDense(16, kernel_initializer=BIG, bias_initializer=BIAS),
        (12,),
        1.0,
    ),
    "nonexpansive_dense_substeps": (
        lambda: NonExpansiveDense(
            16, step_size=2.0, enforcement="substeps", kernel_initializer=BIG, bias_initializer=BIAS
        ),
        (12,),
        None,
    ),
    "nonexpansive_conv": (
        lambda: NonExpansiveConv2D(6, 3, kernel_initializer=BIG, bias_initializer=BIAS),
        (6, 6, 4),
        1.0,
    ),
    "nonexpansive_conv_strided": (
        lambda: NonExpansiveConv2D(6, 3, strides=2, kernel_initializer=BIG, bias_initializer=BIAS),
        (6, 6, 4),
        1.0,
    ),
    # the certified network's convolutional step: the kernel normalised in the forward pass
    "nonexpansive_conv_normalized_aol": (
        lambda: NonExpansiveConv2D(
            6,
            3,
            step_size=2.0,
            enforcement="normalize",
            normalization="aol",
            kernel_initializer=BIG,
            bias_initializer=BIAS,
        ),
        (6, 6, 4),
        1.0,
    ),
    "nonexpansive_conv_normalized_gram": (
        lambda: NonExpansiveConv2D(
            6,
            3,
            step_size=2.0,
            enforcement="normalize",
            normalization="gram",
            kernel_initializer=BIG,
            bias_initializer=BIAS,
        ),
        (6, 6, 4),
        1.0,
    ),
    "nonexpansive_dense_normalized_h03": (
        lambda: NonExpansiveDense(
            16,
            step_size=0.3,
            enforcement="normalize",
            kernel_initializer=BIG,
            bias_initializer=BIAS,
        ),
        (12,),
        1.0,
    ),
    "contractive_conv_normalized": (
        lambda: ContractiveConv2D(
            6,
            3,
            step_size=1.0,
            strong_convexity=0.3,
            enforcement="normalize",
            kernel_initializer=BIG,
        ),
        (6, 6, 4),
        "contractive",
    ),
    "contractive_dense": (
        lambda: ContractiveDense(16, strong_convexity=0.1, kernel_initializer=BIG),
        (12,),
        "contractive",
    ),
    "contractive_conv": (
        lambda: ContractiveConv2D(6, 3, strong_convexity=0.3, kernel_initializer=BIG),
        (6, 6, 4),
        "contractive",
    ),
    "spectral_dense": (
        lambda: SpectralDense(10, max_norm=1.0, kernel_initializer=BIG, bias_initializer=BIAS),
        (12,),
        1.0,
    ),
    "spectral_conv": (
        lambda: SpectralConv2D(5, 3, max_norm=1.0, kernel_initializer=BIG),
        (6, 6, 4),
        1.0,
    ),
    "spectral_dense_free": (lambda: SpectralDense(10, max_norm=None), (12,), None),
    "residual_dense": (lambda: ResidualDense(16), (12,), None),
    "residual_conv": (lambda: ResidualConv2D(6, 3), (6, 6, 4), None),
    "antisymmetric": (lambda: AntisymmetricDense(step_size=0.3, gamma=0.1), (12,), None),
    "hamiltonian": (lambda: HamiltonianDense(8, step_size=0.3), (12,), None),
    "isometric_lift": (lambda: IsometricLift(20, block_size=2), (6, 6, 4), 1.0),
    "orthogonal_dense": (lambda: OrthogonalDense(10, kernel_initializer=BIG), (12,), 1.0),
    "orthogonal_nonexpansive_dense": (
        lambda: OrthogonalNonExpansiveDense(6, kernel_initializer=BIG, bias_initializer=BIAS),
        (12,),
        1.0,
    ),
    # h = 0.3 (not a float16 number) and mu > 0: A = c Q^T with c < 1, a contraction
    "orthogonal_nonexpansive_dense_contractive": (
        lambda: OrthogonalNonExpansiveDense(
            6, step_size=3.3, strong_convexity=0.1, kernel_initializer=BIG, bias_initializer=BIAS
        ),
        (12,),
        "contractive",
    ),
}


@pytest.fixture
def mixed_float16():
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _float16(x):
    return np.asarray(x, np.float16)


def _check_pairs(layer, reference, bound, x, y):
    """Largest ``||f16(x) - f16(y)|| / (L ||x - y|| + delta(x) + delta(y))``; must be <= 1."""
    x, y = _float16(x), _float16(y)
    out = layer(tf.concat([x, y], axis=0)).numpy().astype(np.float64)
    n = len(x)
    diff = norms(out[n:] - out[:n]).numpy()
    dist = norms(y.astype(np.float64) - x.astype(np.float64)).numpy()
    allowance = (reference(x).err + reference(y).err).numpy()
    keep = dist > 0
    return float(np.max(diff[keep] / (bound * dist[keep] + allowance[keep])))


def _ascend_float16(layer, shape, steps=25, n=32, seed=0):
    """Pairs ascended by Adam on the ratio of the float16 outputs (far and close pairs)."""
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.normal(size=(n, *shape)).astype("float32"))
    d = tf.Variable(rng.normal(size=(n, *shape)).astype("float32"))
    scale = np.where(np.arange(n) % 2 == 0, 1.0, 0.05).reshape((n,) + (1,) * len(shape))
    opt = keras.optimizers.Adam(0.05)
    pairs = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            unit = d / tf.norm(tf.reshape(d, (n, -1)), axis=1)[(...,) + (None,) * len(shape)]
            step = tf.cast(scale, tf.float32) * unit * float(np.sqrt(np.prod(shape)))
            f = tf.cast(layer(tf.concat([x, x + step], axis=0)), tf.float32)
            ratio = tf.norm(tf.reshape(f[n:] - f[:n], (n, -1)), axis=1) / tf.norm(
                tf.reshape(step, (n, -1)), axis=1
            )
            loss = -tf.reduce_mean(tf.math.log(ratio + 1e-12))
        opt.apply_gradients(zip(tape.gradient(loss, [x, d]), [x, d]))
        pairs.append((x.numpy(), (x + step).numpy()))
    return pairs[4::5]  # every fifth step, the last included


@pytest.mark.parametrize("family", FAMILIES)
def test_family_keeps_its_guarantee_under_mixed_float16(mixed_float16, family):
    make, shape, promise = FAMILIES[family]
    keras.utils.set_random_seed(0)
    layer = make()
    rng = np.random.default_rng(1)
    x = _float16(rng.normal(size=(64, *shape)))
    out = layer(x)
    # 1. float16 activations, float32 variables
    assert out.dtype == tf.float16
    assert all(w.dtype == "float32" for w in layer.weights if "substeps" not in w.path)
    bound = layer.lipschitz_bound()

    # 5. the promised bound, for the parameters as they run
    if promise == "contractive":  # 1 - h mu, with h mu as it runs
        h_mu = float(np.float16(layer.step_size)) * float(np.float16(layer.strong_convexity))
        if isinstance(layer, OrthogonalNonExpansiveDense):
            h_mu = float(np.float16(layer.step_size * layer.strong_convexity))
        assert bound <= 1.0 - h_mu + 1e-12, (bound, 1.0 - h_mu)
    elif promise is not None:
        assert bound <= promise, bound

    # 2. the bound is sound for the exact map of what runs (float64, adversarial pairs)
    reference = exact_map(layer)

    def exact(v):  # the map on any input (the probe's pairs need not be float16 numbers)
        return tf.cast(reference(v).value, tf.float32)

    found = probe([exact], shape, n_random=256, n_ascent=16, steps=25, scale=1.0)[0]
    assert found <= bound * (1 + 1e-4), (found, bound)
    assert found >= 0.3 * min(bound, 1.0), "the probe found no large ratio at all"

    # 3. the float16 evaluation is within the allowance of that map
    ref = reference(x)
    err = norms(out.numpy().astype(np.float64) - ref.value.numpy()).numpy()
    allowance = ref.err.numpy()
    assert np.all(err <= allowance), (err.max(), allowance.min())
    scale = (norms(x) + norms(ref.value)).numpy() + 1.0
    assert np.all(allowance <= 60 * U * scale), "a loose allowance"

    # 4. the float16 outputs: random far and close pairs, and pairs ascended in float16
    far = rng.normal(size=(128, *shape))
    close = x.astype(np.float64) + 0.02 * rng.normal(size=x.shape)
    pairs = [(x, far[:64]), (x, close), *_ascend_float16(layer, shape)]
    worst = max(_check_pairs(layer, reference, bound, a, b) for a, b in pairs)
    assert worst <= 1.0, worst


def test_a_fit_under_mixed_float16_keeps_the_guarantee(mixed_float16):
    """The certified network (isometric lift, normalised conv steps, orthogonal dense stage and
    projection), fitted under the policy.

    Loss scaling is on, the constraints still act after every (unscaled) update,
    and ``lipschitz_bound_`` is sound for the network that runs: for its exact map
    (probe) and, with the allowance of every layer chained, for its float16 outputs.
    """
    from sklearn.datasets import load_digits

    from stablekeras import StableClassifier

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    clf = StableClassifier(
        image_shape=(8, 8, 1),
        width=8,
        depth=2,
        dense_width=32,
        dense_depth=1,
        epochs=4,
        batch_size=64,
        learning_rate=0.02,
        random_state=0,
    ).fit(X[:1200], y[:1200])
    model = clf.model_
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.layers[-1].compute_dtype == "float16"
    assert clf.score(X[1200:], y[1200:]) >= 0.6
    blocks = [b for b in model.layers if isinstance(b, NonExpansiveConv2D)]
    assert len(blocks) == 2 and all(b.lipschitz_bound() <= 1.0 for b in blocks)
    bound = clf.lipschitz_bound_
    assert bound <= 1.0  # every layer is 1-Lipschitz

    reference = network_exact_map(model)
    found = probe([lambda v: tf.cast(reference(v).value, tf.float32)], (64,), n_ascent=16)[0]
    assert found <= bound * (1 + 1e-4), (found, bound)

    x, far = X[1200:1264], X[1264:1328]
    close = x + 0.02 * np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    for a, b in ((x, far), (x, close)):
        out = model(np.concatenate([a, b])).numpy().astype(np.float64)
        diff = norms(out[64:] - out[:64]).numpy()
        dist = norms(b.astype(np.float64) - a.astype(np.float64)).numpy()
        allowance = (reference(a).err + reference(b).err).numpy()
        assert np.all(diff <= bound * dist + allowance), np.max(diff - bound * dist - allowance)
    # and the float16 forward pass is within its allowance of the exact map
    ref = reference(x)
    err = norms(model(x).numpy().astype(np.float64) - ref.value.numpy()).numpy()
    assert np.all(err <= ref.err.numpy())


def test_orthogonal_layers_run_their_float32_iterations(mixed_float16):
    """The orthogonal kernel is orthonormalised in float32 and shrunk for float16 rounding."""
    layer = OrthogonalDense(64)
    layer(np.zeros((1, 64), np.float16))
    q = layer.orthonormal_kernel()
    assert q.dtype == tf.float16 and layer.kernel.dtype == "float32"
    s = np.linalg.svd(q.numpy().astype(np.float64), compute_uv=False)
    assert s.max() <= 1.0
    # the price of the room for rounding: about u sqrt(64) = 0.4% of gain, no more than 1%
    assert s.min() >= 0.99, s.min()


def test_float32_policy_is_unchanged():
    """Without a mixed policy the constraints and bounds are exactly what they were."""
    assert keras.mixed_precision.global_policy().name == "float32"
    layer = NonExpansiveDense(8, kernel_initializer=BIG)
    layer(np.zeros((1, 5), np.float32))
    assert layer.kernel_constraint_.compute_dtype is None
    assert layer.lipschitz_bound() == 1.0
