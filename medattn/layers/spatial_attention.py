import keras
from keras import layers, ops

from ._checks import feature_map_shape, positive_int


@keras.saving.register_keras_serializable(package="medattn")
class SpatialAttention(layers.Layer):
    """CBAM spatial gate: re-weights positions from channel-wise average and max maps.

    Reference: Woo S, Park J, Lee J-Y, Kweon I S. "CBAM: Convolutional Block Attention Module", ECCV 2018,
    arXiv 1807.06521.

    Computes ``M_s(F) = sigmoid(conv_kxk([mean_c(F); max_c(F)]))`` and returns ``F * M_s(F)`` (broadcast over
    channels). The convolution has one output channel, 'same' padding, and a bias (the paper's code has none;
    ``use_bias=False`` matches it).

    Args:
        kernel_size: odd k of the k x k convolution (default 7, as in the paper).
        use_bias: bias in the convolution (default True).
        return_gate: also return the ``(batch, H, W, 1)`` gate (default False).

    Input: ``(batch, H, W, C)``, any H and W (odd sizes fine). Output: same shape.

    Example:
        >>> y = SpatialAttention(kernel_size=7)(keras.Input((7, 9, 32)))
    """

    def __init__(self, kernel_size=7, use_bias=True, return_gate=False, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the gate stays centred, got {kernel_size!r}")
        self.use_bias = bool(use_bias)
        self.return_gate = bool(return_gate)
        self.conv = layers.Conv2D(1, self.kernel_size, padding="same", use_bias=self.use_bias, name="gate_conv",
                                  dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = feature_map_shape(self.__class__.__name__, input_shape)
        self.conv.build((shape[0], shape[1], shape[2], 2))
        super().build(input_shape)

    def gate(self, inputs):
        desc = ops.concatenate([ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)],
                               axis=-1)
        return ops.sigmoid(self.conv(desc))

    def call(self, inputs):
        g = self.gate(inputs)
        out = inputs * ops.cast(g, inputs.dtype)
        return (out, g) if self.return_gate else out

    def compute_output_shape(self, input_shape):
        gate_shape = tuple(input_shape[:3]) + (1,)
        return (tuple(input_shape), gate_shape) if self.return_gate else tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "use_bias": self.use_bias,
                "return_gate": self.return_gate}
