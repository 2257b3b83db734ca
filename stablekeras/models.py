"""Architectures assembled from the stable layers, and the whole-network bound.

Two networks, chosen by ``network``:

* ``"certified"`` (the default): every layer has a sound Lipschitz bound of 1,
  so ``lipschitz_bound(model)`` is about 1 and logit margins certify l2 radii.
  For images: :class:`~stablekeras.layers.IsometricLift` (space-to-depth and
  zero channels, an exact isometry, no pooling) -> ``depth`` convolutional
  gradient steps ``x - h A^T s(Ax + b)`` -> flatten -> a dense stage
  (:class:`~stablekeras.layers.OrthogonalDense` to ``dense_width`` units and
  ``dense_depth`` :class:`~stablekeras.layers.OrthogonalNonExpansiveDense` steps)
  -> an orthogonal projection to the outputs. For flat features the network is
  the dense stage and the projection.
* ``"chapter"``: the chapter's network (section 4 of MATH.md): a 1x1
  convolution lift (dense for flat features) and, for images, 2x2 max pooling
  before and after the blocks, ``depth`` blocks, a dense projection. Its lift
  and projection are free unless ``max_norm`` caps them, so its Lipschitz bound
  is the product of their norms and grows in training: it is **not**
  certified at its defaults, however stable its blocks are.

``constraint`` picks the blocks in both: non-expansive gradient steps,
contractive (strongly convex) ones, or ``"none"``, the unconstrained residual
baseline of the same shape, in which every bounded layer is replaced by a free
one (the isometric lift, which has no weights, stays).

``lipschitz_bound(model)`` multiplies sound bounds of the layers of a
sequential model: the blocks contribute 1 (``max(1, ...)`` if their condition
fails), non-overlapping max pooling 1, lift and projection their spectral norms.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import keras
import numpy as np

from stablekeras import _checks
from stablekeras.bounds import layer_bound, lipschitz_bound
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
    "layer_bound",
    "default_block_size",
    "seed_initializers",
    "CONSTRAINTS",
    "NETWORKS",
    "ENFORCEMENTS",
    "NORMALIZATIONS",
]

#: The kinds of block: gradient steps (non-expansive), strongly convex gradient
#: steps (contractive), or the unconstrained residual baseline.
CONSTRAINTS = ("nonexpansive", "contractive", "none")

#: The two architectures (see the module docstring).
NETWORKS = ("certified", "chapter")

#: How the gradient-step blocks keep ``h L ||A||^2 <= 2``: the kernel normalised
#: in the forward pass, projected back after each optimizer step, or adaptive sub-steps.
ENFORCEMENTS = ("normalize", "project", "substeps")

#: The rescalings of ``enforcement="normalize"``: AOL scales or the Gram-iteration bound.
NORMALIZATIONS = ("aol", "gram")


def default_block_size(image_shape: Sequence[int]) -> int:
    """The isometric lift's patch side when ``lift_block_size`` is None.

    The largest of 4, 2 and 1 that divides both height and width and leaves a
    grid of at least 4 x 4 (28 x 28 MNIST: 4, giving 7 x 7; 8 x 8 digits: 2).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    for b in (4, 2):
        if h % b == 0 and w % b == 0 and min(h, w) // b >= 4:
            return b
    return 1


def _block(
    constraint,
    *,
    width,
    kernel_size=None,
    step_size,
    activation,
    integrator,
    enforcement,
    normalization,
    strong_convexity,
    name,
):
    """One block of ``constraint``: convolutional with a ``kernel_size``, dense without."""
    if kernel_size is None:
        shape = (width,)
        residual, contractive, nonexpansive = ResidualDense, ContractiveDense, NonExpansiveDense
    else:
        shape = (width, kernel_size)
        residual, contractive, nonexpansive = (
            ResidualConv2D,
            ContractiveConv2D,
            NonExpansiveConv2D,
        )
    common = dict(step_size=step_size, activation=activation, name=name)
    if constraint == "none":
        return residual(*shape, **common)
    common.update(enforcement=enforcement, normalization=normalization)
    if constraint == "contractive":
        return contractive(*shape, strong_convexity=strong_convexity, **common)
    return nonexpansive(*shape, integrator=integrator, **common)


