"""The estimators' Adam and AdamW: Keras' update, without pinning each traced train step.

In graph mode ``tf.custom_gradient`` registers its gradient function in
TensorFlow's global gradient registry for good, and the function's closure
holds tensors of the traced graph. Keras' optimizers sum the gradients over the
replicas through such a function on every trace, also with one replica, so a
process that fits many networks keeps every train-step graph it traced (about
30 MB per fit of the default network). The registry is TensorFlow's private
``ops._gradient_registry``; these tests read it because it is where the graphs
are held.
"""

import gc
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from tensorflow.python.framework import func_graph, ops

from stablekeras import StableClassifier, StableRegressor
from stablekeras.estimators import _optimizers

# 20 optimizer steps: more than the estimators' eager limit, so the train step is traced
COMPILED = dict(width=8, depth=1, epochs=2, batch_size=30, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300].astype(np.float32) / 16.0, y[:300]


def _custom_gradients() -> set[str]:
    return {k for k in ops._gradient_registry.list() if k.startswith("CustomGradient")}


def _live_train_graphs() -> int:
    gc.collect()
    return sum(
        isinstance(o, func_graph.FuncGraph) and o.name == "one_step_on_data"
        for o in gc.get_objects()
    )


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return model


def test_keras_adam_pins_each_traced_step():
    """The canary: if this fails, TensorFlow no longer leaks and ``_optimizers`` can go."""
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    before = _custom_gradients()
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert _custom_gradients() - before


@pytest.mark.parametrize(
    "estimator, weight_decay",
    [(StableClassifier, 0.0), (StableRegressor, 1e-4)],  # Adam, AdamW
    ids=["classifier-Adam", "regressor-AdamW"],
)
def test_repeated_fits_do_not_pin_their_train_graphs(digits, estimator, weight_decay):
    X, y = digits
    y = y if estimator is StableClassifier else y.astype(np.float32)
    estimator(**COMPILED, weight_decay=weight_decay).fit(X, y)
    registered, graphs = _custom_gradients(), _live_train_graphs()
    for seed in (1, 2):
        params = {**COMPILED, "weight_decay": weight_decay, "random_state": seed}
        fitted = estimator(**params).fit(X, y)
        assert fitted.n_iter_ == COMPILED["epochs"]
        del fitted
    assert _custom_gradients() == registered
    assert _live_train_graphs() <= graphs


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: _optimizers.Adam(0.01), lambda: keras.optimizers.Adam(0.01)),
        (
            lambda: _optimizers.AdamW(0.01, weight_decay=0.1),
            lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        ),
    ],
    ids=["Adam", "AdamW"],
)
def test_the_update_is_keras_own(ours, theirs):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    weights = []
    for make in (ours, theirs):
        model = _tiny_model()
        model.compile(optimizer=make(), loss="mse", jit_compile=False)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


#: Run in a fresh interpreter: the two logical CPUs must exist before TensorFlow starts.
_TWO_REPLICAS = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from stablekeras.estimators import _optimizers
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
optimizer = _optimizers.Adam(0.01)
variables = [tf.Variable([0.0, 0.0]), tf.Variable([0.0])]
def step():
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    own = tf.cast(replica, tf.float32) + 1.0
    grads = [tf.fill((2,), own), tf.fill((1,), 10.0 * own)]
    reduced = optimizer._all_reduce_sum_gradients(zip(grads, variables))
    return [g for g, _ in reduced]
for first, second in strategy.experimental_local_results(strategy.run(step)):
    np.testing.assert_array_equal(first.numpy(), [3.0, 3.0])  # 1 + 2
    np.testing.assert_array_equal(second.numpy(), [30.0])
print("summed")
"""


def test_several_replicas_still_sum_the_gradients():
    """With two replicas in sync the gradients are summed over them, as in Keras."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "summed"


def test_one_replica_passes_the_gradients_through():
    optimizer = _optimizers.Adam(0.01)
    grads = [tf.ones((2,)), None]
    variables = [tf.Variable([0.0, 0.0]), tf.Variable([0.0])]
    local = optimizer._all_reduce_sum_gradients(zip(grads, variables))
    assert local[0][0] is grads[0] and local[1][0] is None


def test_a_compiled_model_saves_and_loads_with_its_optimizer(tmp_path):
    model = _tiny_model()
    model.compile(optimizer=_optimizers.AdamW(0.01, weight_decay=0.1), loss="mse")
    model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is _optimizers.AdamW
    assert loaded.optimizer.weight_decay == pytest.approx(0.1)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
