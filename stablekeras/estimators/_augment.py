"""Translation augmentation: training images shifted by a few pixels, drawn afresh each batch.

The shifts act on the training data only, in the input pipeline; the network
and its certificate are untouched (a certificate is a property of the trained
network at a given input, whatever it was trained on).
"""

from __future__ import annotations

import tensorflow as tf


def shift_rows(x, image_shape, max_shift: int, seed):
    """Each row of ``x`` (a flattened ``image_shape`` image) shifted by its own offset.

    The offsets along height and width are drawn uniformly from
    ``-max_shift .. max_shift`` by a stateless generator with ``seed`` (a pair of
    integers); pixels shifted in are zero, pixels shifted out are dropped.
    """
    h, w, c = image_shape
    s = int(max_shift)
    images = tf.pad(tf.reshape(x, (-1, h, w, c)), [[0, 0], [s, s], [s, s], [0, 0]])
    n = tf.shape(images)[0]
    offsets = tf.random.stateless_uniform((2, n), seed, 0, 2 * s + 1, dtype=tf.int32)
    rows = offsets[0][:, None] + tf.range(h)[None, :]
    cols = offsets[1][:, None] + tf.range(w)[None, :]
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    images = tf.gather(images, cols, axis=2, batch_dims=1)
    return tf.reshape(images, (-1, h * w * c))


def shifted_batches(batches: tf.data.Dataset, image_shape, max_shift: int, seed=None):
    """``batches`` of ``(x, y)`` or ``(x, y, sample_weight)`` with ``x`` shifted by
    :func:`shift_rows`; new offsets in every epoch, reproducible for an integer ``seed``."""
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def shift(batch, draw):
        x, *rest = batch
        pair = tf.stack([draw, tf.constant(0, tf.int64)])
        return (shift_rows(tf.cast(x, tf.float32), image_shape, max_shift, pair), *rest)

    return tf.data.Dataset.zip((batches, draws)).map(shift)
