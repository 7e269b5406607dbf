import keras
from keras import layers, ops

from ._checks import choice, feature_map_shape


@keras.saving.register_keras_serializable(package="medattn")
class GlobalPoolFusion(layers.Layer):
    """Global pooling of each of several feature maps, concatenated (the MIAS deep-fusion Model1).

    Reference: "Mammographic image classification with deep fusion learning", Scientific Reports 10 (2020),
    doi 10.1038/s41598-020-71431-x (Model1).

    ``z = concatenate(pool(F_1), ..., pool(F_n))`` with ``pool`` = global average (``mode="avg"``, the paper),
    global max (``"max"``) or both (``"avgmax"``). With VGG block1..block5 pool outputs that is
    64 + 128 + 256 + 512 + 512 = 1,472 features.

    Args:
        mode: ``avg`` | ``max`` | ``avgmax`` (default ``avg``).

    Inputs: a list of maps ``(batch, H_i, W_i, C_i)``. Output: ``(batch, sum(C_i))`` (twice that for avgmax).

    Example:
        >>> z = GlobalPoolFusion()([keras.Input((36, 36, 64)), keras.Input((2, 2, 512))])   # (None, 576)
    """

    def __init__(self, mode="avg", **kwargs):
        super().__init__(**kwargs)
        self.mode = choice("mode", mode, ("avg", "max", "avgmax"))

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(input_shape[0],
                                                                                          (list, tuple)):
            raise ValueError(f"GlobalPoolFusion expects a list of feature maps, got {input_shape}")
        for s in input_shape:
            feature_map_shape("GlobalPoolFusion", s)
        super().build(input_shape)

    def call(self, inputs):
        outs = []
        for x in inputs:
            if self.mode in ("avg", "avgmax"):
                outs.append(ops.mean(x, axis=(1, 2)))
            if self.mode in ("max", "avgmax"):
                outs.append(ops.max(x, axis=(1, 2)))
        return ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        width = sum(s[-1] for s in input_shape) * (2 if self.mode == "avgmax" else 1)
        return (input_shape[0][0], width)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
