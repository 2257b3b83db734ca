"""The compiled CleverHans loops: one ``tf.function`` per model and attack setting.

Why ``tf.while_loop`` and not CleverHans's own PGD and MIM functions: see the
docstring of :mod:`stablekeras.robustness`.

Every function has the input signature ``[None, n_features]``, so the last,
partial batch does not retrace, and is cached per Keras model (the entries die
with the model); ``eps``, the step and the number of steps are run-time inputs.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import clip_eta, compute_gradient, optimize_linear, random_lp_vector

# model -> {setting: tf.function}; entries die with the Keras model.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def crossentropy(labels, logits):
    """CleverHans's loss: the softmax cross-entropy of each example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def margin_loss(labels, logits):
    """Carlini-Wagner margin: largest wrong logit minus the true logit (per example)."""
    onehot = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    wrong = tf.reduce_max(tf.where(onehot, tf.constant(-np.inf, logits.dtype), logits), axis=1)
    true = tf.reduce_max(tf.where(onehot, logits, tf.constant(-np.inf, logits.dtype)), axis=1)
    return wrong - true


_LOSS_FNS = {"crossentropy": crossentropy, "margin": margin_loss}


def _model_cache(model):
    try:
        return _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        return {}


def forward_fn(model, n_features):
    """The compiled inference pass ``x -> model(x, training=False)``, cached per model."""
    cache = _model_cache(model)
    key = ("forward", n_features)
    if key not in cache:
        ref = weakref.ref(model)

        @tf.function(
            input_signature=[tf.TensorSpec([None, n_features], tf.float32)],
            autograph=False,
        )
        def forward(x):
            return ref()(x, training=False)

        cache[key] = forward
    return cache[key]


def _project(z, norm, lo, hi):
    """Back onto the unit ball of ``norm`` and into the (scaled) clip box."""
    z = clip_eta(z, norm, 1.0)
    return z if lo is None else tf.clip_by_value(z, lo, hi)


def _pgd_loop(model_fn, loss_fn, y, z, step, steps, norm, lo, hi):
    """CleverHans's PGD iteration (centre 0, radius 1): FGM step, project, clip."""

    def body(i, z):
        z = fast_gradient_method(
            model_fn, z, step, norm, loss_fn, clip_min=lo, clip_max=hi, y=y, sanity_checks=False
        )
        return i + 1, _project(z, norm, lo, hi)

    return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), z))[1]


def _mim_loop(model_fn, loss_fn, y, z, step, steps, norm, lo, hi, decay=1.0):
    """CleverHans's momentum iterative method (Dong et al. 2018), centre 0, radius 1."""

    def body(i, z, momentum):
        grad = compute_gradient(model_fn, loss_fn, z, y, False)
        grad = grad / tf.maximum(1e-12, tf.reduce_mean(tf.abs(grad), axis=1, keepdims=True))
        momentum = decay * momentum + grad
        z = _project(z + optimize_linear(momentum, step, norm), norm, lo, hi)
        return i + 1, z, momentum

    return tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), z, tf.zeros_like(z)))[1]


def attack_fn(model, n_features, settings, loss, seed):
    """One compiled attack, ``(x, y, eps, step, steps) -> (x_adv, clean pred, adversarial pred)``.

    ``settings`` is an :class:`~stablekeras.robustness._settings.AttackSettings`,
    ``loss`` one of its losses. ``step`` is relative to ``eps``. Cached per model
    and setting, except with a seeded random start: that one is built afresh so
    that its random stream starts from the seed at each call.
    """
    attack, norm, random_start, clip = (
        settings.attack,
        settings.norm,
        settings.random_start,
        settings.clip,
    )
    key = ("attack", n_features, attack, norm, random_start, loss, clip)
    cache = _model_cache(model) if seed is None else {}
    if key in cache:
        return cache[key]
    ref = weakref.ref(model)
    loss_fn = _LOSS_FNS[loss]

    def logits(x):
        return ref()(x, training=False)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n_features], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
        ],
        autograph=False,
    )
    def run(x, y, eps, step, steps):
        if seed is not None:
            # the graph-level seed of this function only (TF1 API inside a trace)
            tf.compat.v1.set_random_seed(seed)

        # The attack searches z = (x_adv - x) / eps in the unit ball, so eps is a tensor
        # and one trace serves every eps. The value fed to the model is x + eps z, its
        # gradient is passed through unscaled: d logits / dz = d logits / dx at x + eps z,
        # so every step is the one CleverHans takes in input space.
        def model_fn(z):
            return logits(tf.stop_gradient(x + eps * z) + (z - tf.stop_gradient(z)))

        lo = hi = None
        if clip is not None:
            lo, hi = (clip[0] - x) / eps, (clip[1] - x) / eps
        if attack == "fgsm":
            z = fast_gradient_method(
                model_fn, tf.zeros_like(x), 1.0, norm, loss_fn,
                clip_min=lo, clip_max=hi, y=y, sanity_checks=False,
            )  # fmt: skip
        else:
            z = tf.zeros_like(x)
            if random_start:  # as CleverHans's PGD: uniform in the ball, then clipped
                z = _project(random_lp_vector(tf.shape(x), norm, 1.0, dtype=x.dtype), norm, lo, hi)
            loop = _mim_loop if attack == "mim" else _pgd_loop  # pgd; bim = pgd from 0
            z = loop(model_fn, loss_fn, y, z, step, steps, norm, lo, hi)
        # back to input space: exact projection on the eps-ball, then on the clip box
        # (clipping only shrinks |x_adv - x| coordinate-wise since x is in the box)
        x_adv = x + clip_eta(eps * z, norm, eps)
        if clip is not None:
            x_adv = tf.clip_by_value(x_adv, clip[0], clip[1])
        clean = tf.argmax(logits(x), axis=1)
        adv = tf.argmax(logits(x_adv), axis=1)
        return x_adv, clean, adv

    cache[key] = run
    return run
