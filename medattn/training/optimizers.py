"""Keras's Adam, AdamW and SGD with each variable's update done by one TensorFlow kernel.

Keras 3 writes an optimizer's update as separate operations per variable (Adam: about twenty, among them the step's
powers of the betas, recomputed for every variable). On the TensorFlow backend these classes call the kernels that
``tf.compat.v1`` optimizers use, ``ResourceApplyAdam`` and ``ResourceApplyKerasMomentum``, which compute the same
formulas in one pass over the variable and its slots; Adam's scalar arguments (the betas' powers, the learning
rate) are made once per step, not per variable. The optimizer's variables, its configuration, weight decay,
clipping, loss scaling and averaging (all done outside ``update_step``) are Keras's, so checkpoints and saved models
are interchangeable with those of the Keras classes. Values agree with Keras's to float32 rounding
(``tests/training/test_optimizers.py``). A graph with fewer operations traces sooner: a smoke run's first training
step takes about a quarter less time to build. Other backends, AMSGrad and sparse gradients use Keras's own update.
"""

from __future__ import annotations

import keras


def _fusable(gradient) -> bool:
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not isinstance(gradient, tf.IndexedSlices)


def _handle(variable):
    """The resource handle of a model or optimizer variable (under a strategy's update: this device's copy)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


class _KerasName:
    """The Keras class's default name (``adam``, not ``fused_adam``): the optimizer variables' paths are Keras's."""

    keras_name = ""

    def __init__(self, *args, name=None, **kwargs):
        super().__init__(*args, name=name or self.keras_name, **kwargs)


class _FusedAdamUpdate(_KerasName):
    _step_scalars = None  # per dtype, while one step's updates run: the same for every variable of that step

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self._step_scalars = {}
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_scalars = None

    def _adam_scalars(self, dtype, learning_rate) -> dict:
        """The kernel's scalar arguments for this step in ``dtype``, made once per step and dtype."""
        import tensorflow as tf

        cache = self._step_scalars if self._step_scalars is not None else {}
        if dtype not in cache:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            cache[dtype] = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                                epsilon=tf.cast(self.epsilon, dtype))
        return cache[dtype]

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not _fusable(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            grad=tf.cast(gradient, variable.dtype), **self._adam_scalars(variable.dtype, learning_rate))


@keras.saving.register_keras_serializable(package="medattn")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam``, one ``ResourceApplyAdam`` per variable on TensorFlow (module docstring)."""

    keras_name = "adam"


@keras.saving.register_keras_serializable(package="medattn")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW``: Keras's decoupled weight decay, then ``ResourceApplyAdam`` (module docstring)."""

    keras_name = "adam_w"


@keras.saving.register_keras_serializable(package="medattn")
class FusedSGD(_KerasName, keras.optimizers.SGD):
    """``keras.optimizers.SGD``, one ``ResourceApplyKerasMomentum`` (or ``ResourceApplyGradientDescent`` without
    momentum) per variable on TensorFlow (module docstring)."""

    keras_name = "sgd"

    def update_step(self, gradient, variable, learning_rate):
        if not _fusable(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        lr, gradient = tf.cast(learning_rate, dtype), tf.cast(gradient, dtype)
        if self.momentum == 0:
            tf.raw_ops.ResourceApplyGradientDescent(var=_handle(variable), alpha=lr, delta=gradient)
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(self.momentums[self._get_variable_index(variable)]), lr=lr,
            grad=gradient, momentum=tf.cast(self.momentum, dtype), use_nesterov=self.nesterov)
