"""Non-expansive and contractive gradient-step layers, after training towards an expansive map.

Each layer is trained (``model.fit``, Adam, large learning rate) towards ``y = -3 x``,
a map with Lipschitz constant 3 that the layer can only approach by making
``||A||`` as large as it is allowed to: the constraint ends on its boundary, the
sub-step count grows above 1. Afterwards ``||f(x) - f(y)|| <= ||x - y||`` must hold
on random pairs and on pairs found by gradient ascent, and ``lipschitz_bound()``
must never be below the largest ratio found.

All layers of one family are trained in one multi-output model and probed in one
traced graph: the layers are independent branches (each loss reaches only its own
layer, and Adam scales each weight's step by its own gradient), so this is the
same as training them one by one, in a fraction of the time.
"""

import inspect
import itertools
import math
import warnings

import keras
import numpy as np
import pytest
from _support.lipschitz_probe import probe
from _support.operator_matrices import conv_matrix, operator_matrix, spectral_norm
from _support.round_trip import reload_and_compare

from stablekeras.layers import (
    ContractiveConv2D,
    ContractiveDense,
    NonExpansiveConv2D,
    NonExpansiveDense,
    SubstepCapWarning,
)

TOL = 1e-4  # float32 rounding allowance on ratios
ACTIVATIONS = ["relu", "leaky_relu", "elu", "tanh", "sigmoid", "softplus"]
INTEGRATORS = ["euler", "heun", "rk4"]
ENFORCEMENTS = ["project", "substeps"]
# Every activation in both modes, the integrators cycling so that every integrator
# meets every mode twice (12 trained layers instead of the 36 of the full grid).
DENSE_CASES = [
    (a, INTEGRATORS[(ai + mi) % 3], mode)
    for ai, a in enumerate(ACTIVATIONS)
    for mi, mode in enumerate(ENFORCEMENTS)
]
DENSE_DIM = 4
IMAGE = (7, 7, 2)  # odd size: exercises the output padding of the strided adjoint
CONV_CASES = [
    # activation, integrator, mode, kernel_size, strides, padding
    ("relu", "euler", "project", 3, 1, "same"),
    ("leaky_relu", "heun", "substeps", 3, 2, "same"),
    ("elu", "rk4", "project", 2, 2, "valid"),
    ("tanh", "euler", "substeps", 4, 1, "valid"),
    ("sigmoid", "heun", "project", 5, 1, "same"),
    ("softplus", "rk4", "substeps", 1, 1, "same"),
]
# The convolutions train into the sub-step cap, where the step shrinks below T / S
# (the dense layers cover the uncapped schedule); a low cap keeps the loops short.
CONV_MAX_SUBSTEPS = 6
CONTRACTIVE_CASES = list(itertools.product(["dense", "conv"], ENFORCEMENTS))
MU = 0.2


def _boundary(layer) -> float:
    """Largest ||A|| with one step of size h keeping h (L_s ||A||^2 + 2 mu) <= 2 r."""
    h, r = layer.step_size, layer.integrator.radius
    return math.sqrt((2 * r - 2 * h * layer.strong_convexity) / (h * layer.activation.slope))


