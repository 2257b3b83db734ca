"""Multi-worker data-parallel training: ``tf.distribute.MultiWorkerMirroredStrategy``.

Every worker runs the same program; ``TF_CONFIG`` tells each one the cluster
and its own place in it. Each training step splits the global batch between
the workers, sums their gradients with collective all-reduce, and applies the
same update on every worker, so the weights stay identical everywhere; the
kernel constraints run after the update, on the aggregated result, so every
worker keeps the guarantee.

Keras 3.15's ``Model.fit`` does not run under this strategy (it reduces a
tuple of per-replica tensors and the scalar logs with calls the strategy
rejects; keras-team/keras#20585), so :func:`fit_multi_worker` is a plain
training loop with Keras' own pieces: the model's compiled loss and optimizer
(constraints and loss scaling included), ``keras.callbacks.CallbackList``
(backup, early stopping, progress bar, history) and the strategy's distributed
dataset. It computes what ``fit`` computes: per epoch, the mean over batches of
the batch loss weighted by batch size (``loss``) and the same over the
validation data (``val_loss``), both over the whole cluster, so that every
worker sees the same logs and takes the same early-stopping decision.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "multi_worker_strategy",
    "is_multi_worker",
    "is_chief",
    "fit_multi_worker",
    "local_copy",
]

_STRATEGY: tf.distribute.Strategy | None = None


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG`` (made once, then reused).

    TensorFlow allows one such strategy per process, made before the runtime
    starts (before any other TensorFlow work).
    """
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    raw = os.environ.get("TF_CONFIG")
    try:
        config = json.loads(raw) if raw else None
    except ValueError:
        config = None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError(
            "Received an invalid value for the TF_CONFIG environment variable, expected the "
            'JSON {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": i}} on every worker with '
            f"distribute='multi_worker'. Received: TF_CONFIG={raw!r}"
        )
    try:
        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(
            "distribute='multi_worker' could not start MultiWorkerMirroredStrategy: TensorFlow "
            "allows it only before any other TensorFlow work in the process. Create it first "
            "(strategy = tf.distribute.MultiWorkerMirroredStrategy() at the start of the "
            "program) and pass it as distribute=strategy."
        ) from err
    return _STRATEGY