def _orthogonal_stage(constraint, n_units, depth, *, step_size, activation, strong_convexity):
    """The certified dense stage: an orthogonal map and orthogonal gradient steps.

    With ``constraint="none"``: a free dense map and residual blocks of the same sizes.
    """
    if constraint == "none":
        layers = [SpectralDense(n_units, max_norm=None, name="dense_lift")]
        layers += [
            ResidualDense(
                n_units // 2, step_size=step_size, activation=activation, name=f"dense_block_{i}"
            )
            for i in range(depth)
        ]
        return layers
    mu = strong_convexity if constraint == "contractive" else 0.0
    layers = [OrthogonalDense(n_units, name="dense_lift")]
    layers += [
        OrthogonalNonExpansiveDense(
            n_units // 2,
            activation=activation,
            step_size=step_size,
            strong_convexity=mu,
            name=f"dense_block_{i}",
        )
        for i in range(depth)
    ]
    return layers


def _image_stem(network, constraint, image_shape, width, lift_block_size, max_norm):
    """The lift of an image into the blocks' state, and whether pooling follows the blocks."""
    if network == "certified":
        block = default_block_size(image_shape) if lift_block_size is None else lift_block_size
        if width < block * block * image_shape[2]:
            raise ValueError(
                f"The isometric lift turns each {block}x{block} patch of {image_shape[2]} "
                f"channel(s) into {block * block * image_shape[2]} channels: expected "
                f"width >= {block * block * image_shape[2]} (or a smaller lift_block_size). "
                f"Received: width={width}, lift_block_size={lift_block_size}"
            )
        return [IsometricLift(width, block_size=block, name="lift")], False
    layers = [SpectralConv2D(width, 1, max_norm=max_norm, name="lift")]
    pool = min(image_shape[:2]) >= 4
    if pool:
        layers.append(keras.layers.MaxPooling2D(2, name="pool_lift"))
        pool = min(s // 2 for s in image_shape[:2]) >= 4
    return layers, pool


def _projection(network, constraint, n_outputs, max_norm):
    if network == "certified" and constraint != "none":
        return OrthogonalDense(n_outputs, name="projection")
    return SpectralDense(n_outputs, max_norm=max_norm, name="projection")


def _check_image_shape(image_shape, input_shape):
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 3 or math.prod(image_shape) != math.prod(input_shape):
        raise ValueError(
            f"image_shape={image_shape} does not match the input shape {input_shape}: "
            f"expected (height, width, channels) with {math.prod(input_shape)} values"
        )
    return image_shape


def _check_network_args(
    network, constraint, enforcement, normalization, depth, dense_width, dense_depth,
    lift_block_size, max_norm,
):  # fmt: skip
    """The arguments of :func:`build_network`, each and together."""
    _checks.option(network, NETWORKS, "network")
    _checks.option(constraint, CONSTRAINTS, "constraint")
    _checks.option(enforcement, ENFORCEMENTS, "enforcement")
    _checks.option(normalization, NORMALIZATIONS, "normalization")
    _checks.int_at_least(depth, 0, "depth")
    _checks.int_at_least(dense_width, 2, "dense_width", allow_none=True)
    _checks.int_at_least(dense_depth, 0, "dense_depth")
    _checks.int_at_least(lift_block_size, 1, "lift_block_size", allow_none=True)
    if network == "certified" and max_norm is not None:
        raise ValueError(
            "max_norm caps the lift and projection of network='chapter'; the certified "
            f"network's are orthogonal (norm 1). Received: max_norm={max_norm!r} with "
            "network='certified'"
        )


def _image_stage(
    network, constraint, input_shape, image_shape, width, depth, kernel_size, lift_block_size,
    max_norm, blocks,
) -> list:  # fmt: skip
    """From the flat input to the flat features of the convolutional blocks: reshape, the
    stem (lift, and the chapter's pooling), the blocks, flatten."""
    image_shape = _check_image_shape(image_shape, input_shape)
    layers = []
    if image_shape != input_shape:
        layers.append(keras.layers.Reshape(image_shape, name="to_image"))
    stem, pool = _image_stem(network, constraint, image_shape, width, lift_block_size, max_norm)
    layers += stem
    layers += [
        _block(constraint, width=width, kernel_size=kernel_size, name=f"block_{i}", **blocks)
        for i in range(int(depth))
    ]
    if pool:
        layers.append(keras.layers.MaxPooling2D(2, name="pool_blocks"))
    layers.append(keras.layers.Flatten(name="flatten"))
    return layers


def build_network(
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    network: str = "certified",
    constraint: str = "nonexpansive",
    image_shape: Sequence[int] | None = None,
    width: int = 16,
    depth: int = 2,
    step_size: float = 2.0,
    activation="relu",
    integrator="euler",
    enforcement: str = "normalize",
    normalization: str = "aol",
    kernel_size: int = 3,
    max_norm: float | None = None,
    strong_convexity: float = 0.1,
    lift_block_size: int | None = None,
    dense_width: int | None = 256,
    dense_depth: int = 4,
    name: str | None = None,
    seed: int | None = None,
) -> keras.Sequential:
    """Build the certified or the chapter's network as a ``keras.Sequential``.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one sample as fed to the model (e.g. ``(784,)``).
    n_outputs : int
        Logits (classes) or regression outputs.
    network : {"certified", "chapter"}, default "certified"
        The architecture (module docstring): every layer bounded by 1, or the
        chapter's free lift and projection with pooling.
    constraint : {"nonexpansive", "contractive", "none"}, default "nonexpansive"
        The blocks: :class:`~stablekeras.layers.NonExpansiveDense` / ``Conv2D``
        (and the orthogonal steps of the dense stage), ``Contractive*`` (and
        contractive orthogonal steps), or the unconstrained ``Residual*``
        baseline with free dense layers in place of the orthogonal ones.
    image_shape : tuple (h, w, c), optional
        Reshape each sample to this image and use convolutional blocks.
    width : int, default 16
        Channels of the lifted image and of each convolutional block's ``A``
        (the chapter's network: also the units of its dense blocks).
    depth : int, default 2
        Convolutional blocks (the chapter's network on flat features: dense blocks).
    step_size : float, default 2.0
        ``h`` of each gradient step (the time ``T`` per block with
        ``enforcement="substeps"``).
    activation, integrator, strong_convexity :
        Passed to the blocks.
    enforcement : {"normalize", "project", "substeps"}, default "normalize"
        How the convolutional (and the chapter's dense) blocks keep their
        condition: normalised in the forward pass
        (:meth:`~stablekeras.layers.NonExpansiveConv2D.used_kernel`), projected
        back after each optimizer step, or adaptive sub-steps.
    normalization : {"aol", "gram"}, default "aol"
        The rescaling of ``enforcement="normalize"``: AOL scales (a Schur-test bound,
        no iteration, cheapest) or the Gram-iteration bound (the step on the
        boundary ``h L ||A||^2 = 2`` up to a few percent).
    kernel_size : int, default 3
        Kernel size of the convolutional blocks.
    max_norm : float or None, default None
        The chapter's network: spectral-norm cap of its lift and projection
        (``None``: free). The certified network's are orthogonal: must be None.
    lift_block_size : int or None, default None
        Patch side of the certified network's isometric lift; None picks it
        (:func:`default_block_size`). ``width`` must be at least
        ``lift_block_size**2`` times the image's channels.
    dense_width : int or None, default 256
        Units of the dense stage before the projection (None: no stage).
    dense_depth : int, default 4
        Orthogonal gradient steps of the dense stage, each with a potential of
        ``dense_width // 2`` units.
    name : str, optional
    seed : int or None, default None
        Seeds every random initializer of every layer explicitly (each its own
        seed, derived from ``seed``, the layer's position and the initializer's
        name; see :func:`seed_initializers`), so that the same ``seed`` gives the
        same initial weights in any process or thread. ``None``: Keras draws
        the seeds from Python's global ``random``.

    Examples
    --------
    >>> import numpy as np
    >>> a = build_network((8,), 3, width=4, depth=1, seed=0)
    >>> b = build_network((8,), 3, width=4, depth=1, seed=0)
    >>> all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    True
    """
    _check_network_args(
        network, constraint, enforcement, normalization, depth, dense_width, dense_depth,
        lift_block_size, max_norm,
    )  # fmt: skip
    input_shape = tuple(int(v) for v in input_shape)
    image = image_shape is not None
    blocks = dict(
        step_size=step_size,
        activation=activation,
        integrator=integrator,
        enforcement=enforcement,
        normalization=normalization,
        strong_convexity=strong_convexity,
    )
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape)]
    if image:
        layers += _image_stage(
            network, constraint, input_shape, image_shape, width, depth, kernel_size,
            lift_block_size, max_norm, blocks,
        )  # fmt: skip
    elif network == "chapter":
        layers.append(SpectralDense(width, max_norm=max_norm, name="lift"))
        layers += [
            _block(constraint, width=width, name=f"block_{i}", **blocks) for i in range(int(depth))
        ]
    if dense_width is not None:
        layers += _orthogonal_stage(
            constraint,
            int(dense_width),
            int(dense_depth),
            step_size=step_size,
            activation=activation,
            strong_convexity=strong_convexity,
        )
    layers.append(_projection(network, constraint, n_outputs, max_norm))
    if seed is not None:
        seed_initializers(layers[1:], seed)
    return keras.Sequential(layers, name=name or f"{network}_{constraint}_network")


