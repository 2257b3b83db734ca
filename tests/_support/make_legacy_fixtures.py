"""Write the fixtures of tests/data/ that stand for files saved by an older stablekeras.

Run once, with the code whose files the tests must keep loading on the path
(the fixtures in the repository were written by the code of main before the layers
were regrouped by role and the estimators became a package, commit 26faeb8):

    PYTHONPATH=/path/to/old/checkout python tests/_support/make_legacy_fixtures.py tests/data

It writes ``legacy_layers.keras`` (a model with every layer class, saved with its
module paths of then), ``legacy_layers.npz`` (an input and the model's output on
it) and ``legacy_estimators.pkl`` (a fitted classifier and regressor, their data
and predictions).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import keras
import numpy as np

from stablekeras import StableClassifier, StableRegressor
from stablekeras.layers import (
    AntisymmetricDense,
    ContractiveConv2D,
    ContractiveDense,
    HamiltonianDense,
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


def every_layer() -> keras.Sequential:
    """A small model in which every layer class of the package appears once or twice."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            IsometricLift(8, block_size=2),
            NonExpansiveConv2D(4, 3, enforcement="normalize"),
            ContractiveConv2D(4, 3, strong_convexity=0.2),
            SpectralConv2D(8, 1),
            ResidualConv2D(4),
            keras.layers.Flatten(),
            SpectralDense(16),
            NonExpansiveDense(8, enforcement="substeps"),
            ContractiveDense(8),
            OrthogonalDense(16),
            OrthogonalNonExpansiveDense(8),
            AntisymmetricDense(),
            HamiltonianDense(4),
            ResidualDense(8),
            SpectralDense(3),
        ]
    )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = every_layer()
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(out / "legacy_layers.keras")
    np.savez(out / "legacy_layers.npz", x=x, y=y)

    rng = np.random.default_rng(1)
    X = rng.random((60, 6)).astype(np.float32)
    labels = np.where(X[:, 0] > 0.5, "b", "a")
    small = dict(dense_width=8, dense_depth=1, epochs=2, batch_size=16, random_state=0)
    clf = StableClassifier(**small).fit(X, labels)
    reg = StableRegressor(**small).fit(X, X.sum(axis=1))
    with open(out / "legacy_estimators.pkl", "wb") as fh:
        pickle.dump(
            {
                "classifier": clf,
                "regressor": reg,
                "X": X,
                "proba": clf.predict_proba(X),
                "prediction": reg.predict(X),
            },
            fh,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
