"""Where a fit runs: a distribution strategy, several workers, and resumable backups."""

from __future__ import annotations

import contextlib
import re

import keras
import tensorflow as tf
from sklearn.base import ClassifierMixin

from stablekeras import _multiworker
from stablekeras._backup import AtomicBackupAndRestore
from stablekeras.estimators._augment import shifted_batches


def _array_batches(x, y, sample_weight):
    """Unbatched ``(x, y)`` or ``(x, y, sample_weight)`` rows as a tf.data.Dataset.

    tf.data's autotuning is off for these pipelines. Rows in memory, shuffled and
    batched, leave it nothing to tune, and with it on, a process that has one core
    to itself (each fit of a grid search with ``n_jobs=2`` on two cores) sat idle
    at the end of many epochs for about as long as the epoch (benchmarks/RESULTS.md,
    "Grid search"). Pipelines that users pass to ``fit`` keep their own options.
    """
    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices(arrays).with_options(options)


class DistributionMixin:
    """Strategy scopes, the multi-worker loop, the shared seed and the fit's backup."""

    def _scope(self):
        """The distribution strategy's scope (a null context without one)."""
        strategy = self._strategy()
        return contextlib.nullcontext() if strategy is None else strategy.scope()

    def _fit_scope(self, warm):
        """Where this fit builds and trains; a warm start trains in the network's own strategy."""
        if not warm:
            return self._scope()
        strategy = self.model_.distribute_strategy
        if self.distribute is not None and strategy is tf.distribute.get_strategy():
            raise ValueError(
                f"warm_start=True with distribute={self.distribute!r}: the fitted network was "
                "not built in a distribution strategy (an unpickled estimator's network never "
                "is), so it cannot continue in one. Set warm_start=False to build a new network"
            )
        return strategy.scope()

    def _strategy(self):
        if self.distribute is None:
            return None
        if self.distribute == "multi_worker":
            return _multiworker.multi_worker_strategy()
        if isinstance(self.distribute, str):
            return tf.distribute.MirroredStrategy()
        return self.distribute

    def _multi_worker_strategy(self):
        """The strategy when the fit is multi-worker (several workers), else None."""
        if self.distribute == "multi_worker" or isinstance(
            self.distribute, tf.distribute.MultiWorkerMirroredStrategy
        ):
            strategy = self._strategy()
            return strategy if _multiworker.is_multi_worker(strategy) else None
        return None

    def _agree_seed(self, seed):
        """Multi-worker with random_state=None: one seed, drawn on the chief, on every worker.

        The workers must shuffle (and split off validation data) alike.
        """
        strategy = self._multi_worker_strategy()
        if strategy is not None and seed is None:
            seed = _multiworker.shared_seed(strategy)
            keras.utils.set_random_seed(seed)
        return seed

    def _backup_fingerprint(self, n_features, n_samples):
        """What a backup must match to be resumed: hyperparameters and the data's shape."""
        skip = {"verbose", "checkpoint_dir", "n_threads", "distribute", "callbacks"}
        # repr without memory addresses ("RandomState(MT19937) at 0x7f..."): stable across runs
        params = {
            k: re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))
            for k, v in self.get_params(deep=False).items()
            if k not in skip
        }
        data = {"n_features": int(n_features), "n_samples": int(n_samples)}
        if hasattr(self, "classes_"):
            data["classes"] = [str(c) for c in self.classes_]
        kind = "classifier" if isinstance(self, ClassifierMixin) else "regressor"
        return {"estimator": kind, **params, **data}

    def _backup_callback(self, n_features, n_samples):
        """The fit's :class:`AtomicBackupAndRestore` (None without ``checkpoint_dir``)."""
        if self.checkpoint_dir is None:
            return None
        return AtomicBackupAndRestore(
            self.checkpoint_dir,
            fingerprint=self._backup_fingerprint(n_features, n_samples),
            writer=_multiworker.is_chief(self.model_.distribute_strategy),
        )

    def _keras_fit(
        self, x, y=None, *, shuffle_seed=None, backup=None, steps_per_epoch=None, **fit_kwargs
    ):
        """``model_.fit`` on tf.data batches, or the multi-worker loop under that strategy.

        Arrays become a pipeline that shuffles the rows every epoch (seeded by
        ``shuffle_seed``) and batches them, with no prefetching thread: the rows
        are in memory, and a thread that wakes for every batch competes for the
        core with the fit next to it in a grid search. With ``random_shift`` the
        batches are shifted images (:mod:`stablekeras.estimators._augment`).
        """
        strategy = self._multi_worker_strategy()
        shift = int(self.random_shift)
        if isinstance(x, tf.data.Dataset):
            data, validation = x, None
        else:
            data = _array_batches(x, y, fit_kwargs.get("sample_weight"))
            data = data.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
            data = data.batch(fit_kwargs["batch_size"])
            validation = fit_kwargs.get("validation_data")
            if validation is not None:  # (x, y) or (x, y, sample_weight)
                x_val, y_val, *w_val = validation
                validation = _array_batches(x_val, y_val, w_val[0] if w_val else None)
                validation = validation.batch(fit_kwargs["batch_size"])
        if shift:
            data = shifted_batches(data, self.image_shape, shift, shuffle_seed).prefetch(2)
        if strategy is None:
            return self.model_.fit(
                data,
                epochs=fit_kwargs["epochs"],
                shuffle=False,  # the pipeline shuffles
                validation_data=validation,
                callbacks=fit_kwargs.get("callbacks"),
                verbose=fit_kwargs.get("verbose", 0),
            )
        return _multiworker.fit_multi_worker(
            self.model_,
            strategy,
            data,
            loss_fn=self.model_.loss,
            epochs=fit_kwargs["epochs"],
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            callbacks=fit_kwargs.get("callbacks", ()),
            backup=backup,
            verbose=fit_kwargs.get("verbose", 0),
        )
