"""Small file and text helpers shared by the command line and the demo (no TensorFlow)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


def dump_pickle(obj, path: str | os.PathLike) -> None:
    """Pickle ``obj`` to ``path`` via a temporary file, so a failure leaves no torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def format_bound(value) -> str:
    """A Lipschitz bound in four significant digits, ``-`` for none."""
    return "-" if value is None else f"{value:.4g}"
