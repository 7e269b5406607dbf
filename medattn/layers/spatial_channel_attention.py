import keras
from keras import layers, ops

from ._checks import choice, feature_map_shape, positive_int


@keras.saving.register_keras_serializable(package="medattn")
class SpatialChannelAttention(layers.Layer):
    """Concurrent spatial and channel squeeze-and-excitation (scSE), the LinkNet decoder's attention.

    Reference: Roy A G, Navab N, Wachinger C. "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully
    Convolutional Networks", MICCAI 2018, arXiv 1803.02579.

    cSE: ``U_c = U * sigmoid(W2 relu(W1 avgpool(U)))`` (hidden width ``C // reduction``).
    sSE: ``U_s = U * sigmoid(conv1x1(U))`` (one output channel).
    Combination ``combine``: ``"add"`` ``U_c + U_s`` (the MICCAI paper), ``"max"`` ``max(U_c, U_s)`` (best in the
    authors' TMI 2019 extension), ``"mul"`` ``U_c * U_s``, ``"avg"`` ``(U_c + U_s) / 2``.

    Args:
        reduction: channel reduction ratio (default 2, as in the paper).
        combine: ``add`` | ``max`` | ``mul`` | ``avg`` (default ``add``).
        min_hidden: smallest hidden width (default 1).

    Input: ``(batch, H, W, C)``. Output: same shape.

    Example:
        >>> y = SpatialChannelAttention(reduction=2, combine="max")(keras.Input((64, 64, 128)))
    """

    def __init__(self, reduction=2, combine="add", min_hidden=1, **kwargs):
        super().__init__(**kwargs)
        self.reduction = positive_int("reduction", reduction)
        self.combine = choice("combine", combine, ("add", "max", "mul", "avg"))
        self.min_hidden = positive_int("min_hidden", min_hidden)
        self.spatial_conv = layers.Conv2D(1, 1, name="sse_conv", dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = feature_map_shape(self.__class__.__name__, input_shape)
        channels = shape[-1]
        hidden = max(channels // self.reduction, self.min_hidden)
        self.fc1 = layers.Dense(hidden, activation="relu", name="cse_fc1", dtype=self.dtype_policy)
        self.fc2 = layers.Dense(channels, name="cse_fc2", dtype=self.dtype_policy)
        self.fc1.build((None, channels))
        self.fc2.build((None, hidden))
        self.spatial_conv.build(shape)
        super().build(input_shape)

    def gates(self, inputs):
        """``(channel_gate (batch,1,1,C), spatial_gate (batch,H,W,1))``, both in [0, 1]."""
        cg = ops.sigmoid(self.fc2(self.fc1(ops.mean(inputs, axis=(1, 2)))))[:, None, None, :]
        # the 1x1 convolution to one channel as a matrix product with its kernel: the same weights and values,
        # but oneDNN runs a one-channel convolution slowly (a LinkNet-InceptionResNetV2 training step at 256 px:
        # 2.25 s with the convolution, 2.14 s with the product, 2.13 s without scSE, alternating processes;
        # docs/speed.md). The convolution layer stays as the holder of the kernel, so saved models load as before
        kernel = ops.cast(self.spatial_conv.kernel[0, 0], inputs.dtype)
        sg = ops.sigmoid(ops.matmul(inputs, kernel) + ops.cast(self.spatial_conv.bias, inputs.dtype))
        return cg, sg

    def call(self, inputs):
        cg, sg = self.gates(inputs)
        cg, sg = ops.cast(cg, inputs.dtype), ops.cast(sg, inputs.dtype)
        if self.combine in ("add", "avg"):  # U*cg + U*sg as one product: two full-size operations instead of three
            gate = cg + sg if self.combine == "add" else (cg + sg) / 2
            return inputs * gate
        uc, us = inputs * cg, inputs * sg
        if self.combine == "max":
            return ops.maximum(uc, us)
        return uc * us

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "combine": self.combine,
                "min_hidden": self.min_hidden}
