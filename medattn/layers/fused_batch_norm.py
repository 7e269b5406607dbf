import keras
from keras import layers


@keras.saving.register_keras_serializable(package="medattn")
class FusedBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by one fused kernel on TensorFlow.

    Keras 3 normalises with separate operations (mean, variance, scale and shift, and their gradients), each a pass
    over the activation. On the TensorFlow backend this layer calls ``FusedBatchNormV3`` instead (oneDNN's batch
    normalisation on CPU), for 4-D channels-last inputs without a mask, renorm or synchronised statistics; any
    other case, and every other backend, runs ``keras.layers.BatchNormalization`` unchanged. The result is the
    same function: normalised by the batch's biased variance in training (the fused kernel returns the unbiased
    one, which is converted back before the moving variance is updated), by the moving statistics otherwise, with
    the same moving-average update. Values agree with Keras's to float32 rounding. Training steps on a 2-core AMD
    EPYC (``benchmarks/results/batch_norm.md``): the BUSI cpu-profile segmenter 1.34x faster in float32 and 1.49x
    in mixed bfloat16, its classifier 1.43x, the InceptionResNetV2 LinkNet 1.05x.

    Arguments, weights and saved configuration: those of ``keras.layers.BatchNormalization``.
    """

    def _fusable(self, inputs, mask) -> bool:
        axis = self.axis[0] if isinstance(self.axis, (list, tuple)) and len(self.axis) == 1 else self.axis
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and axis in (-1, 3) and not self.renorm and not self.synchronized)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        if training and self.trainable:
            y, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=self.epsilon,
                data_format="NHWC", is_training=True)
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
            variance = unbiased * tf.maximum(n - 1.0, 0.0) / n
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + tf.cast(variance, self.moving_variance.dtype)
                                        * (1.0 - m))
        else:
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)[0]
        return tf.cast(y, self.compute_dtype)
