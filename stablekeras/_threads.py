"""A fit's thread pools (TensorFlow's, NumPy's and SciPy's BLAS), sized to its share of the cores.

TensorFlow sizes its intra-op pool (threads inside one op, e.g. a matrix
product) and its inter-op pool (ops run side by side) to all the cores of the
machine, once, when its runtime starts in a process; afterwards
``tf.config.threading.set_*`` raise ``RuntimeError``. Two fits side by side (a
grid search with ``n_jobs=2``, a dask cluster of two workers on one machine)
then run twice as many busy threads as there are cores.

:func:`thread_budget` says how many threads a fit should use and
:func:`limit_threads` asks TensorFlow for them. The rule for ``n_threads=None``
is the process's thread budget as the schedulers publish it:

* inside a dask worker: the worker's ``nthreads`` (TensorFlow's pools are shared
  by every task thread of the process);
* otherwise ``OMP_NUM_THREADS`` when it is set: joblib's loky workers get
  ``cpu_count() // n_jobs`` (at least 1), dask's nanny and Ray set it for their
  workers, and a user may set it for a whole job;
* otherwise TensorFlow's own default (every core).

The same budget caps the BLAS and OpenMP pools of NumPy and SciPy during a fit
(:func:`blas_threads`, which lowers them and never raises them): the bound of
``lipschitz_bound_`` takes exact SVDs, and fits of few steps run eagerly. Those
pools start with every core too, and OpenBLAS' threads wait for work by
spinning: in two processes side by side they take the cores from each other.
Unlike TensorFlow's, these limits can change at any time, so they hold during
the fit only and are restored after. A fit enters :func:`fit_threads`, which does
both from the one budget.

Since TensorFlow's pools can only be sized before the runtime starts, the limit takes
effect in a fresh process (a joblib, dask or Ray worker, or a script whose first
TensorFlow work is the fit). When the runtime already runs with other sizes, the
fit goes on with them; an explicit ``n_threads`` then warns (``RuntimeWarning``,
saying how to fix it), the automatic one (None) does not, since in a process
that has long run TensorFlow (a notebook, the refit of a grid search) the
environment's budget was not asked for by anyone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import tensorflow as tf
import threadpoolctl

__all__ = ["thread_budget", "limit_threads", "blas_threads", "fit_threads"]


def _dask_worker_threads() -> int | None:
    """``nthreads`` of the dask worker running this code, or None outside one."""
    if "distributed" not in sys.modules:  # never import dask just to ask
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", worker)
    threads = getattr(state, "nthreads", None)
    return int(threads) if threads else None


def _environment_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def thread_budget(n_threads: int | None) -> int | None:
    """Threads for each of TensorFlow's pools: ``n_threads``, or the rule of the module docstring.

    Returns None when TensorFlow's defaults should stay.
    """
    if n_threads is not None:
        return int(n_threads)
    dask_threads = _dask_worker_threads()
    return dask_threads if dask_threads is not None else _environment_threads()


def limit_threads(n_threads: int | None) -> tuple[int, int]:
    """Size TensorFlow's intra- and inter-op pools to :func:`thread_budget` (``n_threads``).

    Returns the sizes in effect afterwards, as
    ``tf.config.threading.get_{intra,inter}_op_parallelism_threads()`` report
    them (0 means TensorFlow's default). Warns (``RuntimeWarning``) when an
    explicit ``n_threads`` cannot take effect because the runtime already
    started with other sizes.
    """
    budget = thread_budget(n_threads)
    threading = tf.config.threading
    pools = (
        (threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
        (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads),
    )
    if budget is not None:
        for get, set_ in pools:
            if get() == budget:
                continue
            try:
                set_(budget)
            except RuntimeError:
                if n_threads is None:
                    break
                warnings.warn(
                    f"n_threads: cannot size TensorFlow's thread pools to {budget} threads, "
                    "because TensorFlow's runtime has already started in this process with "
                    f"intra_op={threading.get_intra_op_parallelism_threads()} and "
                    f"inter_op={threading.get_inter_op_parallelism_threads()} (0: all cores). "
                    "The fit runs with those. Fit in a fresh process (joblib, dask and Ray "
                    "workers are), or call tf.config.threading.set_intra_op_parallelism_threads "
                    "and set_inter_op_parallelism_threads before any TensorFlow work.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                break
    return tuple(get() for get, _ in pools)


def blas_threads(n_threads: int | None):
    """A context that holds NumPy's and SciPy's BLAS and OpenMP pools to :func:`thread_budget`.

    It only lowers: a pool already at or below the budget (a dask worker's
    ``OMP_NUM_THREADS=1`` with ``nthreads=2``, say) keeps its size, since the
    process's other task threads may be using BLAS too. The lowered pools get
    their sizes back on exit. With no budget (``n_threads=None`` outside dask
    and without ``OMP_NUM_THREADS``) nothing changes.
    """
    budget = thread_budget(n_threads)
    if budget is None:
        return contextlib.nullcontext()
    controller = threadpoolctl.ThreadpoolController()
    above = sorted(
        {lib.num_threads for lib in controller.lib_controllers if lib.num_threads > budget}
    )
    return controller.select(num_threads=above).limit(limits=budget)


def fit_threads(n_threads: int | None):
    """The threads of one fit, from one budget: TensorFlow's pools sized now
    (:func:`limit_threads`, before the fit's first TensorFlow work in a fresh
    process), and the returned context caps NumPy's and SciPy's BLAS pools while
    it lasts (:func:`blas_threads`)."""
    limit_threads(n_threads)
    return blas_threads(n_threads)
