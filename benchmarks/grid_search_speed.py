"""Grid search with ``n_jobs=2`` against ``n_jobs=1``: does the search scale with the cores?

An 8-candidate ``GridSearchCV`` of :class:`~stablekeras.StableClassifier` on
scikit-learn's digits (3-fold, so 24 fits), run with ``n_jobs=1`` (in this
process, TensorFlow using every core) and with ``n_jobs=2`` (two joblib
workers; ``n_threads=None`` gives each TensorFlow ``cpu_count() // 2`` threads,
so the two fits side by side do not oversubscribe the cores), alternately, in
several pairs. Both are warmed up first (the workers started, TensorFlow
imported there). The speedup of a pair is ``time(n_jobs=1) / time(n_jobs=2)``;
the median, min and max over the pairs are reported, with whether both
searches pick the same parameters and rank all candidates alike, and how far
their mean test scores are apart, and how many cores each search kept busy
(machine-wide CPU time over wall time, from ``/proc/stat``: the ``n_jobs=1``
search's fits use more than one core themselves, which bounds what two
workers can gain). It also counts loky's warnings that a worker stopped
mid-search (a worker that has grown by 300 MB is replaced, and imports
TensorFlow again). The target on 2 cores is a median speedup of at least
1.6.

Run from the repository root, on a machine with nothing else running::

    python -m benchmarks.grid_search_speed [--pairs 5] [--quick]

It prints a table and writes ``benchmarks/results/grid_search_speed.json``.
``--quick`` (a 2-candidate grid, 2 folds, 1 epoch on 300 rows, one pair, no
warm-up) only checks that it runs; the test suite uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._results import start, write_result  # noqa: E402

#: The estimator's settings and the grid (2 x 2 x 2 = 8 candidates): the default
#: (certified) network on the digits as 8x8 images, where `width` sets the channels
#: of its convolutional gradient steps.
FIT = dict(image_shape=(8, 8, 1), depth=2, epochs=10, batch_size=64, random_state=0)
GRID = {"step_size": [0.5, 1.0], "width": [8, 16], "learning_rate": [0.01, 0.03]}
QUICK_FIT = dict(dense_width=32, dense_depth=1, epochs=1, batch_size=100, random_state=0)
QUICK_GRID = {"step_size": [0.5, 1.0]}


def _data(quick: bool):
    from stablekeras import datasets

    X, y = datasets.load_dataset("digits")
    return (X[:300], y[:300]) if quick else (X, y)


def _busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (Linux ``/proc/stat``), else None.

    Measured machine-wide because the ``n_jobs=2`` search runs in joblib's worker
    processes; the benchmark asks for a machine with nothing else running.
    """
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _search(X, y, n_jobs: int, quick: bool):
    from sklearn.model_selection import GridSearchCV

    from stablekeras import StableClassifier

    search = GridSearchCV(
        StableClassifier(**(QUICK_FIT if quick else FIT)),
        QUICK_GRID if quick else GRID,
        cv=2 if quick else 3,
        n_jobs=n_jobs,
        refit=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        busy = _busy_seconds()
        start = time.perf_counter()
        search.fit(X, y)
        seconds = time.perf_counter() - start
        after = _busy_seconds()
    # loky's manager thread warns when a worker stopped (and was replaced) mid-search
    restarts = sum("A worker stopped" in str(w.message) for w in caught)
    cores = None if busy is None or after is None else (after - busy) / seconds
    return seconds, search, restarts, cores


def _worker_pools(n_jobs: int):
    """TensorFlow's pool sizes in the joblib workers, after a fit there (public getters)."""
    import joblib

    def pools():
        import tensorflow as tf

        threading = tf.config.threading
        return (
            os.getpid(),
            threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads(),
        )

    reports = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(pools)() for _ in range(4 * n_jobs))
    return [list(p) for p in sorted({(intra, inter) for _, intra, inter in reports})]


