"""Monotone, slope-restricted activations and their slope bound.

The non-expansive layer ``x -> x - h A^T s(Ax + b)`` is a gradient step on the
convex potential ``1^T gamma(Ax + b)`` with ``gamma' = s``. That needs ``s``
monotone (``s' >= 0``: gamma convex) and slope-restricted (``s' <= L_s``: the
gradient is Lipschitz). Each activation here carries its slope bound ``L_s``;
non-monotone activations (swish, GELU, sin, ...) are rejected because they break
convexity and with it the guarantee.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "SlopeRestrictedActivation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "get",
    "serialize",
    "NON_MONOTONE",
]

#: Names of common activations that are not monotone, and why they are refused.
NON_MONOTONE = {
    "swish": "swish(x) = x sigmoid(x) decreases for x < -1.28",
    "silu": "silu(x) = x sigmoid(x) decreases for x < -1.28",
    "gelu": "gelu(x) = x Phi(x) decreases for x < -0.75",
    "mish": "mish(x) = x tanh(softplus(x)) decreases for x < -1.19",
    "sin": "sin oscillates",
    "cos": "cos oscillates",
}


class SlopeRestrictedActivation:
    """A monotone activation ``s`` with ``0 <= s'(x) <= slope`` for all x.

    Subclasses implement ``__call__`` and set ``name`` and ``slope``. They are
    plain callables, usable wherever Keras expects an activation.
    """

    name: str = "activation"
    slope: float = 1.0

    def __call__(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class ReLU(SlopeRestrictedActivation):
    """``max(x, 0)``; slope bound 1."""

    name, slope = "relu", 1.0

    def __call__(self, x):
        return ops.relu(x)


class _AlphaActivation(SlopeRestrictedActivation):
    """An activation with one parameter ``alpha >= 0`` and slope bound ``max(1, alpha)``."""

    def __init__(self, alpha: float):
        alpha = float(alpha)
        if not alpha >= 0:
            raise ValueError(
                f"Received an invalid value for `alpha` of {self.name}, expected alpha >= 0 "
                f"(a negative alpha makes it non-monotone). Received: alpha={alpha}"
            )
        self.alpha = alpha
        self.slope = max(1.0, alpha)

    def get_config(self):
        return {"alpha": self.alpha}


class LeakyReLU(_AlphaActivation):
    """``max(x, alpha x)`` for ``alpha >= 0``; slope bound ``max(1, alpha)``."""

    name = "leaky_relu"

    def __init__(self, alpha: float = 0.2):
        super().__init__(alpha)

    def __call__(self, x):
        return ops.where(x >= 0, x, self.alpha * x)


class ELU(_AlphaActivation):
    """``x`` for x > 0, ``alpha (exp(x) - 1)`` otherwise; slope bound ``max(1, alpha)``."""

    name = "elu"

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha)

    def __call__(self, x):
        return ops.where(x > 0, x, self.alpha * (ops.exp(ops.minimum(x, 0.0)) - 1.0))


class Tanh(SlopeRestrictedActivation):
    """``tanh``; slope bound 1."""

    name, slope = "tanh", 1.0

    def __call__(self, x):
        return ops.tanh(x)


class Sigmoid(SlopeRestrictedActivation):
    """The logistic sigmoid; slope bound 1/4."""

    name, slope = "sigmoid", 0.25

    def __call__(self, x):
        return ops.sigmoid(x)


class Softplus(SlopeRestrictedActivation):
    """``log(1 + exp(x))``; slope bound 1."""

    name, slope = "softplus", 1.0

    def __call__(self, x):
        return ops.softplus(x)


_BY_NAME = {cls.name: cls for cls in (ReLU, LeakyReLU, ELU, Tanh, Sigmoid, Softplus)}
_ALIASES = {"leakyrelu": "leaky_relu", "leaky-relu": "leaky_relu", "logistic": "sigmoid"}


def get(identifier) -> SlopeRestrictedActivation:
    """Return the slope-restricted activation named or given by ``identifier``.

    Parameters
    ----------
    identifier : str, dict, SlopeRestrictedActivation or Keras activation function
        ``"relu"``, ``"leaky_relu"``, ``"elu"``, ``"tanh"``, ``"sigmoid"``,
        ``"softplus"``; a serialized dict ``{"name": ..., "config": {...}}``;
        an instance; or one of Keras' own functions of those names
        (``keras.activations.relu``).

    Raises
    ------
    ValueError
        For a non-monotone activation (swish, gelu, sin, ...) or an unknown one.

    Examples
    --------
    >>> get("relu").slope
    1.0
    >>> get("sigmoid").slope
    0.25
    """
    if isinstance(identifier, SlopeRestrictedActivation):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("name")
        return _from_name(name, identifier.get("config") or {})
    if isinstance(identifier, str):
        return _from_name(identifier, {})
    if callable(identifier):
        name = getattr(identifier, "__name__", None)
        if name in _BY_NAME or (name or "").lower() in NON_MONOTONE:
            return _from_name(name, {})
        raise ValueError(
            f"Received an activation {identifier!r} whose monotonicity and slope bound "
            f"are unknown. Expected one of {sorted(_BY_NAME)} or a "
            "SlopeRestrictedActivation instance."
        )
    raise ValueError(
        f"Received an invalid activation {identifier!r}. Expected one of {sorted(_BY_NAME)}."
    )


def _from_name(name, config) -> SlopeRestrictedActivation:
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key in NON_MONOTONE:
        raise ValueError(
            f"Received activation={name!r}, which is not monotone ({NON_MONOTONE[key]}): "
            "a non-monotone activation breaks the convexity of the potential, so the "
            f"layer would not be non-expansive. Use one of {sorted(_BY_NAME)}."
        )
    if key not in _BY_NAME:
        raise ValueError(
            f"Received an unknown activation {name!r}. Expected one of {sorted(_BY_NAME)}."
        )
    return _BY_NAME[key](**config)


def serialize(activation: SlopeRestrictedActivation):
    """The JSON-able form that :func:`get` reads back: a name, or a dict with a config."""
    config = activation.get_config()
    if not config:
        return activation.name
    return {"name": activation.name, "config": config}


# Make `keras.activations.get("...")`-style lookups of our objects work when a user
# passes one of them to a plain Keras layer.
for _cls in _BY_NAME.values():
    keras.saving.register_keras_serializable(package="stablekeras")(_cls)
