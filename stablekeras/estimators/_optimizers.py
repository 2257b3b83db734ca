"""The estimators' optimizers: Keras' Adam and AdamW without a per-trace memory leak.

Keras 3 (TensorFlow backend) sums the gradients over the replicas before every
update, also when there is only one replica. In a traced train step
TensorFlow's ``ReplicaContext.all_reduce`` wraps that sum in a
``tf.custom_gradient``, and in graph mode ``tf.custom_gradient`` registers its
gradient function in TensorFlow's global gradient registry, where it stays for
the life of the process. The function's closure holds tensors of the traced
graph, so every trace of a train step (about two per fit) pins its whole graph:
about 30 MB per fit of the default network. A process that fits many
estimators, a grid search in one process, or a joblib worker that ``loky``
restarts when its memory has grown by 300 MB, pays for it (TensorFlow issues
97697 and 80895).

With one replica in sync the sum over replicas is the gradient itself, so
:class:`Adam` and :class:`AdamW` skip it there; with several replicas
(``MirroredStrategy`` over devices, several workers) they sum as Keras does.
The update itself is Keras' own.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["Adam", "AdamW"]


class _LocalGradientsMixin:
    def _all_reduce_sum_gradients(self, grads_and_vars):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync == 1:
            return list(grads_and_vars)  # the sum over one replica
        return super()._all_reduce_sum_gradients(grads_and_vars)


@keras.saving.register_keras_serializable(package="stablekeras")
class Adam(_LocalGradientsMixin, keras.optimizers.Adam):
    """Keras' Adam, without the one-replica gradient sum (see the module docstring)."""


@keras.saving.register_keras_serializable(package="stablekeras")
class AdamW(_LocalGradientsMixin, keras.optimizers.AdamW):
    """Keras' AdamW, without the one-replica gradient sum (see the module docstring)."""
