"""Fitting from a ``tf.data.Dataset``: the checks of its batches and the streaming pass
that finds the classes (or the target scale) before training."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def check_finite_batch(x, index, what="x"):
    """Refuse a batch with NaN or infinity, naming the batch."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"Input {what} contains NaN or infinity (batch {index} of the dataset)")


def scan_labels(dataset, classes):
    """``(sorted classes, number of batches)``: one pass over the dataset, checking finite
    inputs and collecting the labels, skipped for known ``classes`` and cardinality."""
    found, n_batches = set(), 0
    cardinality = int(dataset.cardinality())
    if classes is None or cardinality < 0:
        for n_batches, batch in enumerate(dataset, start=1):  # noqa: B007
            check_finite_batch(batch[0], n_batches)
            labels = np.unique(batch[1].numpy())
            if labels.dtype.kind in "SO":  # tf.string arrives as bytes
                labels = np.char.decode(labels.astype(bytes), "utf-8")
            found.update(labels.tolist())
    else:
        n_batches = cardinality
    if classes is None:
        if not found:
            raise ValueError("The dataset is empty")
        classes = found
    else:
        missing = found - set(np.asarray(classes).tolist())
        if missing:
            raise ValueError(f"The dataset has labels {sorted(missing)} not in `classes`")
    return np.unique(np.asarray(sorted(classes))), max(n_batches, 1)


def label_encoder(classes, label_dtype):
    """``encode(y)``: the labels of a batch as indices in ``classes`` (in the graph)."""
    keys = tf.constant(classes)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(keys), dtype=tf.int32)), -1
    )

    def encode(y):
        ids = table.lookup(tf.cast(tf.reshape(y, (-1,)), keys.dtype))
        # without the scan (`classes` given) an unknown label is found only here
        tf.debugging.assert_non_negative(ids, message="The dataset has labels not in `classes`")
        return ids

    if label_dtype.is_floating or label_dtype.is_integer:
        if keys.dtype == tf.string:
            raise ValueError("`classes` are strings but the dataset's labels are numeric")
    elif label_dtype == tf.string and keys.dtype != tf.string:
        raise ValueError("`classes` are numeric but the dataset's labels are strings")
    return encode


def scan_targets(dataset):
    """``(ndim of y, mean, std, number of batches)``: one streaming pass over a regression
    dataset, checking that inputs and targets are finite."""
    total, total_sq, count, n_batches, ndim = 0.0, 0.0, 0, 0, 1
    for n_batches, batch in enumerate(dataset, start=1):  # noqa: B007
        check_finite_batch(batch[0], n_batches)
        yb = np.asarray(batch[1].numpy(), dtype=np.float64)
        ndim = yb.ndim
        yb = yb.reshape(len(yb), -1)
        check_finite_batch(yb, n_batches, "y")
        total, total_sq, count = total + yb.sum(0), total_sq + (yb**2).sum(0), count + len(yb)
    if count == 0:
        raise ValueError("The dataset is empty")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return ndim, mean, std, n_batches


class DatasetFitMixin:
    """``fit`` on a ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)`` batches."""

    def _fit_dataset(self, dataset, y, sample_weight, classes, user_callbacks=(), previous=None):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "When X is a tf.data.Dataset it must yield (x, y) or (x, y, sample_weight) "
                "batches; y and sample_weight must be None"
            )
        if self.early_stopping:
            raise ValueError("early_stopping=True needs arrays, not a tf.data.Dataset")
        if isinstance(getattr(self, "class_weight", None), str):
            raise ValueError(
                "class_weight='balanced' needs the class counts, which a tf.data.Dataset does "
                "not give before training: pass a dict (e.g. from "
                "sklearn.utils.class_weight.compute_class_weight)"
            )
        self._check_callback_monitors(user_callbacks, validation=False)
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(
                "Expected a tf.data.Dataset of (x, y) or (x, y, sample_weight) batches. "
                f"Received element_spec={spec}"
            )
        x_shape = spec[0].shape
        if x_shape.rank != 2 or x_shape[-1] is None:
            raise ValueError(
                "Expected batches x of shape (batch, n_features) with a known n_features. "
                f"Received x of shape {x_shape}"
            )
        if not spec[0].dtype.is_floating and not spec[0].dtype.is_integer:
            raise ValueError(f"Expected numeric x batches. Received dtype {spec[0].dtype.name}")
        n_features = int(x_shape[-1])
        with self._warm_start_guard(previous):
            self._check_image_shape(n_features)
            n_outputs, n_batches, encode = self._scan_dataset(dataset, classes)
            self.n_features_in_ = n_features
        per_class = self._class_weight_vector()
        seed = self._agree_seed(self._seed())

        def prepare(x, y, *w):
            target = encode(y)
            if per_class is not None:  # a classifier's class weights times the sample weights
                cw = tf.gather(tf.constant(per_class, tf.float32), target)
                w = (cw if not w else cw * tf.reshape(tf.cast(w[0], tf.float32), (-1,)),)
            return (tf.cast(x, tf.float32), target, *w)

        data = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
        with self._fit_scope(previous is not None):
            self._compile(
                n_features, n_outputs, n_batches, previous is not None, seed, user_callbacks
            )
            backup = self._backup_callback(n_features, -n_batches)  # batches, not samples
            history = self._keras_fit(
                data,
                epochs=self.epochs,
                verbose=int(self.verbose),
                callbacks=([] if backup is None else [backup]) + list(user_callbacks),
                backup=backup,
                steps_per_epoch=n_batches,
            )
        return self._record_fit(history, user_callbacks, warm=previous is not None, backup=backup)

    def _scan_dataset(self, dataset, classes):
        """One streaming pass: finiteness, batch count and targets (see subclasses)."""
        raise NotImplementedError