def seed_initializers(layers: Sequence[keras.layers.Layer], seed: int) -> None:
    """Give every random initializer of not yet built layers its own explicit seed.

    Each attribute ``*_initializer`` of a layer that holds a random Keras
    initializer (``GlorotUniform``, ``Orthogonal``, ...) is replaced by the same
    initializer, same configuration, seeded by a ``keras.random.SeedGenerator``
    started at ``SeedSequence([seed, position, crc32(attribute name)])`` (a
    generator, so that two weights made by one initializer differ). The draws then no
    longer depend on Python's global ``random``, which Keras otherwise reads
    when an unseeded initializer is made (and which other threads, such as a
    dask worker's event loop, also use). Layers keep their public behaviour: the
    initializer's class and parameters are unchanged.

    Parameters
    ----------
    layers : sequence of keras layers
        Not built yet (the seeds act when the weights are made).
    seed : int

    Examples
    --------
    >>> import keras
    >>> from stablekeras.layers import NonExpansiveDense
    >>> layer = NonExpansiveDense(4)
    >>> seed_initializers([layer], 0)
    >>> type(layer.kernel_initializer.seed).__name__
    'SeedGenerator'
    >>> len(layer.weights)  # the generator is no weight of the layer
    0
    """
    for position, layer in enumerate(layers):
        if getattr(layer, "built", False) and layer.weights:
            raise ValueError(
                f"seed_initializers needs layers that are not built yet; {layer.name!r} is"
            )
        for attribute in sorted(vars(layer)):
            initializer = getattr(layer, attribute, None)
            if not attribute.endswith("_initializer") or not isinstance(
                initializer, keras.initializers.Initializer
            ):
                continue
            config = initializer.get_config()
            if "seed" not in config:  # zeros, ones, constants: nothing to seed
                continue
            entropy = [int(seed), position, zlib.crc32(attribute.encode())]
            own = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
            # a generator, not an int: a layer may call one initializer for several
            # weights (ResidualConv2D's two kernels), and an int seed repeats its draws
            config["seed"] = keras.random.SeedGenerator(own)
            setattr(layer, attribute, type(initializer).from_config(config))


def build_nonexpansive_classifier(input_shape, n_classes: int, **kwargs) -> keras.Sequential:
    """The non-expansive classifier: :func:`build_network` with ``constraint="nonexpansive"``.

    Examples
    --------
    >>> model = build_nonexpansive_classifier((64,), 10, dense_width=32, dense_depth=2)
    >>> lipschitz_bound(model) <= 1.0 + 1e-5
    True
    """
    kwargs.setdefault("constraint", "nonexpansive")
    return build_network(input_shape, n_classes, **kwargs)


def build_resnet_classifier(input_shape, n_classes: int, **kwargs) -> keras.Sequential:
    """The unconstrained ResNet baseline of the same shape (``constraint="none"``)."""
    kwargs["constraint"] = "none"
    return build_network(input_shape, n_classes, **kwargs)
