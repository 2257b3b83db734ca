"""Argument checks shared by the modules of the package.

Each check returns the value it accepts, normalised (an ``int``, a ``float``, a
pair), or raises a ``ValueError`` in Keras' words, naming the argument, what was
expected and what was received::

    Received an invalid value for `units`, expected a positive integer. Received: units=0

The module is private (its names are not part of the API), but its names are
public within the package: every module imports them from here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection

import numpy as np


def invalid(name: str, expected: str, value) -> ValueError:
    """The error for ``name=value`` when ``expected`` was expected."""
    return ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


def is_int(value) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(value, name: str) -> int:
    """``value`` as an ``int`` > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid(name, "a positive integer", value)
    return int(value)


def positive_float(value, name: str) -> float:
    """``value`` as a finite ``float`` > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (v > 0 and v < float("inf")):
        raise invalid(name, "a positive finite number", value)
    return v


def int_at_least(value, minimum: int, name: str, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` >= ``minimum`` (or None when ``allow_none``)."""
    if allow_none and value is None:
        return None
    if is_int(value) and value >= minimum:
        return int(value)
    raise invalid(name, f"{'None or ' if allow_none else ''}an integer >= {minimum}", value)


def option(value, options: Collection, name: str):
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise invalid(name, f"one of {options}", value)
    return value


def finite_at_least_zero(value, name: str) -> float:
    """``value`` as a finite ``float`` >= 0 (a radius)."""
    if not is_real(value):
        raise invalid(name, "a number >= 0", value)
    if not (math.isfinite(float(value)) and value >= 0):
        raise invalid(name, "a finite number >= 0", value)
    return float(value)


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints, each >= 1, as a pair (kernel sizes, strides, pool sizes)."""
    if isinstance(value, int | np.integer):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive integer or a "
            f"pair of them. Received: {name}={value}"
        )
    return value


def padding(value: str) -> str:
    """``"same"`` or ``"valid"`` (any case), as TensorFlow spells it: ``"SAME"``, ``"VALID"``."""
    p = str(value).upper()
    if p not in ("SAME", "VALID"):
        raise ValueError(
            "Received an invalid value for `padding`, expected 'same' or 'valid'. "
            f"Received: padding={value!r}"
        )
    return p