def _fit(layers, input_shape, steps=30, batch=16):
    """Train the layers (independent branches of one model) towards y = -3 x."""
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, [layer(inputs) for layer in layers])
    model.compile(keras.optimizers.Adam(0.1), loss=["mse"] * len(layers))
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    x = np.random.default_rng(0).normal(size=(steps * batch, *input_shape)).astype("float32")
    model.fit(x, [-3.0 * x] * len(layers), batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return model


def _overdriven(layer_factory, input_shape, factor=2.0):
    """A projected layer whose kernel is set past the boundary, bypassing the constraint."""
    layer = layer_factory()
    layer.build((None, *input_shape))
    kernel = layer.kernel.numpy()
    layer.kernel.assign(kernel * factor * _boundary(layer) / layer.operator_norm())
    layer.bias.assign(np.linspace(-0.5, 0.5, layer.bias.shape[0]))
    return layer


@pytest.fixture(scope="module")
def dense(fast_graphs):
    keras.utils.set_random_seed(0)
    layers = {
        case: NonExpansiveDense(8, activation=case[0], integrator=case[1], enforcement=case[2])
        for case in DENSE_CASES
    }
    contractive = {
        enforcement: ContractiveDense(
            8, strong_convexity=MU, enforcement=enforcement, activation="relu"
        )
        for enforcement in ENFORCEMENTS
    }
    _fit([*layers.values(), *contractive.values()], (DENSE_DIM,))
    overdriven = {
        name: _overdriven(lambda name=name: NonExpansiveDense(8, integrator=name), (DENSE_DIM,))
        for name in INTEGRATORS
    }
    everything = [*layers.values(), *contractive.values(), *overdriven.values()]
    ratios = dict(zip(map(id, everything), probe(everything, (DENSE_DIM,))))
    return dict(layers=layers, contractive=contractive, overdriven=overdriven, ratios=ratios)


@pytest.fixture(scope="module")
def conv(fast_graphs):
    keras.utils.set_random_seed(1)
    layers = {
        case: NonExpansiveConv2D(
            4,
            case[3],
            strides=case[4],
            padding=case[5],
            activation=case[0],
            integrator=case[1],
            enforcement=case[2],
            max_substeps=CONV_MAX_SUBSTEPS,
        )
        for case in CONV_CASES
    }
    contractive = {
        enforcement: ContractiveConv2D(
            4,
            3,
            strong_convexity=MU,
            enforcement=enforcement,
            activation="tanh",
            max_substeps=CONV_MAX_SUBSTEPS,
        )
        for enforcement in ENFORCEMENTS
    }
    _fit([*layers.values(), *contractive.values()], IMAGE)
    everything = [*layers.values(), *contractive.values()]
    ratios = dict(zip(map(id, everything), probe(everything, IMAGE, n_ascent=16)))
    return dict(layers=layers, contractive=contractive, ratios=ratios)


def _assert_trained_to_the_edge(layer):
    if layer.enforcement == "project":
        assert layer.operator_norm() >= 0.95 * _boundary(layer), (
            "training did not reach the boundary"
        )
        assert layer.operator_norm() <= _boundary(layer) * (1 + 1e-6)
        assert int(layer.substeps.numpy()) == 1
    else:
        assert int(layer.substeps.numpy()) > 1, "training did not need sub-steps"


def test_dense_substeps_schedule_is_exercised_below_the_cap(dense):
    steps = [
        int(la.substeps.numpy()) for la in dense["layers"].values() if la.enforcement == "substeps"
    ]
    assert any(1 < s < 32 for s in steps), steps


def _assert_non_expansive(layer, ratio):
    assert ratio <= 1.0 + TOL
    bound = layer.lipschitz_bound()
    assert bound <= 1.0
    assert ratio <= bound * (1 + TOL)


@pytest.mark.parametrize("case", DENSE_CASES, ids="-".join)
def test_dense_is_non_expansive_after_training(dense, case):
    layer = dense["layers"][case]
    _assert_trained_to_the_edge(layer)
    _assert_non_expansive(layer, dense["ratios"][id(layer)])


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_is_non_expansive_after_training(conv, case):
    layer = conv["layers"][case]
    _assert_trained_to_the_edge(layer)
    _assert_non_expansive(layer, conv["ratios"][id(layer)])
    # the certificate's norm is the operator's, not the reshaped kernel's
    m = conv_matrix(layer.kernel.numpy(), IMAGE[:2], layer.strides, layer.padding)
    assert spectral_norm(m) <= layer.operator_norm() * (1 + 1e-9)


@pytest.mark.parametrize("case", CONTRACTIVE_CASES, ids="-".join)
def test_contractive_after_training(dense, conv, case):
    kind, enforcement = case
    family = dense if kind == "dense" else conv
    layer = family["contractive"][enforcement]
    _assert_trained_to_the_edge(layer)
    ratio, bound = family["ratios"][id(layer)], layer.lipschitz_bound()
    if enforcement == "project":
        assert bound == pytest.approx(1 - layer.step_size * MU, abs=1e-9)
    # in sub-step mode: (1 - h mu)^S for S steps of h <= T / S, recomputed from the weights
    assert bound < 1.0
    assert ratio <= bound * (1 + TOL)


@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_probe_finds_expansion_when_the_condition_fails(dense, integrator):
    """Power check of the probe, and soundness of lipschitz_bound() past the boundary."""
    layer = dense["overdriven"][integrator]
    ratio = dense["ratios"][id(layer)]
    assert ratio > 1.05
    assert layer.lipschitz_bound() >= ratio


def test_explicit_euler_jacobian_matches_the_formula():
    """f(x) = x - h A^T s(A x + b): at a point, J = I - h A^T diag(s'(Ax + b)) A."""
    layer = NonExpansiveDense(5, step_size=0.7, activation="tanh")
    x0 = np.random.default_rng(3).normal(size=(1, DENSE_DIM))
    layer(x0.astype("float32"))
    w = layer.kernel.numpy().astype(np.float64)  # (d, units): A = w^T
    z = x0 @ w + layer.bias.numpy()
    expected = np.eye(DENSE_DIM) - 0.7 * w @ np.diag(1 - np.tanh(z[0]) ** 2) @ w.T
    eps = 1e-3
    jac = operator_matrix(
        lambda e: (layer(x0 + eps * e) - layer(x0 - eps * e)) / (2 * eps), (DENSE_DIM,)
    )
    np.testing.assert_allclose(jac, expected, atol=2e-3)


# --- state, serialization and calls outside fit -----------------------------------------


def _stateful_model():
    """Every class of the module, in both modes, with kernels large enough to need S > 1."""
    flat = keras.Input((DENSE_DIM,))
    image = keras.Input((6, 5, 2))
    layers = [
        NonExpansiveDense(6, enforcement="project", integrator="rk4", activation="elu"),
        NonExpansiveDense(6, enforcement="substeps", activation="sigmoid"),
        ContractiveDense(6, enforcement="substeps", strong_convexity=0.3),
        NonExpansiveConv2D(
            3, 3, strides=2, padding="valid", enforcement="substeps", integrator="heun"
        ),
        NonExpansiveConv2D(3, 2, enforcement="project", activation="leaky_relu"),
        ContractiveConv2D(3, 3, enforcement="project", strong_convexity=0.1),
    ]
    outputs = [layer(flat if i < 3 else image) for i, layer in enumerate(layers)]
    model = keras.Model([flat, image], outputs)
    for layer in layers:
        if layer.enforcement == "substeps":
            layer.kernel.assign(3.0 * layer.kernel)
    rng = np.random.default_rng(4)
    x = [
        rng.normal(size=(3, DENSE_DIM)).astype("float32"),
        rng.normal(size=(3, 6, 5, 2)).astype("float32"),
    ]
    return model, layers, x


def _weights(model):
    return [np.array(w.numpy()) for w in model.weights]


def test_save_and_load_without_custom_objects(tmp_path):
    model, layers, x = _stateful_model()
    model(x, training=True)  # sets the sub-step state
    substeps = [int(layer.substeps.numpy()) for layer in layers]
    assert max(substeps) > 1
    loaded, loaded_layers = reload_and_compare(model, x, layers, tmp_path)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    assert [int(layer.substeps.numpy()) for layer in loaded_layers] == substeps
    for layer, clone in zip(layers, loaded_layers):
        assert clone.lipschitz_bound() == pytest.approx(layer.lipschitz_bound(), rel=1e-9)


def test_calls_outside_fit_change_no_weight_and_no_state():
    model, layers, x = _stateful_model()
    for layer in layers:
        assert inspect.signature(layer.call).parameters["training"].default is None
    before = _weights(model)
    model(x)
    model(x, training=False)
    model.predict(x, verbose=0)
    for layer in layers:
        layer(x[0] if layer.kernel.shape.rank == 2 else x[1])
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    # the test could fail: a training call does update the state
    model(x, training=True)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(model)))


