import keras
from keras import layers

from ._checks import choice, feature_map_shape, positive_int
from .channel_attention import ChannelAttention
from .spatial_attention import SpatialAttention


@keras.saving.register_keras_serializable(package="medattn")
class CBAM(layers.Layer):
    """Convolutional Block Attention Module: channel gate then spatial gate (or the other orders).

    Reference: Woo S, Park J, Lee J-Y, Kweon I S. "CBAM: Convolutional Block Attention Module", ECCV 2018,
    arXiv 1807.06521.

    ``order="channel_first"`` (the paper's best): ``F' = M_c(F) * F``, ``F'' = M_s(F') * F'``.
    ``order="spatial_first"``: the reverse. ``order="parallel"``: ``F'' = F * M_c(F) * M_s(F)``, both gates
    from the same input. ``residual=True`` returns ``F + F''`` (the paper inserts CBAM inside a residual branch;
    as a stand-alone layer this keeps the identity path).

    Args:
        reduction: channel MLP reduction ratio (default 16).
        kernel_size: spatial gate kernel (default 7).
        order: ``channel_first`` | ``spatial_first`` | ``parallel``.
        residual: add the input to the output (default False).
        min_hidden: smallest hidden width of the channel MLP (default 1).

    Input: ``(batch, H, W, C)``. Output: same shape.

    Example:
        >>> x = keras.Input((56, 56, 256))
        >>> y = CBAM(reduction=16, kernel_size=7)(x)
    """

    def __init__(self, reduction=16, kernel_size=7, order="channel_first", residual=False, min_hidden=1, **kwargs):
        super().__init__(**kwargs)
        self.reduction = positive_int("reduction", reduction)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.order = choice("order", order, ("channel_first", "spatial_first", "parallel"))
        self.residual = bool(residual)
        self.min_hidden = positive_int("min_hidden", min_hidden)
        self.channel = ChannelAttention(self.reduction, min_hidden=self.min_hidden, name="channel",
                                        dtype=self.dtype_policy)
        self.spatial = SpatialAttention(self.kernel_size, name="spatial", dtype=self.dtype_policy)

    def build(self, input_shape):
        feature_map_shape(self.__class__.__name__, input_shape)
        self.channel.build(input_shape)
        self.spatial.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        if self.order == "channel_first":
            out = self.spatial(self.channel(inputs))
        elif self.order == "spatial_first":
            out = self.channel(self.spatial(inputs))
        else:
            out = inputs * keras.ops.cast(self.channel.gate(inputs), inputs.dtype) * keras.ops.cast(
                self.spatial.gate(inputs), inputs.dtype)
        return inputs + out if self.residual else out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "kernel_size": self.kernel_size,
                "order": self.order, "residual": self.residual, "min_hidden": self.min_hidden}
