"""Measure the performance levers of the non-expansive conv block, one at a time.

``python -m benchmarks.levers`` times one epoch of ``model.fit`` on 4,000 MNIST
images for the estimator's default convolutional network under each lever,
interleaved with the reference configuration (``tf.nn.conv2d_transpose``
adjoint, no XLA, constraints on) in the same process (ratios, not
absolute times). Writes ``benchmarks/results/levers.json``.

Levers:
- ``adjoint=flipped``: ``A^T`` as a convolution with the flipped, channel-swapped
  kernel instead of ``tf.nn.conv2d_transpose``.
- ``jit_compile``: XLA for the train step.
- ``no_constraint``: the same network without the kernel constraints (what the
  in-graph Gram bound costs per optimizer step; not a usable setting).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import keras

from benchmarks import _results
from benchmarks._data import load_mnist_t10k
from stablekeras.layers._operators import ConvOperator
from stablekeras.models import build_network

RESULTS = Path(__file__).resolve().parent / "results"


def _epoch_seconds(X, y, *, adjoint="transpose", jit=False, constraint=True, repeats=1):
    default = ConvOperator.adjoint_method
    ConvOperator.adjoint_method = adjoint
    keras.utils.set_random_seed(0)
    model = build_network((784,), 10, image_shape=(28, 28, 1), width=16, depth=4)
    if not constraint:
        for layer in model.layers:
            if getattr(layer, "kernel", None) is not None:
                layer.kernel.constraint = None
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit
    )
    model.fit(X[:256], y[:256], batch_size=128, epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(X, y, batch_size=128, epochs=repeats, verbose=0)
    ConvOperator.adjoint_method = default
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="training images")
    parser.add_argument("--repeats", type=int, default=3, help="pairs per lever")
    parser.add_argument("--out", type=Path, default=RESULTS / "levers.json")
    run = _results.start(__file__, argv)
    args = parser.parse_args(argv)
    X, y, _, _ = load_mnist_t10k()
    X, y = X[: args.n], y[: args.n]
    levers = {
        "adjoint=flipped": dict(adjoint="flipped"),
        "jit_compile": dict(jit=True),
        "adjoint=flipped + jit_compile": dict(adjoint="flipped", jit=True),
        "no_constraint": dict(constraint=False),
    }
    out = {"n_images": args.n, "levers": {}}
    for name, kw in levers.items():
        ratios = []
        for _ in range(args.repeats):
            ref = _epoch_seconds(X, y)
            ratios.append(_epoch_seconds(X, y, **kw) / ref)
        out["levers"][name] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "values": ratios,
        }
        print(
            f"{name:32s} time / reference: median {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})",
            flush=True,
        )
    print(f"wrote {_results.write_result(run, out, args.out)}")
    return out


if __name__ == "__main__":
    main()