def test_get_config_round_trip():
    layer = NonExpansiveConv2D(
        3,
        (2, 3),
        strides=(2, 1),
        padding="valid",
        step_size=0.5,
        activation={"name": "leaky_relu", "config": {"alpha": 0.3}},
        integrator="rk4",
        enforcement="substeps",
        use_bias=False,
        max_substeps=7,
    )
    clone = NonExpansiveConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.activation.alpha == 0.3 and clone.kernel_size == (2, 3)
    contractive = ContractiveDense(4, strong_convexity=0.25, enforcement="substeps")
    assert ContractiveDense.from_config(contractive.get_config()).strong_convexity == 0.25


def test_constraint_mode_starts_inside_the_set():
    layer = NonExpansiveDense(
        32, step_size=2.0, kernel_initializer=keras.initializers.RandomNormal(stddev=3)
    )
    layer.build((None, 16))
    assert layer.operator_norm() <= _boundary(layer)


def test_substeps_cap_shrinks_the_step_warns_once_and_reports_it():
    """Past the cap the block integrates S h < T: it says so once, with the numbers."""
    layer = NonExpansiveDense(6, step_size=0.5, enforcement="substeps", max_substeps=2)
    layer.build((None, DENSE_DIM))
    layer.kernel.assign(10.0 * layer.kernel)
    x = np.random.default_rng(5).normal(size=(4, DENSE_DIM)).astype("float32")
    with pytest.warns(SubstepCapWarning) as record:
        layer(x, training=True)
    assert len(record) == 1
    schedule = layer.substep_schedule()  # already warned: silent
    assert int(layer.substeps.numpy()) == schedule.substeps == 2
    assert schedule.capped and schedule.required_substeps > 2
    # the numbers: h on the boundary of the condition, the time it covers
    nu = layer.activation.slope * float(layer._graph_norm()) ** 2
    assert schedule.step == pytest.approx(2.0 / nu, rel=1e-4)
    assert schedule.time == pytest.approx(2 * schedule.step) and schedule.time < 0.5
    assert schedule.required_substeps == math.ceil(0.5 * nu * (1 + 1e-5) / 2.0)
    message = str(record[0].message)
    for number in (
        "max_substeps=2",
        f"S={schedule.required_substeps}",
        f"h={schedule.step:.6g}",
        f"time {schedule.time:.6g}",
    ):
        assert number in message, (number, message)
    assert layer.lipschitz_bound() <= 1.0
    # and the model computes what the schedule says: S steps of h
    manual = x
    for _ in range(schedule.substeps):
        manual = manual - schedule.step * layer._adjoint(
            layer.activation(layer._apply(manual) + layer.bias)
        )
    np.testing.assert_allclose(layer(x), manual, rtol=1e-5, atol=1e-6)


