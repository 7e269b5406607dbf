"""FusedBatchNormalization: the same function as keras.layers.BatchNormalization (outputs, gradients and moving
statistics, in training and at inference), one fused kernel on TensorFlow, Keras's own path elsewhere."""

import keras
import numpy as np
import pytest

from medattn.layers import FusedBatchNormalization


def _pair(x, **kwargs):
    ours, ref = FusedBatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(x.shape)
    ref.build(x.shape)
    if ref.scale:  # a gamma that is not all ones, so a wrong scale would show
        gamma = np.random.default_rng(1).normal(size=x.shape[-1]).astype("float32")
        ours.gamma.assign(gamma)
        ref.gamma.assign(gamma)
    return ours, ref


@pytest.mark.parametrize("kwargs", [{}, {"scale": False}, {"center": False, "epsilon": 1e-5, "momentum": 0.9}])
def test_outputs_gradients_and_moving_statistics_match_keras(kwargs):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 9, 7, 5)).astype("float32"))
    ours, ref = _pair(x, **kwargs)
    for training in (True, True, False):  # two training steps move the statistics, then inference reads them
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ours, y_ref = ours(x, training=training), ref(x, training=training)
            loss_ours, loss_ref = (tf.reduce_sum(y * tf.sin(x)) for y in (y_ours, y_ref))
        np.testing.assert_allclose(y_ours, y_ref, atol=5e-6)
        np.testing.assert_allclose(tape.gradient(loss_ours, x), tape.gradient(loss_ref, x), atol=5e-6)
        for g_ours, g_ref in zip(tape.gradient(loss_ours, ours.trainable_weights),
                                 tape.gradient(loss_ref, ref.trainable_weights)):
            np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-4)
        # the biased batch variance feeds the moving variance, as in Keras (unbiased would be off by 1/(n-1))
        np.testing.assert_allclose(ours.moving_mean, ref.moving_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours.moving_variance, ref.moving_variance, rtol=1e-6)
    assert float(np.max(np.abs(ours.moving_mean))) > 0.01  # the statistics did move


def test_fused_kernel_on_4d_channels_last_and_keras_path_otherwise():
    import tensorflow as tf

    layer = FusedBatchNormalization()
    layer.build((2, 3, 3, 4))
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(tf.zeros((2, 3, 3, 4))).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
    dense = FusedBatchNormalization()  # 2-D input: Keras's path, same values as Keras
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    np.testing.assert_allclose(dense(x, training=True), keras.layers.BatchNormalization()(x, training=True),
                               atol=1e-6)
    first_axis = FusedBatchNormalization(axis=1)
    assert not first_axis._fusable(tf.zeros((2, 4, 3, 3)), None)


def test_frozen_layer_uses_moving_statistics_and_trains_under_bfloat16():
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(2).normal(1.0, 2.0, size=(3, 5, 5, 6)).astype("float32"))
    ours, ref = _pair(x)
    ours(x, training=True)
    ref(x, training=True)
    ours.trainable = ref.trainable = False
    np.testing.assert_allclose(ours(x, training=True), ref(x, training=True), atol=5e-6)
    with _bf16():
        half = FusedBatchNormalization()
        y = half(tf.cast(x, "bfloat16"), training=True)
    assert y.dtype == tf.bfloat16 and abs(float(tf.reduce_mean(tf.cast(y, "float32")))) < 0.05


class _bf16:
    def __enter__(self):
        self.before = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16")

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.before)
