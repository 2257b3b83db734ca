"""Named estimator configurations: the certified defaults, tuned MNIST networks, the chapter's.

A preset is a plain dictionary of flat estimator parameters with a description.
Passing one to an estimator only fills in its ``__init__`` arguments, so
``get_params``, ``clone`` and ``GridSearchCV`` see ordinary flat parameters:

>>> from stablekeras import StableClassifier
>>> from stablekeras.presets import get_preset, list_presets
>>> "chapter" in list_presets()
True
>>> get_preset("chapter")["enforcement"]
'substeps'
>>> clf = StableClassifier.from_preset("chapter", epochs=5)
>>> clf.get_params()["network"], clf.get_params()["epochs"]
('chapter', 5)

Every figure quoted for a preset in the README or ``benchmarks/RESULTS.md`` comes
from the benchmark named in its description.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Preset", "PRESETS", "list_presets", "get_preset", "describe_preset"]

#: Parameters that only the classifier takes (dropped for :class:`~stablekeras.StableRegressor`).
CLASSIFIER_ONLY = frozenset({"loss", "margin", "temperature", "alpha"})


@dataclass(frozen=True)
class Preset:
    """A named set of flat estimator parameters.

    Attributes
    ----------
    name : str
    description : str
        What the configuration is, what it is for, and where its numbers come from.
    params : mapping of str to value
        Keyword arguments of :class:`~stablekeras.StableClassifier`; those in
        ``CLASSIFIER_ONLY`` are left out for :class:`~stablekeras.StableRegressor`.
    """

    name: str
    description: str
    params: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


def _preset(name, description, **params):
    return Preset(name, description, MappingProxyType(params))


#: The certified network at the estimators' defaults (see ``StableClassifier``).
_CERTIFIED = dict(
    network="certified",
    constraint="nonexpansive",
    enforcement="normalize",
    normalization="aol",
    step_size=2.0,
    width=16,
    depth=2,
    kernel_size=3,
    lift_block_size=None,
    dense_width=256,
    dense_depth=4,
    loss="offset_crossentropy",
    margin=3.0,
    temperature=8.0,
    epochs=60,
    batch_size=256,
    learning_rate=1e-2,
    weight_decay=0.0,
)

#: The chapter's network (sub-steps); ``chapter_constraint`` changes only the enforcement.
_CHAPTER = dict(
    network="chapter",
    constraint="nonexpansive",
    enforcement="substeps",
    step_size=0.25,
    width=8,
    depth=4,
    kernel_size=3,
    max_norm=None,
    dense_width=None,
    loss="hinge",
    margin=1.0,
    epochs=15,
    batch_size=128,
    learning_rate=1e-2,
    weight_decay=1e-5,
)

PRESETS: MappingProxyType = MappingProxyType(
    {
        p.name: p
        for p in (
            _preset(
                "certified",
                "The estimators' defaults: every layer bounded by 1 (isometric lift, "
                "normalised convolutional gradient steps on the boundary h L ||A||^2 = 2, "
                "an orthogonal dense stage of gradient steps, an orthogonal projection), "
                "trained with the offset cross-entropy (margin 3, temperature 8). For "
                "flat features the dense stage alone. Measured on MNIST by "
                "`python -m benchmarks.defaults_mnist`.",
                **_CERTIFIED,
            ),
            _preset(
                "certified_mnist",
                "The certified convolutional network for 28x28x1 images, as measured "
                "against deel-lip and GloRo by `python -m benchmarks.certified_mnist` "
                "(CONV_ESTIMATOR_PARAMS): the defaults with image_shape=(28, 28, 1), "
                "trained on images shifted by up to one pixel (random_shift=1; chosen "
                "by `python -m benchmarks.certified_sweep`).",
                **dict(_CERTIFIED, image_shape=(28, 28, 1), random_shift=1),
            ),
            _preset(
                "certified_mnist_dense",
                "The certified dense network of the first comparison with deel-lip "
                "(ESTIMATOR_PARAMS of `python -m benchmarks.certified_mnist`): the 4x4 "
                "isometric lift of a 28x28x1 image straight into the orthogonal dense "
                "stage (784 -> 256 units, four orthogonal gradient steps), no "
                "convolutional blocks; batches of 128 at a learning rate of 5e-3, as "
                "first measured.",
                **dict(
                    _CERTIFIED,
                    image_shape=(28, 28, 1),
                    depth=0,
                    lift_block_size=4,
                    batch_size=128,
                    learning_rate=5e-3,
                ),
            ),
            _preset(
                "chapter",
                "The chapter's network (Ehrhardt, Murari, Sherry 2025; MATH.md section "
                "5): a free 1x1 convolution lift to 8 channels with 2x2 max pooling, "
                "four non-expansive 3x3 blocks integrating T = 1/4 each in adaptive "
                "sub-steps, max pooling and a free dense projection, trained with the "
                "multi-class hinge loss for 15 epochs (the chapter trains 30 on "
                "30,000 Fashion-MNIST images; our MNIST split has 8,000). Its blocks "
                "are non-expansive but its lift and projection are free, so "
                "lipschitz_bound_ is the product of their norms, grows in training, "
                "and certifies little: NOT a certified network. Needs image_shape. "
                "`python -m benchmarks.chapter_mnist`.",
                **_CHAPTER,
            ),
            _preset(
                "chapter_constraint",
                "The chapter's network with one Euler step per block kept inside "
                "h L ||A||^2 <= 2 by a kernel constraint after every optimizer step "
                "(fixed cost, instead of adaptive sub-steps); NOT certified either "
                "(free lift and projection).",
                **dict(_CHAPTER, enforcement="project", step_size=1.0),
            ),
        )
    }
)


def list_presets() -> list[str]:
    """The names of the presets, in the order they are documented."""
    return list(PRESETS)


def _lookup(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(
            f"Received an invalid value for `name`, expected one of {list(PRESETS)}. "
            f"Received: name={name!r}"
        )
    return PRESETS[name]


def get_preset(name: str, *, for_regressor: bool = False) -> dict:
    """A copy of the preset's parameters, ready for ``StableClassifier(**params)``.

    Parameters
    ----------
    name : str
        One of :func:`list_presets`.
    for_regressor : bool, default False
        Leave out the classifier-only parameters (``CLASSIFIER_ONLY``).
    """
    params = copy.deepcopy(dict(_lookup(name).params))
    if for_regressor:
        params = {k: v for k, v in params.items() if k not in CLASSIFIER_ONLY}
    return params


def describe_preset(name: str) -> str:
    """The preset's description followed by its parameters, one per line."""
    preset = _lookup(name)
    lines = [f"{preset.name}: {preset.description}"]
    lines += [f"    {k}={v!r}" for k, v in preset.params.items()]
    return "\n".join(lines)