def test_substep_schedule_below_the_cap_keeps_the_time_silently():
    layer = NonExpansiveDense(6, step_size=0.5, enforcement="substeps", max_substeps=64)
    layer.build((None, DENSE_DIM))
    layer.kernel.assign(10.0 * layer.kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubstepCapWarning)
        schedule = layer.substep_schedule()
        layer(np.ones((2, DENSE_DIM), "float32"))
    assert not schedule.capped and schedule.substeps > 1
    assert schedule.time == pytest.approx(0.5, rel=1e-6)
    assert schedule.step == pytest.approx(0.5 / schedule.substeps)
    constrained = NonExpansiveDense(6, step_size=0.5)
    constrained.build((None, DENSE_DIM))
    assert constrained.substep_schedule() == (1, 0.5, 0.5, 0.5, 1)


# --- bad arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (NonExpansiveDense, dict(units=4, step_size=0), "step_size=0"),
        (NonExpansiveDense, dict(units=4, step_size=-0.5), "step_size=-0.5"),
        (NonExpansiveConv2D, dict(filters=4, step_size=0.0), "step_size=0.0"),
        (NonExpansiveDense, dict(units=0), "units=0"),
        (NonExpansiveDense, dict(units=-3), "units=-3"),
        (NonExpansiveDense, dict(units=2.5), "units=2.5"),
        (NonExpansiveConv2D, dict(filters=0), "filters=0"),
        (ContractiveConv2D, dict(filters=-1), "filters=-1"),
        (NonExpansiveDense, dict(units=4, activation="swish"), "'swish', which is not monotone"),
        (NonExpansiveDense, dict(units=4, activation="gelu"), "'gelu', which is not monotone"),
        (NonExpansiveConv2D, dict(filters=4, activation="sin"), "'sin', which is not monotone"),
        (
            NonExpansiveDense,
            dict(units=4, activation={"name": "leaky_relu", "config": {"alpha": -0.2}}),
            "alpha=-0.2",
        ),
        (NonExpansiveDense, dict(units=4, integrator="midpoint"), "integrator='midpoint'"),
        (NonExpansiveDense, dict(units=4, enforcement="clip"), "enforcement='clip'"),
        (NonExpansiveDense, dict(units=4, max_substeps=0), "max_substeps=0"),
        (NonExpansiveConv2D, dict(filters=4, padding="full"), "padding='full'"),
        (NonExpansiveConv2D, dict(filters=4, kernel_size=0), "kernel_size"),
        (ContractiveDense, dict(units=4, strong_convexity=0.0), "strong_convexity=0.0"),
        (ContractiveDense, dict(units=4, integrator="rk4"), "integrator='rk4'"),
        (
            ContractiveDense,
            dict(units=4, step_size=2.0, strong_convexity=0.5),
            "step_size \\* strong",
        ),
    ],
)
def test_bad_arguments_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_non_monotone_error_says_why():
    with pytest.raises(ValueError, match="convexity") as info:
        NonExpansiveDense(4, activation="swish")
    assert "decreases" in str(info.value)


