"""The project's real-data split: MNIST test set from ../shared/data/mnist-t10k.

First 8,000 images for training, last 2,000 held out; pixels in [0, 1].
Benchmarks, tutorials and slow tests read it; the library does not.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(
    os.environ.get("STABLEKERAS_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist-t10k")
)


def mnist_available() -> bool:
    return (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists()


def load_mnist_t10k(directory: Path | str = MNIST_DIR):
    """``(X_train, y_train, X_test, y_test)``: flat float32 pixels in [0, 1], int64 labels."""
    directory = Path(directory)
    with gzip.open(directory / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(directory / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64)
    X = images.astype(np.float32) / 255.0
    return X[:8000], labels[:8000], X[8000:], labels[8000:]
