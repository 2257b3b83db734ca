"""Save a Keras model to a ``.keras`` file, load it without ``custom_objects``, compare."""

from __future__ import annotations

import keras
import numpy as np


def _outputs(y) -> list:
    return [np.asarray(v) for v in (y if isinstance(y, list | tuple) else [y])]


def reload_and_compare(model, x, layers, tmp_path) -> tuple:
    """``model`` saved under ``tmp_path`` and loaded again with no ``custom_objects``.

    Asserts that the loaded model gives the same outputs on ``x`` and has the same
    weights (values, in order), and that each of ``layers`` comes back as the same
    class with the same config. Returns the loaded model and its copies of ``layers``.
    """
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(_outputs(model(x)), _outputs(loaded(x)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(model.weights) == len(loaded.weights)
    for w, v in zip(model.weights, loaded.weights):  # paths differ for a Sequential model
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    clones = [loaded.get_layer(layer.name) for layer in layers]
    for layer, clone in zip(layers, clones):
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()
    return loaded, clones