def test_conv_needs_a_known_image_shape():
    with pytest.raises(ValueError, match="height, width, channels"):
        NonExpansiveConv2D(2).build((None, None, None, 3))


@pytest.mark.parametrize(
    "kernel_size, strides, padding, shape",
    [
        (3, 1, "same", (6, 6, 2)),
        (2, 2, "same", (7, 7, 3)),
        (4, 2, "valid", (7, 6, 2)),
        (5, 1, "valid", (6, 7, 1)),
    ],
)
def test_layer_operators_are_exact_adjoints(kernel_size, strides, padding, shape):
    """<A x, z> = <x, A^T z> for the operators the layers are built from (float64 sums)."""
    rng = np.random.default_rng(6)
    for layer, in_shape in [
        (NonExpansiveConv2D(3, kernel_size, strides=strides, padding=padding), shape),
        (NonExpansiveDense(5), shape[-1:]),
    ]:
        layer.build((None, *in_shape))
        x = rng.normal(size=(2, *in_shape)).astype("float32")
        ax = np.asarray(layer._apply(x), np.float64)
        z = rng.normal(size=ax.shape).astype("float32")
        atz = np.asarray(layer._adjoint(z), np.float64)
        lhs, rhs = np.sum(ax * z), np.sum(x.astype(np.float64) * atz)
        assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), 1e-3 * np.linalg.norm(ax) * np.linalg.norm(z))
