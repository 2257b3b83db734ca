"""What one fit costs a process: memory kept after each fit, and cores used by a one-thread fit.

Two questions behind the grid-search speedup (``grid_search_speed.py``):

* **memory**: a fresh process fits the grid's network several times in a row and
  reports its resident memory after each fit (after a garbage collection), once
  with the estimators' Adam (``stablekeras.estimators._optimizers``) and once with
  Keras' own Adam in its place. Keras' Adam keeps every traced train step in TensorFlow's gradient
  registry; a loky worker that grows by 300 MB is replaced.
* **cores**: fresh processes fit the network with ``n_threads=1``, alone and two side
  by side, and one with ``n_threads=2`` alone. Each reports its wall time and its CPU
  time (user + system, all threads), so ``cpu / wall`` says how many cores it kept
  busy.
* **BLAS threads**: small fits (one epoch of 2 batches, which run eagerly, and whose
  bound takes exact SVDs in NumPy and SciPy) with ``n_threads=1``, alone and two side
  by side, once as the estimators run them (NumPy's and SciPy's BLAS pools held to
  ``n_threads`` during the fit, ``stablekeras._threads.blas_threads``) and once
  with that limit taken out (the BLAS pools at every core, as before).

Run from the repository root, on a machine with nothing else running::

    python -m benchmarks.fit_processes [--fits 6] [--quick]

It prints two tables and writes ``benchmarks/results/fit_processes.json``.
``--quick`` (2 fits of 1 epoch on 300 rows) only checks that it runs; the test
suite uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks._results import start, write_result

#: The grid-search benchmark's network (one of its candidates).
FIT = dict(image_shape=(8, 8, 1), depth=2, epochs=10, batch_size=64, width=16, random_state=0)
QUICK_FIT = dict(image_shape=(8, 8, 1), depth=1, width=8, epochs=1, batch_size=64, random_state=0)
#: The small fits of the BLAS comparison: the same network, 128 rows, one epoch (eager).
SMALL_FIT = dict(FIT, epochs=1)
SMALL_ROWS = 128
MODES = ("ours", "keras_adam", "small", "small_blas_unbounded")


def _child(mode: str, fits: int, n_threads: int, quick: bool) -> dict:
    """Run in a fresh interpreter: ``fits`` fits, then what the parent records."""
    import gc
    import resource

    import psutil

    from stablekeras import StableClassifier, _threads, datasets
    from stablekeras.estimators import _optimizers

    if mode == "keras_adam":
        import keras

        _optimizers.Adam = keras.optimizers.Adam  # this process only
    if mode == "small_blas_unbounded":
        import contextlib

        _threads.blas_threads = lambda n_threads: contextlib.nullcontext()  # this process only
    X, y = datasets.load_dataset("digits")
    if mode.startswith("small"):
        X, y = X[:SMALL_ROWS], y[:SMALL_ROWS]
        params = {**SMALL_FIT, "n_threads": n_threads}
    else:
        X, y = (X[:300], y[:300]) if quick else (X[:1198], y[:1198])
        params = {**(QUICK_FIT if quick else FIT), "n_threads": n_threads}
    process = psutil.Process()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    rss = []
    for _ in range(fits):
        StableClassifier(**params).fit(X, y)
        gc.collect()  # what is still referenced, as loky's check measures it
        rss.append(round(process.memory_info().rss / 2**20, 1))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rss_mib_after_each_fit": rss,
        "wall_s": round(time.perf_counter() - wall0, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0, 3),
    }


def _spawn(mode: str, fits: int, n_threads: int, quick: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "benchmarks.fit_processes", "--child", mode]
    argv += ["--fits", str(fits), "--threads", str(n_threads)] + (["--quick"] if quick else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.Popen(argv, env=env, **pipes)


def _collect(*procs) -> list[dict]:
    found = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"a child fit failed:\n{err[-3000:]}")
        found.append(json.loads(out.strip().splitlines()[-1]))
    return found


def _cores(run: dict) -> dict:
    return {**run, "cores_busy": round(run["cpu_s"] / run["wall_s"], 3)}


def _alone_and_pair(mode: str, fits: int, quick: bool) -> tuple[dict, list[dict]]:
    """One process alone, then two side by side (both started, then awaited)."""
    alone = _cores(_collect(_spawn(mode, fits, 1, quick))[0])
    pair = [_spawn(mode, fits, 1, quick) for _ in range(2)]
    return alone, [_cores(r) for r in _collect(*pair)]


def _slowdown(alone: dict, side_by_side: list[dict]) -> float:
    return round(sum(r["wall_s"] for r in side_by_side) / 2 / alone["wall_s"], 3)


def measure(fits: int, quick: bool, small_fits: int) -> dict:
    memory = {mode: _collect(_spawn(mode, fits, 1, quick))[0] for mode in ("ours", "keras_adam")}
    alone, side_by_side = _alone_and_pair("ours", fits, quick)
    two_threads = _cores(_collect(_spawn("ours", fits, 2, quick))[0])
    blas = {}
    for name, mode in (("bounded", "small"), ("unbounded", "small_blas_unbounded")):
        small_alone, small_pair = _alone_and_pair(mode, small_fits, quick)
        blas[name] = {
            "alone": small_alone,
            "two_side_by_side": small_pair,
            "slowdown_side_by_side": _slowdown(small_alone, small_pair),
        }
    return {
        "fits_per_process": fits,
        "estimator": json.loads(json.dumps(QUICK_FIT if quick else FIT)),  # as written
        "memory": {
            mode: {
                "rss_mib_after_each_fit": run["rss_mib_after_each_fit"],
                "growth_mib_after_first_fit": round(
                    run["rss_mib_after_each_fit"][-1] - run["rss_mib_after_each_fit"][0], 1
                ),
            }
            for mode, run in memory.items()
        },
        "cores": {
            "one_thread_alone": alone,
            "one_thread_two_side_by_side": side_by_side,
            "two_threads_alone": two_threads,
            "slowdown_side_by_side": _slowdown(alone, side_by_side),
            "gain_of_the_second_thread": round(alone["wall_s"] / two_threads["wall_s"], 3),
        },
        "blas_threads": {
            "fits_per_process": small_fits,
            "rows": SMALL_ROWS,
            "estimator": json.loads(json.dumps(SMALL_FIT)),
            **blas,
            "side_by_side_unbounded_over_bounded": round(
                sum(r["wall_s"] for r in blas["unbounded"]["two_side_by_side"])
                / sum(r["wall_s"] for r in blas["bounded"]["two_side_by_side"]),
                3,
            ),
        },
    }


def main(argv=None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=6)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    parser.add_argument("--small-fits", type=int, default=20)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.fits, args.threads, args.quick)))
        return None
    record = start(__file__, argv)
    fits = 2 if args.quick else args.fits
    row = measure(fits, args.quick, 2 if args.quick else args.small_fits)
    print("| optimizer | resident MiB after each fit | growth after the first |")
    print("|---|---|---|")
    for mode, m in row["memory"].items():
        print(f"| {mode} | {m['rss_mib_after_each_fit']} | {m['growth_mib_after_first_fit']} |")
    c = row["cores"]
    print("| processes | wall (s) | cpu (s) | cores busy |")
    print("|---|---|---|---|")
    runs = [("n_threads=1 alone", c["one_thread_alone"])]
    for i, r in enumerate(c["one_thread_two_side_by_side"], 1):
        runs.append((f"n_threads=1 side by side ({i})", r))
    runs += [("n_threads=2 alone", c["two_threads_alone"])]
    for name, r in runs:
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['cores_busy']:.2f} |")
    b = row["blas_threads"]
    print(
        f"| small fits ({b['fits_per_process']} per process), BLAS pools | alone wall (s) "
        "| side by side wall (s) | slowdown side by side |"
    )
    print("|---|---|---|---|")
    for name in ("bounded", "unbounded"):
        r = b[name]
        pair = " and ".join(f"{p['wall_s']:.1f}" for p in r["two_side_by_side"])
        alone, slowdown = r["alone"]["wall_s"], r["slowdown_side_by_side"]
        print(f"| {name} | {alone:.1f} | {pair} | {slowdown:.2f} |")
    result = {"quick": bool(args.quick), **row}
    path = write_result(record, result, args.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
