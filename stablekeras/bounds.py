"""Sound upper bounds of the l2 Lipschitz constant of layers and of whole networks.

:func:`lipschitz_bound` multiplies the bounds of a sequential model's layers
(:func:`layer_bound`): the stable blocks contribute 1 (``max(1, ...)`` if their
condition fails), non-overlapping max pooling 1, free Dense and Conv2D layers
their spectral norms times their activation's slope. The product is sound
because the Lipschitz constant of a composition is at most the product of its
factors' constants.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from stablekeras import _checks, spectral
from stablekeras import activations as _activations

__all__ = ["layer_bound", "lipschitz_bound"]


def _pool_bound(layer) -> float:
    pool = _checks.pair(layer.pool_size, "pool_size")
    strides = _checks.pair(layer.strides or layer.pool_size, "strides")
    overlap = math.prod(-(-p // s) for p, s in zip(pool, strides))
    if isinstance(layer, keras.layers.MaxPooling2D):
        # each input lies in at most `overlap` windows: ||max pool x||^2 <= overlap ||x||^2
        return math.sqrt(overlap)
    # average pooling: each output is the mean of the c >= c_min inputs of its window,
    # so its square is at most (1 / c_min) times their sum of squares. With "same"
    # padding the border windows hold fewer inputs: Keras averages over those only.
    count = math.prod(pool)
    if layer.padding == "same":
        count = 1
        for n, p, s in zip(layer.input.shape[1:3], pool, strides):
            n_out = -(-n // s)
            count *= min(p, n - (n_out - 1) * s)  # the last window loses the whole padding
    return math.sqrt(overlap / count)


def layer_bound(layer) -> float:
    """A sound upper bound of the l2 Lipschitz constant of one layer.

    The layer's own ``lipschitz_bound()`` for the layers of the package; 1 for
    the layers that move or drop values (Flatten, Reshape, Dropout, Identity);
    the overlap bound for pooling; the spectral norm times the activation's
    slope for Keras' Dense and Conv2D. :func:`lipschitz_bound` multiplies these
    bounds over a network.

    Raises ``ValueError`` naming the layer when it cannot be bounded.

    Examples
    --------
    >>> import keras
    >>> layer_bound(keras.layers.Flatten())
    1.0
    """
    if hasattr(layer, "lipschitz_bound"):
        return float(layer.lipschitz_bound())
    if isinstance(
        layer,
        keras.layers.InputLayer
        | keras.layers.Flatten
        | keras.layers.Reshape
        | keras.layers.Dropout
        | keras.layers.Identity,
    ):
        return 1.0
    if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
        return _pool_bound(layer)
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        h, w = layer.input.shape[1:3]
        return 1.0 / math.sqrt(h * w)
    if isinstance(layer, keras.layers.Rescaling):
        return float(np.max(np.abs(np.asarray(layer.scale, dtype=np.float64))))
    if isinstance(layer, keras.layers.Activation):
        return _activations.get(layer.activation).slope
    if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
        act = layer.activation
        slope = 1.0 if act is keras.activations.linear else _activations.get(act).slope
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        if isinstance(layer, keras.layers.Dense):
            return spectral.dense_norm(kernel) * slope
        if layer.dilation_rate not in ((1, 1), 1) or layer.groups != 1:
            raise ValueError(
                f"lipschitz_bound cannot bound the dilated or grouped convolution {layer.name!r}"
            )
        return (
            spectral.conv2d_norm_bound(kernel, layer.input.shape[1:3], layer.strides, layer.padding)
            * slope
        )
    raise ValueError(
        f"lipschitz_bound cannot bound layer {layer.name!r} of type {type(layer).__name__}: "
        "expected stablekeras layers, Dense/Conv2D with a monotone activation, pooling, "
        "Flatten, Reshape or Dropout"
    )


def lipschitz_bound(model: keras.Model) -> float:
    """A sound upper bound of the l2 Lipschitz constant of a sequential model.

    The product of the layers' sound bounds. Raises ``ValueError`` for a model
    that is not a chain of layers or for a layer it cannot bound.

    Examples
    --------
    >>> from stablekeras.models import build_nonexpansive_classifier
    >>> model = build_nonexpansive_classifier((4,), 3, dense_width=8, dense_depth=1)
    >>> lipschitz_bound(model) <= 1.0 + 1e-5
    True
    """
    if not isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        for prev, layer in zip(layers, layers[1:]):
            if len(layer._inbound_nodes) != 1 or layer.input is not prev.output:
                raise ValueError(
                    f"lipschitz_bound needs a chain of layers; layer {layer.name!r} of model "
                    f"{model.name!r} does not take the previous layer's output"
                )
    else:
        layers = model.layers
    bound = 1.0
    for layer in layers:
        try:
            bound *= layer_bound(layer)
        except ValueError as err:
            if f"{layer.name!r}" in str(err):
                raise
            raise ValueError(
                f"lipschitz_bound cannot bound layer {layer.name!r} of type "
                f"{type(layer).__name__}: {err}"
            ) from err
    return float(bound)