def _agreement(one, two) -> dict:
    """Do the two searches of a pair choose and rank alike, and how close are their scores?

    A fit with two threads sums in another order than a fit with one, so the
    scores may differ by a test row, and candidates that tie in one search may
    not in the other: the pairs with the same full ranking are counted beside the choice.
    """
    a, b = (np.asarray(s.cv_results_["mean_test_score"]) for s in (one, two))
    return {
        "same_best_candidate": int(np.argmin(one.cv_results_["rank_test_score"]))
        == int(np.argmin(two.cv_results_["rank_test_score"])),
        "same_ranking": one.cv_results_["rank_test_score"].tolist()
        == two.cv_results_["rank_test_score"].tolist(),
        "mean_test_score_max_abs_difference": float(np.max(np.abs(a - b))),
    }


def measure(pairs: int = 5, quick: bool = False) -> dict:
    """Time the two searches in alternating pairs; return the JSON row."""
    from joblib.externals.loky import get_reusable_executor

    # fresh joblib workers: a reused one that already ran TensorFlow keeps its pools
    get_reusable_executor().shutdown(wait=True)
    X, y = _data(quick)
    searches = {}
    if not quick:  # warm-up: start the workers, import TensorFlow there
        _search(X, y, 2, quick)
        _search(X, y, 1, quick)
    seconds, cores, agreement, restarts = [], [], [], 0
    for i in range(pairs):
        order = (1, 2) if i % 2 == 0 else (2, 1)  # alternate which goes first
        times, busy = {}, {}
        for n_jobs in order:
            times[n_jobs], searches[n_jobs], stopped, busy[n_jobs] = _search(X, y, n_jobs, quick)
            restarts += stopped if n_jobs == 2 else 0
        seconds.append((times[1], times[2]))
        cores.append((busy[1], busy[2]))
        agreement.append(_agreement(searches[1], searches[2]))
    speedups = [a / b for a, b in seconds]
    return {
        "candidates": len(searches[1].cv_results_["params"]),
        "folds": searches[1].n_splits_,
        "rows": int(len(X)),
        "estimator": QUICK_FIT if quick else FIT,
        "pairs_seconds_jobs1_jobs2": [[round(a, 3), round(b, 3)] for a, b in seconds],
        "pairs_cores_busy_jobs1_jobs2": [
            [None if c is None else round(c, 3) for c in pair] for pair in cores
        ],
        "speedup": {
            "median": float(np.median(speedups)),
            "min": float(np.min(speedups)),
            "max": float(np.max(speedups)),
        },
        "same_best_candidate": all(a["same_best_candidate"] for a in agreement),
        "same_ranking_pairs": sum(a["same_ranking"] for a in agreement),
        "mean_test_score_max_abs_difference": max(
            a["mean_test_score_max_abs_difference"] for a in agreement
        ),
        "worker_thread_pools_intra_inter": _worker_pools(2),
        "worker_restarts_during_n_jobs_2": restarts,
    }


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)
    record = start(__file__, argv)
    row = measure(pairs=1 if args.quick else args.pairs, quick=args.quick)
    q = row["speedup"]
    a, b = np.median(np.array(row["pairs_seconds_jobs1_jobs2"]), axis=0)
    busy = np.array(row["pairs_cores_busy_jobs1_jobs2"], dtype=float)  # None -> nan
    c1, c2 = np.median(busy, axis=0)
    print(
        "| candidates x folds | n_jobs=1 (s) | n_jobs=2 (s) | speedup median | min | max "
        "| cores busy n_jobs=1 | n_jobs=2 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {row['candidates']} x {row['folds']} | {a:.1f} | {b:.1f} | {q['median']:.2f} "
        f"| {q['min']:.2f} | {q['max']:.2f} | {c1:.2f} | {c2:.2f} |"
    )
    result = {"quick": bool(args.quick), "target_speedup_2_cores": 1.6, **row}
    path = write_result(record, result, args.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