def _num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, [])) for job in ("chief", "worker"))


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` over more than one worker."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        _num_workers(strategy) > 1
    )


def is_chief(strategy) -> bool:
    """Whether this process is the chief (the worker that writes backups and exports)."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def gathered(strategy, value: float) -> list[float]:
    """``value`` of every replica of every worker (in cross-replica mode)."""
    per_replica = strategy.run(lambda: tf.constant([value], tf.float64))
    return [float(v) for v in strategy.gather(per_replica, axis=0).numpy()]


def shared_seed(strategy) -> int:
    """A random seed drawn on the chief and sent to every worker (for random_state=None)."""
    drawn = int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
    per_replica = strategy.run(
        lambda: (
            tf.constant(float(drawn) if is_chief(strategy) else 0.0, tf.float64)
            / tf.cast(strategy.num_replicas_in_sync // _num_workers(strategy), tf.float64)
        )
    )
    return int(round(float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))))


def _weighted_sum(loss_fn, y, y_pred, w):
    """``sum(w * l)`` of the per-sample losses of ``loss_fn`` (a Keras Loss), and the count."""
    per_sample = tf.reshape(tf.cast(loss_fn.call(y, tf.cast(y_pred, tf.float32)), tf.float32), [-1])
    if w is not None:
        per_sample = per_sample * tf.reshape(tf.cast(w, tf.float32), [-1])
    return tf.reduce_sum(per_sample), tf.cast(tf.shape(per_sample)[0], tf.float32)


def _loss_share(model, loss_fn, x, y, w):
    """This replica's share of the global batch loss ``sum(w * l) / n_global``, and its sum."""
    weighted, local = _weighted_sum(loss_fn, y, model(x, training=True), w)
    total = tf.distribute.get_replica_context().all_reduce("SUM", local)
    share = weighted / tf.maximum(total, 1.0)
    if model.losses:  # regularisation: added once in total over the replicas
        replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
        share += tf.add_n([tf.cast(v, tf.float32) for v in model.losses]) / replicas
    return share, weighted, local


def _unpack(batch):
    x, y, *rest = batch
    return x, y, (rest[0] if rest else None)


def fit_multi_worker(
    model: keras.Model,
    strategy,
    data: tf.data.Dataset,
    *,
    loss_fn: keras.losses.Loss,
    epochs: int,
    steps_per_epoch: int,
    validation_data: tf.data.Dataset | None = None,
    callbacks=(),
    backup=None,
    verbose: int = 0,
) -> keras.callbacks.History:
    """Train a compiled ``model`` (built, with its optimizer, in ``strategy.scope()``) on ``data``.

    Parameters
    ----------
    loss_fn : keras.losses.Loss
        The loss the model was compiled with (its per-sample ``call`` is used).
    data, validation_data : tf.data.Dataset
        Global batches ``(x, y)`` or ``(x, y, sample_weight)``, identical on
        every worker (same order); the strategy gives each worker its part.
    backup : AtomicBackupAndRestore or None
        The backup among ``callbacks``, if any: where the fit starts.

    Returns
    -------
    keras.callbacks.History
        The logs of the epochs run here.
    """
    optimizer = model.optimizer
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history],
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    train_data = strategy.experimental_distribute_dataset(data)
    val_data = (
        None
        if validation_data is None
        else strategy.experimental_distribute_dataset(validation_data)
    )

    def train_replica(batch):
        x, y, w = _unpack(batch)
        with tf.GradientTape() as tape:
            share, weighted, local = _loss_share(model, loss_fn, x, y, w)
            scaled = optimizer.scale_loss(share)
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return weighted, local

    def val_replica(batch):
        x, y, w = _unpack(batch)
        return _weighted_sum(loss_fn, y, model(x, training=False), w)

    def summed(fn):
        @tf.function(reduce_retracing=True)
        def run(batch):
            parts = strategy.run(fn, args=(batch,))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, p, axis=None) for p in parts]

        return run

    train_step, val_step = summed(train_replica), summed(val_replica)

    model.stop_training = False
    callback_list.on_train_begin()
    initial_epoch = 0 if backup is None else int(backup.restored_epoch)
    restored = gathered(strategy, initial_epoch)
    if min(restored) != max(restored):
        raise RuntimeError(
            f"The workers restored different epochs ({sorted({int(e) for e in restored})}) from "
            "checkpoint_dir: it must be one directory that every worker reads (a shared file "
            "system), with the same path on every worker."
        )
    logs = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        loss_sum, count = 0.0, 0.0
        for step, batch in enumerate(train_data):
            callback_list.on_train_batch_begin(step)
            part_sum, part_count = train_step(batch)
            loss_sum, count = loss_sum + float(part_sum), count + float(part_count)
            callback_list.on_train_batch_end(step, {"loss": loss_sum / max(count, 1.0)})
        logs = {"loss": loss_sum / max(count, 1.0)}
        if val_data is not None:
            val_sum, val_count = 0.0, 0.0
            for batch in val_data:
                part_sum, part_count = val_step(batch)
                val_sum, val_count = val_sum + float(part_sum), val_count + float(part_count)
            logs["val_loss"] = val_sum / max(val_count, 1.0)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history


def local_copy(model: keras.Model) -> keras.Model:
    """The trained ``model`` with ordinary (not distributed) variables: predict, export and pickle
    then need no other worker. Called on every worker (reading distributed variables takes every
    worker's part), outside the strategy's scope."""
    weights = model.get_weights()
    copy = keras.models.clone_model(model)
    copy.set_weights(weights)
    return copy
