"""Architectures assembled from the stable layers, and the whole-network bound.

Every network is lift -> blocks -> (1-Lipschitz pooling) -> projection, as in
section 4 of the chapter. For images (``image_shape`` given) the lift is a 1x1
convolution followed by 2x2 max pooling, the blocks are convolutional, and a
second 2x2 max pooling and a flatten precede the dense projection; for flat
features everything is dense.

``lipschitz_bound(model)`` multiplies sound bounds of the layers of a
sequential model: the blocks contribute 1 (``max(1, ...)`` if their condition
fails), non-overlapping max pooling 1, lift and projection their spectral norms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from stablekeras import activations as _activations
from stablekeras import spectral
from stablekeras.layers import (
    ContractiveConv2D,
    ContractiveDense,
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

__all__ = [
    "build_network",
    "build_nonexpansive_classifier",
    "build_resnet_classifier",
    "lipschitz_bound",
    "CONSTRAINTS",
]

#: The kinds of block: gradient steps (non-expansive), strongly convex gradient
#: steps (contractive), or the unconstrained residual baseline.
CONSTRAINTS = ("nonexpansive", "contractive", "none")

#: The lifts into the blocks: a 1x1 spectral-norm convolution (dense layer for
#: flat inputs) followed, for images, by 2x2 max pooling; or, for images, the
#: isometric space-to-depth lift with zero channels (no pooling anywhere).
LIFTS = ("conv", "isometric")

#: The projections to the outputs: a dense layer with a spectral-norm cap
#: (``max_norm``), or one with an orthonormalised kernel (Lipschitz 1, every
#: singular value 1).
PROJECTIONS = ("spectral", "orthogonal")


def _is_int_at_least(value, minimum) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= minimum


def _check_option(value, options, name):
    if value not in options:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected one of {options}. "
            f"Received: {name}={value!r}"
        )


def _block(
    constraint,
    image,
    width,
    kernel_size,
    step_size,
    activation,
    integrator,
    mode,
    strong_convexity,
    name,
):
    common = dict(step_size=step_size, activation=activation, name=name)
    if constraint == "none":
        if image:
            return ResidualConv2D(width, kernel_size, **common)
        return ResidualDense(width, **common)
    common.update(mode=mode)
    if constraint == "contractive":
        common.update(strong_convexity=strong_convexity)
        if image:
            return ContractiveConv2D(width, kernel_size, **common)
        return ContractiveDense(width, **common)
    common.update(integrator=integrator)
    if image:
        return NonExpansiveConv2D(width, kernel_size, **common)
    return NonExpansiveDense(width, **common)


def build_network(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    constraint: str = "nonexpansive",
    image_shape: Sequence[int] | None = None,
    width: int = 16,
    depth: int = 4,
    step_size: float = 1.0,
    activation="relu",
    integrator="euler",
    mode: str = "constraint",
    kernel_size: int = 3,
    max_norm: float | None = None,
    strong_convexity: float = 0.1,
    lift: str = "conv",
    lift_block_size: int = 2,
    dense_width: int | None = None,
    dense_depth: int = 0,
    projection: str = "spectral",
    name: str | None = None,
) -> keras.Sequential:
    """Build lift -> ``depth`` blocks -> pooling -> projection as a ``keras.Sequential``.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one sample as fed to the model (e.g. ``(784,)``).
    n_outputs : int
        Logits (classes) or regression outputs.
    constraint : {"nonexpansive", "contractive", "none"}
        The block: :class:`~stablekeras.layers.NonExpansiveDense` /
        ``Conv2D``, ``Contractive*``, or the plain ``Residual*`` baseline.
    image_shape : tuple (h, w, c), optional
        Reshape each sample to this image and use the convolutional network.
    width : int
        Channels (units) of the lift and of each block's ``A``.
    depth : int
        Number of blocks (>= 0).
    step_size, activation, integrator, mode, strong_convexity :
        Passed to the blocks.
    kernel_size : int
        Kernel size of the convolutional blocks.
    max_norm : float or None
        Spectral-norm cap of the lift and the projection (``None``: free).
        ``max_norm=1`` with non-expansive blocks gives a 1-Lipschitz network.
    lift : {"conv", "isometric"}, default "conv"
        ``"conv"``: the 1x1 convolution (``max_norm``) and, for images, 2x2 max
        pooling before and after the blocks. ``"isometric"`` (images only):
        :class:`~stablekeras.layers.IsometricLift`, space-to-depth by
        ``lift_block_size`` and zero channels up to ``width``, an exact isometry;
        no pooling follows the blocks.
    lift_block_size : int, default 2
        Patch side of the isometric lift; ``width`` must be at least
        ``lift_block_size**2`` times the image's channels.
    dense_width : int or None, default None
        If given, a dense stage between the flatten and the projection: an
        :class:`~stablekeras.layers.OrthogonalDense` map to ``dense_width`` units
        (Lipschitz 1) followed by ``dense_depth``
        :class:`~stablekeras.layers.OrthogonalNonExpansiveDense` steps with
        potentials of ``dense_width // 2`` units (non-expansive, norm preserving).
    dense_depth : int, default 0
        Orthogonal non-expansive steps of the dense stage.
    projection : {"spectral", "orthogonal"}, default "spectral"
        ``"spectral"``: :class:`~stablekeras.layers.SpectralDense` capped at
        ``max_norm``; ``"orthogonal"``: :class:`~stablekeras.layers.OrthogonalDense`
        (Lipschitz 1 whatever ``max_norm``).
    """
    _check_option(lift, LIFTS, "lift")
    _check_option(projection, PROJECTIONS, "projection")
    if dense_width is not None and not _is_int_at_least(dense_width, 2):
        raise ValueError(
            "Received an invalid value for `dense_width`, expected None or an integer >= 2. "
            f"Received: dense_width={dense_width!r}"
        )
    if not _is_int_at_least(dense_depth, 0):
        raise ValueError(
            "Received an invalid value for `dense_depth`, expected an integer >= 0. "
            f"Received: dense_depth={dense_depth!r}"
        )
    if lift == "isometric" and image_shape is None:
        raise ValueError(
            "lift='isometric' rearranges image patches and needs `image_shape`; "
            "flat inputs use lift='conv' (a dense lift)"
        )
    if constraint not in CONSTRAINTS:
        raise ValueError(
            f"Received an invalid value for `constraint`, expected one of {CONSTRAINTS}. "
            f"Received: constraint={constraint!r}"
        )
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 0:
        raise ValueError(
            "Received an invalid value for `depth`, expected an integer >= 0. "
            f"Received: depth={depth!r}"
        )
    input_shape = tuple(int(v) for v in input_shape)
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape)]
    image = image_shape is not None
    if image:
        image_shape = tuple(int(v) for v in image_shape)
        if len(image_shape) != 3 or math.prod(image_shape) != math.prod(input_shape):
            raise ValueError(
                f"image_shape={image_shape} does not match the input shape {input_shape}: "
                f"expected (height, width, channels) with {math.prod(input_shape)} values"
            )
        if image_shape != input_shape:
            layers.append(keras.layers.Reshape(image_shape, name="to_image"))
        spatial = list(image_shape[:2])
        if lift == "isometric":
            layers.append(IsometricLift(width, block_size=lift_block_size, name="lift"))
            spatial = [0, 0]  # no pooling after the blocks
        else:
            layers.append(SpectralConv2D(width, 1, max_norm=max_norm, name="lift"))
            if min(spatial) >= 4:
                layers.append(keras.layers.MaxPooling2D(2, name="pool_lift"))
                spatial = [s // 2 for s in spatial]
    else:
        layers.append(SpectralDense(width, max_norm=max_norm, name="lift"))
    for i in range(int(depth)):
        layers.append(
            _block(
                constraint,
                image,
                width,
                kernel_size,
                step_size,
                activation,
                integrator,
                mode,
                strong_convexity,
                name=f"block_{i}",
            )
        )
    if image:
        if min(spatial) >= 4:
            layers.append(keras.layers.MaxPooling2D(2, name="pool_blocks"))
        layers.append(keras.layers.Flatten(name="flatten"))
    if dense_width is not None:
        layers.append(OrthogonalDense(int(dense_width), name="dense_lift"))
        for i in range(int(dense_depth)):
            layers.append(
                OrthogonalNonExpansiveDense(
                    int(dense_width) // 2, activation=activation, name=f"dense_block_{i}"
                )
            )
    if projection == "orthogonal":
        layers.append(OrthogonalDense(n_outputs, name="projection"))
    else:
        layers.append(SpectralDense(n_outputs, max_norm=max_norm, name="projection"))
    return keras.Sequential(layers, name=name or f"{constraint}_network")


def build_nonexpansive_classifier(input_shape, n_classes: int, **kwargs) -> keras.Sequential:
    """The non-expansive classifier: :func:`build_network` with ``constraint="nonexpansive"``.

    Examples
    --------
    >>> model = build_nonexpansive_classifier((64,), 10, width=8, depth=2, max_norm=1.0)
    >>> lipschitz_bound(model) <= 1.0
    True
    """
    kwargs.setdefault("constraint", "nonexpansive")
    return build_network(input_shape, n_classes, **kwargs)


def build_resnet_classifier(input_shape, n_classes: int, **kwargs) -> keras.Sequential:
    """The unconstrained ResNet baseline of the same shape (``constraint="none"``)."""
    kwargs["constraint"] = "none"
    return build_network(input_shape, n_classes, **kwargs)


def _pool_bound(layer) -> float:
    pool = spectral._pair(layer.pool_size, "pool_size")
    strides = spectral._pair(layer.strides or layer.pool_size, "strides")
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


def _layer_bound(layer) -> float:
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
    >>> model = build_nonexpansive_classifier((4,), 3, width=4, depth=1, max_norm=1.0)
    >>> lipschitz_bound(model) <= 1.0
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
        bound *= _layer_bound(layer)
    return float(bound)
