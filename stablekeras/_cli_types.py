"""The argument types of the command line: each parses one option's text or raises
:class:`argparse.ArgumentTypeError` naming the bad value and what was expected."""

from __future__ import annotations

import argparse
import math


def eps_list(text: str) -> list[float]:
    """``"0,0.1,0.3"`` -> ``[0.0, 0.1, 0.3]``: finite radii >= 0."""
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid eps list {text!r}: {item.strip()!r} is not a number "
                "(expected comma-separated radii such as 0,0.1,0.3)"
            ) from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(
                f"invalid eps list {text!r}: radii must be finite and >= 0, got {item.strip()}"
            )
        values.append(value)
    return values


def image_shape(text: str) -> tuple[int, int, int]:
    """``"8,8,1"`` -> ``(8, 8, 1)``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid image shape {text!r}: expected three positive integers H,W,C such as 8,8,1"
        )
    return shape


def max_norm(text: str) -> float | None:
    """``"none"`` -> None, else a float (the estimator checks that it is > 0)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid max norm {text!r}: expected a number > 0 or 'none'"
        ) from None


def positive_int(text: str) -> int:
    """``"3"`` -> 3; zero, negatives and non-integers are refused."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
