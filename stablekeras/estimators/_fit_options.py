"""Fit-time options: the user's callbacks and the user's own network (``model=``)."""

from __future__ import annotations

import copy

import keras
import numpy as np


def _instantiate_callback(entry, name):
    """A fresh callback for one fit: a deep copy of an instance, or the product of a factory."""
    if isinstance(entry, keras.callbacks.Callback):
        try:
            return copy.deepcopy(entry)
        except Exception as err:  # locks, open files, ...: the user needs a factory
            raise TypeError(
                f"`{name}` ({type(entry).__name__}) cannot be deep-copied for this fit ({err}); "
                f"pass a factory that makes it instead, e.g. "
                f"functools.partial({type(entry).__name__}, ...)"
            ) from err
    if callable(entry) and not isinstance(entry, keras.layers.Layer):
        made = entry()
        if isinstance(made, keras.callbacks.Callback):
            return made
        raise TypeError(
            f"Received an invalid value for `{name}`: a factory must return a "
            f"keras.callbacks.Callback. Calling it returned: {made!r}"
        )
    raise TypeError(
        f"Received an invalid value for `{name}`, expected a keras.callbacks.Callback or a "
        f"zero-argument callable that makes one. Received: {name}={entry!r}"
    )


class FitOptionsMixin:
    """Callbacks made fresh for every fit, and the checks of a user-built network."""

    def _fit_callbacks(self, fit_callbacks=None):
        """This fit's callbacks: the ``callbacks`` parameter, then those given to ``fit``.

        Instances are deep-copied and factories called for every fit, so no two
        fits (folds of a grid search, clones, refits) share a callback's state;
        the user's own objects are never handed to Keras.
        """
        made = []
        for where, entries in (("callbacks", self.callbacks), ("fit(callbacks)", fit_callbacks)):
            if entries is not None and not isinstance(entries, list | tuple):
                raise TypeError(
                    f"Received an invalid value for `{where}`, expected a list of callbacks. "
                    f"Received: {entries!r}"
                )
            made += [_instantiate_callback(e, f"{where}[{i}]") for i, e in enumerate(entries or ())]
        return made

    @staticmethod
    def _check_callback_monitors(callbacks, validation):
        """A callback that monitors a validation metric needs this fit's validation split."""
        if validation:
            return
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("val_"):
                raise ValueError(
                    f"The callback {type(cb).__name__} monitors {monitor!r}, but this fit has no "
                    "validation data: set early_stopping=True, which holds out "
                    "validation_fraction of each fit's training data (make n_iter_no_change "
                    "at least epochs to keep only your own stopping rule)"
                )

    def _build_user_model(self, n_features, n_outputs):
        """Call ``model`` and check what it built before any training."""
        what = f"model(({n_features},), {n_outputs}, **model_params)"
        net = self.model((n_features,), n_outputs, **(self.model_params or {}))
        if not isinstance(net, keras.Model):
            raise TypeError(
                f"`model` must build a keras.Model; {what} returned {type(net).__name__}: "
                f"{net!r:.200}"
            )
        try:
            inputs = net.inputs
        except AttributeError:  # a subclassed model that has not been called yet
            inputs = None
        if inputs is not None and (len(inputs) != 1 or tuple(inputs[0].shape[1:]) != (n_features,)):
            shapes = [tuple(t.shape) for t in inputs]
            raise ValueError(
                f"{what} built a model with inputs of shape {shapes}; expected one input of "
                f"shape (None, {n_features}): a row of X has n_features={n_features}"
            )
        probe = np.zeros((2, n_features), np.float32)
        try:
            out = net(probe, training=False)
        except Exception as err:
            raise ValueError(
                f"{what} built a model that fails on a batch of shape {probe.shape}: {err}"
            ) from err
        if not hasattr(out, "shape") or tuple(out.shape) != (2, n_outputs):
            shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ValueError(
                f"{what} built a model whose output for a batch of 2 rows is {shape}; "
                f"expected shape (2, {n_outputs}): one {self._output_name()} per column"
            )
        return net

    def _output_name(self):
        return "output"
