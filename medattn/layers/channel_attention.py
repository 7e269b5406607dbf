import keras
from keras import layers, ops

from ._checks import feature_map_shape, positive_int


@keras.saving.register_keras_serializable(package="medattn")
class ChannelAttention(layers.Layer):
    """CBAM channel gate: re-weights channels with a shared MLP over average- and max-pooled descriptors.

    Reference: Woo S, Park J, Lee J-Y, Kweon I S. "CBAM: Convolutional Block Attention Module", ECCV 2018,
    arXiv 1807.06521.

    Computes ``M_c(F) = sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))`` and returns ``F * M_c(F)`` (broadcast over
    height and width), where ``MLP = Dense(C) o ReLU o Dense(max(C // reduction, min_hidden))`` is shared by both
    descriptors.

    Args:
        reduction: channel reduction ratio r of the MLP's hidden layer (default 16, as in the paper).
        min_hidden: smallest hidden width, so narrow maps keep a usable MLP (default 1; the paper has none).
        use_bias: biases in the MLP (default True).
        return_gate: also return the ``(batch, 1, 1, C)`` gate (default False).

    Input: ``(batch, H, W, C)``. Output: same shape (and the gate if ``return_gate``).

    Example:
        >>> x = keras.Input((32, 32, 64))
        >>> y = ChannelAttention(reduction=8)(x)
    """

    def __init__(self, reduction=16, min_hidden=1, use_bias=True, return_gate=False, **kwargs):
        super().__init__(**kwargs)
        self.reduction = positive_int("reduction", reduction)
        self.min_hidden = positive_int("min_hidden", min_hidden)
        self.use_bias = bool(use_bias)
        self.return_gate = bool(return_gate)

    def build(self, input_shape):
        shape = feature_map_shape(self.__class__.__name__, input_shape)
        channels = shape[-1]
        hidden = max(channels // self.reduction, self.min_hidden)
        self.mlp_hidden = layers.Dense(hidden, activation="relu", use_bias=self.use_bias, name="mlp_hidden",
                                       dtype=self.dtype_policy)
        self.mlp_out = layers.Dense(channels, use_bias=self.use_bias, name="mlp_out", dtype=self.dtype_policy)
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))
        super().build(input_shape)

    def gate(self, inputs):
        avg = ops.mean(inputs, axis=(1, 2))
        mx = ops.max(inputs, axis=(1, 2))
        logits = self.mlp_out(self.mlp_hidden(avg)) + self.mlp_out(self.mlp_hidden(mx))
        return ops.sigmoid(logits)[:, None, None, :]

    def call(self, inputs):
        g = self.gate(inputs)
        out = inputs * ops.cast(g, inputs.dtype)
        return (out, g) if self.return_gate else out

    def compute_output_shape(self, input_shape):
        gate_shape = (input_shape[0], 1, 1, input_shape[-1])
        return (tuple(input_shape), gate_shape) if self.return_gate else tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "min_hidden": self.min_hidden,
                "use_bias": self.use_bias, "return_gate": self.return_gate}
