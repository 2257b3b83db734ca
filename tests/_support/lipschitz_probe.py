"""An adversarial probe of Lipschitz constants: the largest ``||f(x) - f(y)|| / ||x - y||`` found.

``probe`` evaluates the ratio on random pairs (far apart and close together) and then
runs Adam ascent on the pairs themselves, for several functions at once (one
traced graph for all of them, which keeps the test suite fast). The result is a
lower bound of each function's Lipschitz constant: a sound upper bound must never
be below it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Pairs closer than this are ignored: float32 rounding of ``f(x) - f(y)`` would
#: dominate their ratio.
MIN_DISTANCE = 1e-3


def _ratios(f, x, d):
    """``||f(x + d) - f(x)|| / ||d||`` for each row (float32), and ``||d||``."""
    n = tf.shape(x)[0]
    out = f(tf.concat([x, x + d], axis=0))
    diff = tf.reshape(out[n:] - out[:n], (n, -1))
    dist = tf.norm(tf.reshape(d, (n, -1)), axis=1)
    return tf.norm(diff, axis=1) / tf.maximum(dist, 1e-30), dist


def probe(
    fns,
    input_shape,
    *,
    n_random: int = 1000,
    n_ascent: int = 32,
    steps: int = 40,
    learning_rate: float = 0.05,
    scale: float = 1.0,
    close: float = 1e-2,
    seed: int = 0,
) -> np.ndarray:
    """Largest ratio found for each function of ``fns`` (a list of callables on batches).

    Parameters
    ----------
    fns : list of callables
        Each maps a float32 batch of shape ``(n, *input_shape)`` to a batch.
    input_shape : tuple
        Shape of one input.
    n_random : int
        Random pairs: half independent ``N(0, scale^2)`` pairs, half ``y = x + close * noise``.
    n_ascent, steps, learning_rate :
        Pairs optimised by Adam ascent on ``log ratio`` (half from random starts,
        half from close starts) and the number of steps.

    Returns
    -------
    np.ndarray of float64, one maximum per function.
    """
    rng = np.random.default_rng(seed)
    k, shape = len(fns), tuple(input_shape)

    def normal(*lead):
        return rng.normal(size=(*lead, *shape)).astype("float32")

    # Random pairs.
    half = n_random // 2
    x = scale * normal(n_random)
    d = np.concatenate([scale * normal(half), close * scale * normal(n_random - half)])
    best = np.zeros(k)
    for i, f in enumerate(fns):
        r, dist = _ratios(f, tf.constant(x), tf.constant(d))
        r = np.where(dist.numpy() >= MIN_DISTANCE, r.numpy().astype(np.float64), 0.0)
        best[i] = r.max()

    # Adam ascent on (x, direction); d = s * e with s = scale (far) or close * scale (close).
    half = n_ascent // 2
    s = np.concatenate([np.full(half, scale), np.full(n_ascent - half, close * scale)])
    s = tf.constant(s.reshape((n_ascent,) + (1,) * len(shape)), tf.float32)
    xs = tf.Variable(scale * normal(k, n_ascent))
    es = tf.Variable(normal(k, n_ascent))
    variables = [xs, es]
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    b1, b2 = 0.9, 0.999

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            loss, found = 0.0, []
            for i, f in enumerate(fns):
                r, dist = _ratios(f, xs[i], s * es[i])
                found.append(tf.where(dist >= MIN_DISTANCE, r, 0.0))
                loss -= tf.reduce_mean(tf.math.log(tf.maximum(r, 1e-12)))
        grads = tape.gradient(loss, variables)
        for v, g, (m, u) in zip(variables, grads, moments):
            m.assign(b1 * m + (1 - b1) * g)
            u.assign(b2 * u + (1 - b2) * tf.square(g))
            m_hat = m / (1 - b1**t)
            u_hat = u / (1 - b2**t)
            v.assign_sub(learning_rate * m_hat / (tf.sqrt(u_hat) + 1e-8))
        return tf.stack([tf.reduce_max(r) for r in found])

    for t in range(1, steps + 1):
        found = step(tf.constant(float(t))).numpy().astype(np.float64)
        best = np.maximum(best, found)
    # The pairs after the last update.
    for i, f in enumerate(fns):
        r, dist = _ratios(f, xs[i], s * es[i])
        r = np.where(dist.numpy() >= MIN_DISTANCE, r.numpy().astype(np.float64), 0.0)
        best[i] = max(best[i], r.max())
    return best
